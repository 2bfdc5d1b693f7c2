"""``hspace toyworld``: the built-in offline world of procedural cartoon faces with known factors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import OVERWRITE_HELP, fail, handle_errors, notice, say

HELP = """The built-in offline world: procedural 64x64 cartoon faces whose attributes are known
(smile, eyes open, glasses, hair colour and style, skin tone, face shape, hat, beard, background,
pose). Image i of seed S is always the same, so every claim about an edit can be measured.
"""

SAMPLE_HELP = """Write N toy faces as PNGs plus their ground truth.

\b
Writes into OUT:
  000000.png, 000001.png, ...  image i is item (seed, start + i)
  labels.jsonl                 one JSON object per image: file, seed, index, every factor,
                               a caption with varied wording and a full description
  factors.json                 each factor's type and range or values, and the label vector layout

\b
Examples:
  hspace toyworld sample --n 100 --out faces/
  hspace toyworld sample --n 1000 --out faces/ --seed 3 --size 128
"""


toyworld_app = typer.Typer(
    name="toyworld",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.add_typer(toyworld_app, name="toyworld", help=HELP,
                  short_help="Offline toy world: cartoon faces with known attributes.")


@toyworld_app.command("sample", help=SAMPLE_HELP, short_help="Write N toy faces as PNGs + labels.jsonl + factors.json.")
@handle_errors
def sample_command(
    n: Annotated[int, typer.Option("--n", "-n", help="Number of images.")] = 100,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (created; must be empty unless --overwrite).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Dataset seed (>= 0): image i is a pure function of (seed, i).")] = 0,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    supersample: Annotated[int, typer.Option("--supersample", help="Drawing resolution factor for anti-aliasing.")] = 4,
    start: Annotated[int, typer.Option("--start", help="First item index (to write a dataset in parts).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
) -> None:
    from ..outputs import prepare_output_dir
    from ..toyworld.captions import caption_for, describe
    from ..toyworld.faces import FACTORS, factors_for, render, vector_names

    if out is None:
        raise fail("no output folder: pass --out DIR")
    if n < 1:
        raise fail(f"--n must be >= 1, got {n}")
    if seed < 0 or start < 0:
        raise fail(f"--seed and --start must be >= 0, got seed={seed}, start={start}")
    if not 8 <= size <= 1024:
        raise fail(f"--size must be between 8 and 1024, got {size}")
    if not 1 <= supersample <= 8:
        raise fail(f"--supersample must be between 1 and 8, got {supersample}")
    folder = prepare_output_dir(out, overwrite=overwrite)

    t0 = time.perf_counter()
    with (folder / "labels.jsonl").open("w", encoding="utf-8") as labels:
        for i in range(n):
            index = start + i
            f = factors_for(seed, index)
            name = f"{i:06d}.png"
            render(f, size=size, supersample=supersample).save(folder / name)
            record = {"file": name, "seed": seed, "index": index, **f.to_dict(),
                      "caption": caption_for(seed, index, f), "description": describe(f)}
            labels.write(json.dumps(record) + "\n")
    meta = {
        "generator": "hspace.toyworld.faces",
        "seed": seed, "start": start, "n": n, "size": size, "supersample": supersample,
        "factors": FACTORS,
        "label_vector": {"compact": vector_names(False), "one_hot": vector_names(True),
                         "doc": "hspace.toyworld.factors_to_vector(f, one_hot=...) order"},
        "item": "image i of this folder is hspace.toyworld.factors_for(seed, start + i) rendered at size",
    }
    (folder / "factors.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    dt = time.perf_counter() - t0
    notice(f"rendered {n} faces in {dt:.1f} s ({n / max(dt, 1e-9):.0f} images/s)")
    say(f"wrote {n} images, labels.jsonl and factors.json to {folder}")
