"""`hspace eval` end to end: two folders of toy faces, an `hspace edit` run folder, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hspace.backbones.registry import load_backbone
from hspace.cli.main import app
from hspace.directions import GlobalDirection, save_direction
from hspace.toyworld import factors_for, render, with_factor

SECTIONS = {"image_metrics", "clip", "realism", "toy_factors", "per_image", "summary", "inputs", "texts", "config",
            "versions", "hspace_version", "command"}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path_factory.getbasetemp() / "hspace-cache"))


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture()
def toy_folders(tmp_path) -> tuple[Path, Path]:
    """Four 64x64 toy faces without glasses (src/) and the same faces with glasses (edited/, *_edited.png),
    plus a source with no edit."""
    src, edt = tmp_path / "src", tmp_path / "edited"
    src.mkdir()
    edt.mkdir()
    for i in range(4):
        f = with_factor(factors_for(21, i), glasses=False)
        render(f).save(src / f"face{i}.png")
        render(with_factor(f, glasses=True)).save(edt / f"face{i}_edited.png")
    render(factors_for(21, 9)).save(src / "lonely.png")
    return src, edt


def test_two_folders_write_every_section(toy_folders):
    src, edt = toy_folders
    r = run("eval", "--source", src, "--edited", edt, "--source-text", "face", "--target-text", "face with glasses",
            "--clip", "tiny-random-clip", "--n-real", "8", "--kid-subsets", "5", "--distance", "fallback")
    assert r.exit_code == 0, r.output
    data = json.loads((edt / "eval.json").read_text())
    assert SECTIONS <= set(data)
    assert data["command"] == "eval" and data["inputs"]["mode"] == "folders" and data["inputs"]["n_pairs"] == 4
    assert [p["name"] for p in data["inputs"]["pairs"]] == [f"face{i}" for i in range(4)]
    assert data["inputs"]["unmatched_source"] == [str(src / "lonely.png")]
    assert data["texts"] == {"source": "face", "target": "face with glasses"}
    # toy target from the target text; the generator flipped exactly that factor
    tf = data["toy_factors"]
    assert tf["target"]["name"] == "glasses" and tf["success"]["rate"] == 1.0 and tf["passes"] is True
    rea = data["realism"]["extractors"]
    assert rea["probe"]["edited_vs_real"]["n_b"] == 8 and rea["probe"]["edited_vs_real"]["kid_subsets"] == 5
    assert rea["inception"] == {"available": False, "reason": rea["inception"]["reason"]}
    assert rea["inception"]["reason"].startswith("not available (no weights")
    assert data["image_metrics"]["lpips"] is None and data["image_metrics"]["perceptual_distance"]["is_lpips"] is False
    assert data["clip"]["encoder"] == "tiny-random-clip" and data["clip"]["meaningful"] is False
    assert len(data["per_image"]) == 4 and {"psnr", "ssim", "lpips", "perceptual_distance", "s_dir"} <= set(data["per_image"][0])
    assert data["config"]["clip"] == "tiny-random-clip" and data["config"]["real"] == "toy"
    # the printed table and the notices
    assert "-> PASS" in r.stdout and "NOT LPIPS" in r.stdout and f"wrote {edt / 'eval.json'}" in r.stdout
    assert "lonely.png: no edited image" in r.stderr and "toy target: glasses" in r.stderr


def test_refuses_to_overwrite_eval_json(toy_folders):
    src, edt = toy_folders
    out = edt / "eval.json"
    out.write_text("{}\n")
    args = ("eval", "--source", src, "--edited", edt, "--clip", "none", "--toy-target", "none", "--n-real", "4",
            "--kid-subsets", "2", "--distance", "fallback")
    err = one_error(run(*args), 2)
    assert str(out) in err and "--overwrite" in err
    assert out.read_text() == "{}\n"
    r = run(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["clip"] == {"skipped": "no CLIP encoder given"}
    assert data["toy_factors"]["skipped"].startswith("no toy target")


def test_default_clip_is_named_plainly(toy_folders):
    src, edt = toy_folders
    r = run("eval", "--source", src, "--edited", edt, "--toy-target", "none", "--n-real", "4", "--kid-subsets", "2",
            "--distance", "fallback", "--out", edt.parent / "e.json")
    assert r.exit_code == 0, r.output
    encoder = json.loads((edt.parent / "e.json").read_text())["clip"]["encoder"]
    if encoder == "tiny-random-clip":  # toy-clip is not shipped yet
        assert "RANDOM" in r.stderr and "meaningless" in r.stderr


def test_run_folder_of_hspace_edit(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(imgs / name)
    bb = load_backbone("tiny-random")
    g = torch.Generator().manual_seed(0)
    d = save_direction(GlobalDirection.for_backbone(bb, 0.1 * torch.randn(bb.h_shape, generator=g), t_edit=500,
                                                    source_text="face", target_text="smiling face"),
                       tmp_path / "smile.safetensors")
    out = tmp_path / "out"
    r = run("edit", "-m", "tiny-random", "-i", imgs, "-d", f"{d}:-0.5", "-o", out, "--steps", "2", "--inv-steps", "2")
    assert r.exit_code == 0, r.output

    r = run("eval", out, "--clip", "tiny-random-clip", "--kid-subsets", "3", "--distance", "fallback")
    assert r.exit_code == 0, r.output
    data = json.loads((out / "eval.json").read_text())
    assert data["inputs"]["mode"] == "run" and data["inputs"]["n_pairs"] == 2
    assert [p["edited"] for p in data["inputs"]["pairs"]] == [str(out / "a_edited.png"), str(out / "b_edited.png")]
    assert data["texts"] == {"source": "face", "target": "smiling face"}        # from the direction's header
    assert data["strength"] == -0.5 and data["image_size"] == [32, 32]
    assert data["clip"]["directional_similarity"] is not None
    assert "64x64" in data["toy_factors"]["skipped"] and data["realism"]["reference"]["n"] == 0
    assert "fd" in data["realism"]["extractors"]["clip"]["edited_vs_source"]
    assert "-> PASS" not in r.stdout and "toy factors: skipped (the probe reads 64x64 toy faces" in r.stdout


def test_errors_name_the_file_and_the_fix(tmp_path, toy_folders):
    src, edt = toy_folders
    err = one_error(run("eval", tmp_path), 2)
    assert "run.json" in err and "--source DIR --edited DIR" in err
    err = one_error(run("eval", tmp_path, "--source", src, "--edited", edt), 2)
    assert "not both" in err
    other = tmp_path / "other"
    other.mkdir()
    render(factors_for(0, 0)).save(other / "zzz.png")
    err = one_error(run("eval", "--source", src, "--edited", other, "--clip", "none"), 2)
    assert "matches a source" in err and "_edited.png" in err
    err = one_error(run("eval", "--source", src, "--edited", edt, "--toy-target", "sunburn"), 2)
    assert "--toy-target must be one of smiling" in err


def test_real_folder_and_missing_inception_weights(toy_folders, tmp_path):
    src, edt = toy_folders
    real = tmp_path / "real"
    real.mkdir()
    for i in range(3):
        render(factors_for(77, i)).save(real / f"r{i}.png")
    missing = tmp_path / "no-inception.pth"
    r = run("eval", "--source", src, "--edited", edt, "--clip", "none", "--toy-target", "glasses", "--real", real,
            "--inception-weights", missing, "--kid-subsets", "2", "--distance", "fallback")
    assert r.exit_code == 0, r.output
    data = json.loads((edt / "eval.json").read_text())
    assert data["realism"]["reference"] == {"kind": "given", "n": 3}
    probe = data["realism"]["extractors"]["probe"]
    assert probe["edited_vs_real"]["n_b"] == 3 and probe["edited_vs_real"]["kid_subset_size"] == 3
    assert str(missing) in data["realism"]["extractors"]["inception"]["reason"]
    assert data["summary"]["toy_target"] == "glasses = True"


def test_run_folder_evaluates_from_another_working_folder(tmp_path, monkeypatch):
    # run.json records the inputs by absolute path: an edit made with relative paths is evaluated from anywhere
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(imgs / "a.png")
    bb = load_backbone("tiny-random")
    d = save_direction(GlobalDirection.for_backbone(bb, 0.1 * torch.ones(bb.h_shape), t_edit=500,
                                                    source_text="face", target_text="smiling face"),
                       tmp_path / "smile.safetensors")
    monkeypatch.chdir(tmp_path)
    r = run("edit", "-m", "tiny-random", "-i", "imgs", "-d", "smile.safetensors", "-o", "out", "--steps", "2",
            "--inv-steps", "2")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["inputs"] == [str(imgs / "a.png")]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    r = run("eval", tmp_path / "out", "--clip", "tiny-random-clip", "--kid-subsets", "2", "--distance", "fallback")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["inputs"]["n_pairs"] == 1
