"""hspace.outputs: folders and overwrite rules, grids, strips, GIFs, JSON, run records."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import hspace
from hspace.outputs import (
    make_grid,
    prepare_output_dir,
    run_record,
    safe_path,
    save_gif,
    save_strip,
    to_jsonable,
    write_json,
)


def _solid(value: float, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.full((3, h, w), value)


# ---------------------------------------------------------------- folders and paths


def test_prepare_output_dir(tmp_path: Path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir()
    assert prepare_output_dir(out) == out  # empty folder: fine
    (out / "old.png").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"--overwrite.*another folder"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "old.png").read_bytes() == b"keep me"  # never deletes
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare_output_dir(tmp_path / "file", overwrite=True)


def test_safe_path(tmp_path: Path):
    target = safe_path(tmp_path / "new" / "x.png")
    assert target.parent.is_dir() and not target.exists()
    target.write_bytes(b"1")
    with pytest.raises(FileExistsError, match="--overwrite"):
        safe_path(target)
    assert safe_path(target, overwrite=True) == target
    # inputs are protected even with overwrite, also through another spelling of the path
    inp = tmp_path / "input.png"
    inp.write_bytes(b"input")
    other_spelling = tmp_path / "new" / ".." / "input.png"
    with pytest.raises(FileExistsError, match="input"):
        safe_path(other_spelling, overwrite=True, protected={inp})
    link = tmp_path / "link.png"
    link.symlink_to(inp)
    with pytest.raises(FileExistsError, match="input"):
        safe_path(link, overwrite=True, protected={inp})
    assert inp.read_bytes() == b"input"
    with pytest.raises(FileExistsError, match="folder"):
        safe_path(tmp_path / "new", overwrite=True)


# ---------------------------------------------------------------- grids, strips, GIFs


def test_make_grid_size_and_placement():
    rows = [[_solid(-1.0), _solid(1.0), _solid(0.0)], [_solid(1.0), _solid(-1.0)]]  # ragged second row
    grid = make_grid(rows, pad=2)
    assert grid.size == (2 + 3 * (8 + 2), 2 + 2 * (8 + 2))
    arr = np.asarray(grid)
    assert tuple(arr[2, 2]) == (0, 0, 0)  # first cell, black
    assert tuple(arr[2, 12]) == (255, 255, 255)  # second cell, white
    assert tuple(arr[2, 22]) == (128, 128, 128)  # third cell, grey
    assert tuple(arr[12, 12]) == (0, 0, 0)  # row 2 col 2
    assert tuple(arr[12, 22]) == (255, 255, 255)  # missing cell = background
    assert tuple(arr[0, 0]) == (255, 255, 255)  # padding


def test_make_grid_labels():
    rows = [[_solid(-1.0, 32, 32)] * 3, [_solid(-1.0, 32, 32)] * 3]
    plain = make_grid(rows, pad=2)
    labelled = make_grid(rows, pad=2, labels=["input", "s=-1", "a very long label that will not fit"],
                         row_labels=["img0", "img1"])
    assert labelled.width > plain.width and labelled.height > plain.height
    arr = np.asarray(labelled)
    top = labelled.height - plain.height
    left = labelled.width - plain.width
    assert (arr[:top, left:] < 128).any(), "column labels were not drawn"
    assert (arr[top:, :left] < 128).any(), "row labels were not drawn"
    with pytest.raises(ValueError, match="one entry per column"):
        make_grid(rows, labels=["only one"])
    with pytest.raises(ValueError, match="one entry per row"):
        make_grid(rows, row_labels=["a", "b", "c"])


def test_make_grid_errors():
    with pytest.raises(ValueError, match="same size"):
        make_grid([[_solid(0.0, 8, 8), _solid(0.0, 16, 16)]])
    with pytest.raises(ValueError, match=r"cell \[0\]\[1\].*\[3, H, W\]"):
        make_grid([[_solid(0.0), torch.zeros(4, 8, 8)]])
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])
    # PIL images are accepted as cells
    assert make_grid([[Image.new("RGB", (8, 8), "red"), _solid(0.0)]], pad=0).size == (16, 8)


def test_save_strip(tmp_path: Path):
    frames = [_solid(v) for v in (-1.0, 0.0, 1.0)]
    path = save_strip(frames, tmp_path / "strip.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (24, 8)
        assert im.getpixel((0, 0)) == (0, 0, 0) and im.getpixel((23, 7)) == (255, 255, 255)


def test_save_gif_frames_bounce_and_loop(tmp_path: Path):
    frames = [_solid(v) for v in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    path = save_gif(frames, tmp_path / "anim.gif", duration_ms=80)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size == (8, 8)
        assert im.n_frames == 8  # 5 forwards + 3 back (ends not repeated)
        assert im.info.get("loop") == 0
        assert im.info.get("duration") == 80
        greys = [f.convert("RGB").getpixel((4, 4))[0] for f in ImageSequence.Iterator(im)]
    assert greys[0] == 0 and greys[4] == 255 and greys[5] == greys[3] and greys[-1] == greys[1]

    path2 = save_gif(frames, tmp_path / "once.gif", bounce=False)
    with Image.open(path2) as im:
        assert im.n_frames == 5
    with pytest.raises(ValueError, match="at least one"):
        save_gif([], tmp_path / "none.gif")


# ---------------------------------------------------------------- JSON and run records


@dataclasses.dataclass
class _Cfg:
    model: str = "tiny-random"
    out: Path = Path("/tmp/out")
    scales: tuple[float, ...] = (-1.0, 1.0)
    dtype: torch.dtype = torch.float32


def test_write_json_types_sorted_pretty(tmp_path: Path):
    obj = {
        "z": 1,
        "a": {"path": Path("/x/y.png"), "cfg": _Cfg()},
        "tensor": torch.tensor([[1.0, 2.0]]),
        "scalar": torch.tensor(3.5),
        "np": np.arange(3),
        "np_scalar": np.float32(0.25),
        "nan": float("nan"),
        "inf": -math.inf,
        5: "int key",
        "set": {3, 1, 2},
    }
    path = write_json(obj, tmp_path / "m.json")
    text = path.read_text()
    assert text.endswith("\n") and "\n  " in text  # pretty, indented
    back = json.loads(text)  # strict JSON: no bare NaN
    assert list(back) == sorted(back)
    assert back["a"]["path"] == "/x/y.png"
    assert back["a"]["cfg"] == {"model": "tiny-random", "out": "/tmp/out", "scales": [-1.0, 1.0], "dtype": "torch.float32"}
    assert back["tensor"] == [[1.0, 2.0]] and back["scalar"] == 3.5
    assert back["np"] == [0, 1, 2] and back["np_scalar"] == 0.25
    assert back["nan"] == "NaN" and back["inf"] == "-Infinity"
    assert back["5"] == "int key" and back["set"] == [1, 2, 3]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_run_record(tmp_path: Path):
    rec = run_record(_Cfg(), command="edit", inputs=[Path("a.png")])
    assert rec["hspace_version"] == hspace.__version__
    for key in ("python", "torch", "diffusers", "transformers"):
        assert rec["versions"][key], key
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["platform"]["system"] and rec["timestamp"].endswith("+00:00")
    assert rec["config_type"] == "_Cfg" and rec["config"]["model"] == "tiny-random"
    assert rec["command"] == "edit" and rec["inputs"] == ["a.png"]
    assert json.loads(write_json(rec, tmp_path / "run.json").read_text())["config"]["out"] == "/tmp/out"
    assert run_record({"k": 1})["config"] == {"k": 1}
    with pytest.raises(ValueError, match="collide"):
        run_record({}, config={"x": 1})


def test_to_jsonable_plain_values_unchanged():
    assert to_jsonable({"a": [1, 2.5, None, True, "s"]}) == {"a": [1, 2.5, None, True, "s"]}
