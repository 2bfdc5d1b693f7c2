"""The `hspace` command line, end to end on the built-in tiny-random model (few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hspace.backbones.registry import load_backbone
from hspace.cli.common import parse_direction_spec, parse_sweep
from hspace.cli.main import app
from hspace.directions import GlobalDirection, load_direction, save_direction

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "asyrp-official"
OFFICIAL = REFERENCE / "checkpoints" / "smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth"
FAST = ["--steps", "4", "--inv-steps", "4"]
VERBS = ("edit", "invert", "train", "difference", "interval", "import-official", "info", "models", "demo")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path_factory.getbasetemp() / "hspace-cache"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Two 32x32 images and a corrupt one in a folder, a fitting and a mismatching direction file."""
    root = tmp_path_factory.mktemp("cli")
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(imgs / name)
    (imgs / "broken.png").write_bytes(b"this is not a png")
    bb = load_backbone("tiny-random")
    g = torch.Generator().manual_seed(0)
    good = save_direction(GlobalDirection.for_backbone(bb, 0.1 * torch.randn(bb.h_shape, generator=g), t_edit=500),
                          root / "global.safetensors")
    bad = save_direction(GlobalDirection((32, 8, 8), torch.ones(32, 8, 8)), root / "small.safetensors")
    return {"root": root, "imgs": imgs, "good": good, "bad": bad}


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(result, code: int | None = None) -> str:
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_help_lists_every_verb_and_a_quick_start():
    result = run("--help")
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.output
    assert "Quick start" in result.output and "hspace demo" in result.output


def test_installed_script_runs():
    script = Path(sys.executable).parent / "hspace"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    out = subprocess.run([str(script), "edit", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--direction" in out.stdout and "FILE[:STRENGTH]" in out.stdout


def test_parse_direction_spec_splits_strength_from_the_right():
    assert parse_direction_spec("smile.safetensors:-0.5") == (Path("smile.safetensors"), -0.5)
    assert parse_direction_spec("smile.safetensors") == (Path("smile.safetensors"), 1.0)
    assert parse_direction_spec("a:b/smile.safetensors:2") == (Path("a:b/smile.safetensors"), 2.0)
    assert parse_direction_spec("C:\\dirs\\smile.safetensors") == (Path("C:\\dirs\\smile.safetensors"), 1.0)
    assert parse_sweep("-1:1:3") == [-1.0, 0.0, 1.0]


def test_edit_writes_images_grid_and_run_json_and_names_the_corrupt_image(world):
    out = world["root"] / "edit"
    result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"]), "-d", f"{world['good']}:-0.5",
                 "-o", str(out), "--reconstruct", *FAST)
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.stderr and "1 of 3 images failed" in result.stderr
    assert {"a_edited.png", "b_edited.png", "grid.png", "run.json"} <= {p.name for p in out.iterdir()}
    assert Image.open(out / "a_edited.png").size == (32, 32)
    rec = json.loads((out / "run.json").read_text())
    assert rec["command"] == "edit" and rec["config"]["n_steps"] == 4 and rec["device"] == "cpu"
    assert rec["t_edit"] == 500 and rec["interval_source"]["t_edit"] == "direction file"
    assert rec["directions"][0]["strength"] == -0.5 and rec["directions"][0]["header"]["kind"] == "global"
    assert [Path(f["path"]).name for f in rec["failed"]] == ["broken.png"]
    grid = Image.open(out / "grid.png")
    assert grid.width > 3 * 32 and grid.height > 2 * 32  # 3 columns (input | recon | edited), 2 rows

    again = run("edit", "-m", "tiny-random", "-i", str(world["imgs"]), "-d", str(world["good"]), "-o", str(out), *FAST)
    assert "--overwrite" in assert_one_line_error(again, 2)


def test_edit_fails_when_every_image_fails(world):
    result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "broken.png"), "-d", str(world["good"]),
                 "-o", str(world["root"] / "none"), *FAST)
    assert "broken.png" in assert_one_line_error(result, 1)


@pytest.mark.parametrize("verb", ["edit", "invert", "train", "difference", "interval"])
def test_device_that_is_not_here_is_one_line_error(world, verb):
    # every verb that runs the model takes --device; a device this machine lacks (or a malformed
    # name) is refused before any work, naming the option
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for one without")
    base = {"edit": ["-i", str(world["imgs"] / "a.png"), "-d", str(world["good"]), "-o", str(world["root"] / "dev")],
            "invert": ["-i", str(world["imgs"] / "a.png"), "-o", str(world["root"] / "dev")],
            "train": ["--source", "a", "--target", "b", "--noise", "1", "-o", str(world["root"] / "dev.safetensors")],
            "difference": ["--from", str(world["imgs"] / "a.png"), "--to", str(world["imgs"] / "b.png"),
                           "-o", str(world["root"] / "dev.safetensors")],
            "interval": ["-i", str(world["imgs"] / "a.png")]}[verb]
    for device, says in (("cuda", "CUDA is not available"), ("gpu0", "device must be like")):
        line = assert_one_line_error(run(verb, "-m", "tiny-random", *base, "--device", device), 2)
        assert f"--device {device}" in line and says in line
    assert not (world["root"] / "dev").exists() and not (world["root"] / "dev.safetensors").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
def test_edit_on_the_gpu_matches_the_cpu(world, tmp_path):
    outs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(world["good"]),
                     "-o", str(out), "--device", device, *FAST)
        assert result.exit_code == 0, result.output
        outs[device] = np.asarray(Image.open(out / "a_edited.png"), dtype=np.int16)
        assert json.loads((out / "run.json").read_text())["device"].startswith(device)
    assert np.abs(outs["cpu"] - outs["cuda"]).max() <= 2  # kernels differ in the last bits


def test_direction_mismatch_names_both_shapes(world):
    result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(world["bad"]),
                 "-o", str(world["root"] / "mismatch"), *FAST)
    line = assert_one_line_error(result, 2)
    assert "[32, 8, 8]" in line and "[64, 8, 8]" in line
    debug = run("--debug", "edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(world["bad"]),
                "-o", str(world["root"] / "mismatch2"), *FAST)
    assert type(debug.exception).__name__ == "DirectionMismatchError"  # --debug re-raises


def test_sweep_writes_a_gif_with_n_frames(world):
    out = world["root"] / "sweep"
    result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(world["good"]),
                 "-o", str(out), "--sweep", "-1:1:3", *FAST)
    assert result.exit_code == 0, result.output
    assert Image.open(out / "a_sweep.gif").n_frames == 3
    assert (out / "a_sweep.png").is_file()
    two = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(world["good"]),
              "-d", str(world["good"]), "-o", str(world["root"] / "sweep2"), "--sweep", "-1:1:3", *FAST)
    assert "exactly one --direction" in assert_one_line_error(two, 2)


def test_invert_reports_psnr(world):
    out = world["root"] / "invert"
    result = run("invert", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), str(world["imgs"] / "b.png"),
                 "-o", str(out), "--steps", "4")
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.stdout
    assert {"a_latent.safetensors", "a_recon.png", "b_latent.safetensors", "b_recon.png"} <= {p.name for p in out.iterdir()}
    rec = json.loads((out / "run.json").read_text())
    assert len(rec["images"]) == 2 and all(isinstance(i["psnr_db"], float) for i in rec["images"])
    assert rec["mean_psnr_db"] == pytest.approx(sum(i["psnr_db"] for i in rec["images"]) / 2)


def test_train_from_noise_writes_a_loadable_direction(world):
    target = world["root"] / "smile.safetensors"
    args = ["train", "-m", "tiny-random", "--source", "a face", "--target", "a smiling face", "--noise", "1",
            "--clip", "tiny-random-clip", "--steps", "4", "-o", str(target)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "default 500" in result.stderr  # says which t_edit and why
    d = load_direction(target, backbone=load_backbone("tiny-random"))
    assert d.meta.kind == "implicit-ddpm" and d.meta.target_text == "a smiling face" and d.meta.t_edit == 500
    assert not (world["root"] / "smile.ckpt.safetensors").exists()  # checkpoint removed after success
    assert "already exists" in assert_one_line_error(run(*args), 2)


def test_editing_band_from_train_to_edit(world):
    # --t-edit-max (hspace's editing band): recorded by train, applied by edit, refused when empty
    target = world["root"] / "band.safetensors"
    result = run("train", "-m", "tiny-random", "--source", "a face", "--target", "a smiling face", "--noise", "1",
                 "--clip", "tiny-random-clip", "--steps", "4", "--t-edit", "300", "--t-edit-max", "700", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert load_direction(target, backbone=load_backbone("tiny-random")).meta.t_edit_max == 700
    out = world["root"] / "band-edit"
    result = run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(target), "-o", str(out), *FAST)
    assert result.exit_code == 0, result.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["t_edit_max"] == 700 and rec["interval_source"]["t_edit_max"] == "direction file"
    line = assert_one_line_error(run("edit", "-m", "tiny-random", "-i", str(world["imgs"] / "a.png"), "-d", str(target),
                                     "-o", str(world["root"] / "band-empty"), "--t-edit", "800", *FAST), 2)
    assert "below t_edit" in line
    line = assert_one_line_error(run("train", "-m", "tiny-random", "--source", "a", "--target", "b", "--noise", "1",
                                     "--clip", "tiny-random-clip", "--steps", "4", "--t-edit-max", "200",
                                     "-o", str(world["root"] / "never.safetensors")), 2)
    assert "--t-edit-max 200" in line and not (world["root"] / "never.safetensors").exists()


def test_import_official_then_info(world):
    if not OFFICIAL.is_file():
        pytest.skip(f"official checkpoint not found at {OFFICIAL}")
    target = world["root"] / "official.safetensors"
    result = run("import-official", str(OFFICIAL), "--backbone", "google/ddpm-ema-celebahq-256", "--h-shape", "512,8,8",
                 "--temb-dim", "512", "--train-steps", "40", "-o", str(target))
    assert result.exit_code == 0, result.output
    info = run("info", str(target))
    assert info.exit_code == 0, info.output
    assert "implicit-ddpm" in info.stdout and "[512, 8, 8]" in info.stdout and "google/ddpm-ema-celebahq-256" in info.stdout
    fit = run("info", str(target), "--model", "tiny-random")
    assert fit.exit_code == 1 and "does NOT fit" in fit.stdout and "[64, 8, 8]" in fit.stdout


def test_unavailable_model_is_one_line_error(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": ""}
    result = run("info", "google/ddpm-ema-celebahq-256", env=env)
    line = assert_one_line_error(result, 1)
    assert "google/ddpm-ema-celebahq-256" in line and "not available" in line


def test_info_models_and_interval_preset():
    info = run("info", "tiny-random")
    assert info.exit_code == 0 and "h shape" in info.stdout and "[64, 8, 8]" in info.stdout and "temb dim" in info.stdout
    models = run("models")
    assert models.exit_code == 0 and "tiny-random" in models.stdout and "hub id" in models.stdout
    preset = run("interval", "--preset", "celeba")
    assert preset.exit_code == 0 and "t_edit  = 538" in preset.stdout and "t_boost = 167" in preset.stdout
    assert_one_line_error(run("interval", "--preset", "nowhere"), 2)


def test_demo_runs_end_to_end_quickly(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--model", "tiny-random", "-o", str(out), "--steps", "4", "--train-steps", "4")
    assert result.exit_code == 0, result.output
    assert "RANDOM" in result.stdout
    assert {"grid.png", "sweep.gif", "metrics.json", "run.json"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    by_s = {m["strength"]: m for m in metrics["strengths"]}
    assert set(by_s) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert by_s[0.0]["mean_abs_diff_vs_reconstruction"] < 1e-3  # strength 0 is the reconstruction (up to float noise)
    assert Image.open(out / "sweep.gif").n_frames == 5


@pytest.mark.parametrize("name,h", [("adm:p2-celebahq-256", "[512, 8, 8]"), ("adm:imagenet-256-uncond", "[1024, 8, 8]"),
                                    ("ddpm:celebahq-256", "[512, 8, 8]")])
def test_info_on_a_named_model_needs_no_weights(tmp_path, monkeypatch, name, h):
    monkeypatch.setenv("HSPACE_WEIGHTS", str(tmp_path / "no-weights-here"))
    result = run("info", name)
    assert result.exit_code == 0, result.output
    assert f"h shape          {h}" in result.stdout and "not found" in result.stdout


@pytest.mark.parametrize("model", ["adm:p2-celebahq-256", "ddpm:church-256", "google/ddpm-ema-church-256"])
def test_edit_with_missing_weights_is_one_line_error(world, tmp_path, monkeypatch, model):
    monkeypatch.setenv("HSPACE_WEIGHTS", str(tmp_path / "no-weights-here"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": ""}
    result = run("edit", "--model", model, "--input", str(world["imgs"] / "a.png"), "--direction", str(world["good"]),
                 "--output", str(tmp_path / "out"), env=env)
    line = assert_one_line_error(result, 1)
    assert model in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ddim_steps_default_per_model():
    from hspace.cli.common import ddim_steps_for

    assert ddim_steps_for("toy-faces", None) == 100  # 40 steps blow up some toy-faces reconstructions
    assert ddim_steps_for(" toy-faces ", None) == 100
    assert ddim_steps_for("tiny-random", None) == 40  # the paper's
    assert ddim_steps_for("google/ddpm-ema-celebahq-256", None) == 40
    assert ddim_steps_for("toy-faces", 12) == 12  # the user's choice wins
