"""The built-in world's quality checks and the shipped-direction tooling (on tiny models and the shipped probe)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.cli.main import app
from hspace.directions import GlobalDirection, load_direction
from hspace.editor import EditConfig, Editor
from hspace.toyworld.directions import (TOY_DIRECTIONS, DirectionRecipe, ToyDirection, face_images, mean_colour_change, recipe_for,
                                       target_twin, train_direction)
from hspace.toyworld.faces import factors_for, with_factor
from hspace.toyworld.models import TOY_FACES_DIR
from hspace.toyworld.probe import PROBE_DIR, load_probe
from hspace.toyworld.quality import check_inversion, valid_faces

from conftest import TameBackbone, make_tiny_unet

needs_probe = pytest.mark.skipif(not (PROBE_DIR / "model.safetensors").is_file(), reason="toy probe not shipped")


@pytest.fixture(scope="module")
def probe():
    return load_probe()


@needs_probe
def test_valid_faces_accepts_faces_and_rejects_non_faces(probe):
    from hspace.toyworld.quality import FaceValidity

    validity = FaceValidity(probe, n=100)
    faces = face_images(1_000_003, 32)
    assert validity(faces).float().mean() >= 0.95
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(8, 3, 64, 64, generator=g) * 2 - 1
    flat = torch.zeros(4, 3, 64, 64)  # the heads alone call this a confident face
    blurred = torch.nn.functional.avg_pool2d(faces[:8], 3, stride=1, padding=1)
    grainy = (faces[:8] + 0.05 * torch.randn(8, 3, 64, 64, generator=g)).clamp(-1, 1)
    assert not bool(validity(noise).any()) and not bool(validity(flat).any())
    assert not bool(validity(blurred).any()) and not bool(validity(grainy).any())
    assert torch.equal(valid_faces(probe, faces[:4], validity), validity(faces[:4]))


def _tame64() -> TameBackbone:
    cfg = dict(sample_size=64)
    return TameBackbone(make_tiny_unet(**cfg))


@needs_probe
def test_null_direction_changes_no_factor(probe):
    """A zero dh must leave every face as its own reconstruction: no target change, all kept."""
    from hspace.toyworld.directions import evaluate_direction

    backbone = _tame64()
    faces = face_images(1_000_003, 4)
    editor = Editor(backbone, EditConfig(n_inv_steps=4, n_steps=4, t_edit=500, cache_latents=False, progress=False))
    latents = editor.invert(faces)
    recon = editor.reconstruct(latents)
    zero = GlobalDirection.for_backbone(backbone, torch.zeros(backbone.h_shape), t_edit=500)
    factors = [factors_for(1_000_003, i) for i in range(4)]
    # the sources as the probe sees images: in [-1, 1] (this tiny U-Net's reconstructions overshoot)
    rep = evaluate_direction(editor, probe, zero, latents, recon.clamp(-1, 1), "glasses",
                             reconstructions=recon.clamp(-1, 1), factors=factors)
    assert rep["n"] == 4 and rep["min_preserved"] == 1.0
    colour = rep["mean_colour"]
    assert colour["n"] == sum(not f.glasses for f in factors)
    if colour["n"]:
        assert colour["edit_abs"] < 1e-5 and colour["needed_abs"] > 0
    assert rep["success_rate"] in (0.0, None)  # None only when every face already wears glasses
    assert rep["passed"] is False


def test_check_inversion_reports_each_step_count():
    backbone = DiffusersUNetBackbone(make_tiny_unet(sample_size=64), backbone_id="test/tiny64")
    out = check_inversion(backbone, n=2, steps=(3, 6), progress=False)
    assert set(out["psnr_db"]) == {"3", "6"} and "passed" not in out  # no 100-step entry: no verdict
    for v in out["psnr_db"].values():
        assert v["min"] <= v["mean"]


def test_toy_direction_texts_and_targets_are_consistent():
    from hspace.evaluation.factors import TOY_TARGETS

    for name, spec in TOY_DIRECTIONS.items():
        assert spec.name == name and spec.judged_as in TOY_TARGETS
        assert spec.source != spec.target


def test_check_rejects_unknown_check(tmp_path):
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "nonsense", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "unknown check" in res.output


def test_check_refuses_options_that_no_chosen_check_reads(tmp_path):
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "probe", "--clip", str(tmp_path), "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "--only clip" in res.output
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "clip", "--directions-dir", str(tmp_path),
                                   "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "--only directions" in res.output
    assert not (tmp_path / "q").exists()  # refused before writing anything


def test_train_directions_rejects_unknown_name_and_existing_files(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["toyworld", "train-directions", "--only", "moustache", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown direction" in res.output
    (tmp_path / "glasses.safetensors").write_bytes(b"keep me")
    res = runner.invoke(app, ["toyworld", "train-directions", "--only", "glasses", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (tmp_path / "glasses.safetensors").read_bytes() == b"keep me"
    # directions for a candidate model never land in the shipped folder by default
    res = runner.invoke(app, ["toyworld", "train-directions", "--model", str(tmp_path / "candidate")])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--clip", str(tmp_path / "clip")])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--clip", str(tmp_path / "no-clip"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "no-clip" in res.output and "train-clip --out" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--probe", str(tmp_path / "probe")])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--probe", str(tmp_path / "no-probe"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "no-probe" in res.output and "train-probe --out" in res.output


@needs_probe
def test_check_judges_with_the_probe_it_is_given(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["toyworld", "check", "--only", "probe", "--probe", str(tmp_path / "no-probe"),
                              "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "train-probe --out" in res.output
    assert not (tmp_path / "q").exists()  # refused before writing anything
    res = runner.invoke(app, ["toyworld", "check", "--only", "probe", "--quick", "--probe", str(PROBE_DIR),
                              "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert record["run"]["probe"] == str(PROBE_DIR) and record["results"]["probe"]["passed"]


@needs_probe
def test_check_probe_quick_writes_json_and_table(tmp_path):
    import json

    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "probe", "--quick", "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "q" / "quality.json").read_text())
    bars = data["results"]["probe"]["bars"]
    assert set(bars) >= {"glasses", "hair_color", "smile"} and all(b["passed"] for b in bars.values())
    table = (tmp_path / "q" / "quality.md").read_text()
    assert table.count("| probe |") == len(bars)


@needs_probe
def test_toy_demo_runs_and_measures_every_edit(probe, tmp_path, monkeypatch):
    """The demo's pipeline on a tiny 64 px U-Net and the random tiny CLIP (numbers meaningless,
    structure and bookkeeping checked), with one shipped direction replaced by a file of ours."""
    from hspace.directions import save_direction
    from hspace.encoders import TINY_CLIP_NAME, load_encoder
    from hspace.toyworld import demo as demo_mod
    from hspace.toyworld import directions as dir_mod

    backbone = _tame64()
    smile = GlobalDirection.for_backbone(backbone, 0.5 * torch.randn(backbone.h_shape), t_edit=500,
                                         source_text="a face", target_text="a smiling face")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    save_direction(smile, shipped / "smiling.safetensors")
    monkeypatch.setattr(dir_mod, "DIRECTIONS_DIR", shipped)
    settings = demo_mod.DemoSettings(n_images=2, steps=4, strengths=(-1.0, 0.0, 1.0), shipped=("smiling", "glasses"),
                                     compose=("smiling", "glasses"), n_real=8, precision="fp32")
    lines: list[str] = []
    res = demo_mod.run_toy_demo(backbone, load_encoder(TINY_CLIP_NAME), probe, settings, progress=False,
                                log=lines.append)
    assert set(res.edits) == {"beard", "smiling"}  # glasses is not shipped here: skipped, and said so
    assert any("glasses" in line and "missing" in line for line in lines)
    for batches in res.edits.values():
        assert len(batches) == 3 and all(b.shape == (2, 3, 64, 64) for b in batches)
    m = res.metrics["directions"]["smiling"]["strengths"]
    assert [r["strength"] for r in m] == [-1.0, 0.0, 1.0]
    assert "success_rate" not in m[1] and "preservation" in m[2] and "smile" not in m[2]["preservation"]
    assert res.metrics["composed"]["members"] == ["smiling"]  # only one member available: no composition
    assert torch.equal(res.composed, res.reconstructions)


def test_mean_response_is_one_for_an_exact_denoiser_and_zero_for_a_colour_blind_unet():
    """The diagnosis behind TOY_FACES_UNET's norm_num_groups (1 since 2026-11-26): with one channel
    per group the U-Net's last GroupNorm removes each channel's mean, so eps cannot follow x_t's mean."""
    from hspace.toyworld.quality import mean_response
    from test_sampler import ClosedFormBackbone

    exact = mean_response(ClosedFormBackbone())
    assert all(abs(v - 1) < 1e-3 for v in exact), exact
    # ... and at every t what the closed form says: pixels iid N(0, s^2), so the image mean's
    # variance is s^2 / pixels
    from hspace.toyworld.quality import ideal_mean_response

    bb = ClosedFormBackbone()
    for t in (999, 800, 600, 300):
        want = ideal_mean_response(bb.alphas_cumprod, t, bb.s**2 / 64, 64).item()
        assert mean_response(bb, t=t) == pytest.approx([want] * 3, rel=1e-3), t
    assert ideal_mean_response(bb.alphas_cumprod, 300, bb.s**2 / 64, 64).item() < 0.9
    blind = DiffusersUNetBackbone(make_tiny_unet(block_out_channels=(32, 64, 64), norm_num_groups=32))
    assert all(abs(v) < 0.05 for v in mean_response(blind))


def test_target_twin_is_the_exact_edit_or_none():
    f = with_factor(factors_for(1_000_003, 0), glasses=False, hair_color="brown", smile=0.0)
    assert target_twin(f, "glasses") == with_factor(f, glasses=True)
    assert target_twin(f, "glasses", strength=-1.0) is None  # already without glasses
    assert target_twin(f, "blond") == with_factor(f, hair_color="blond")
    assert target_twin(f, "blond", strength=-1.0) is None  # "not blond" has no single answer
    assert target_twin(f, "smiling").smile == pytest.approx(0.8)
    assert target_twin(f, "smiling", strength=-1.0).smile == pytest.approx(-0.8)
    assert target_twin(with_factor(f, smile=0.9), "smiling") is None


def test_mean_colour_change_compares_the_edit_with_the_exact_edit():
    from hspace.toyworld.dataset import image_to_tensor
    from hspace.toyworld.faces import render_array

    factors = [with_factor(factors_for(1_000_003, i), hair_color=c) for i, c in enumerate(["black", "brown", "blond"])]
    src = torch.stack([image_to_tensor(render_array(f)) for f in factors])
    exact = torch.stack([image_to_tensor(render_array(with_factor(f, hair_color="blond"))) for f in factors])
    done = mean_colour_change(src, src, exact, factors, "blond")
    assert done["n"] == 2  # the blond face has nothing to change
    assert done["edit_mean"] == pytest.approx(done["needed_mean"], abs=1e-6)
    assert done["needed_mean"] > 0.01  # blond hair is brighter than black or brown
    kept = mean_colour_change(src, src, src + 0.0, factors, "blond")  # an edit that moved nothing
    assert kept["edit_abs"] == 0.0 and kept["needed_mean"] == pytest.approx(done["needed_mean"])
    assert mean_colour_change(src[2:], src[2:], src[2:], factors[2:], "blond") == {"n": 0}


def test_check_verdict_needs_every_caption_style():
    from hspace.cli.toyworld_build import verdict

    assert verdict({"short": True, "full": False}) == "NOT passed"  # the CLIP's smile, full captions
    assert verdict({"short": True, "full": True}) == "passed"
    assert verdict(True) == "passed" and verdict(False) == "NOT passed" and verdict(None) == "measured"


@needs_probe
def test_check_judges_a_candidate_model_and_directions_folder(tmp_path):
    """--model and --directions-dir check a retrained world without touching the shipped files."""
    import json

    from hspace.toyworld.train_unet import TINY_UNET, build_unet, make_scheduler

    model = tmp_path / "candidate"
    build_unet(dict(TINY_UNET, sample_size=64)).save_pretrained(model)
    make_scheduler().save_pretrained(model)
    empty = tmp_path / "no-directions"
    empty.mkdir()
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "base", "--only", "inversion", "--only", "directions",
                                   "--quick", "--model", str(model), "--directions-dir", str(empty),
                                   "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "q" / "quality.json").read_text())
    base = data["results"]["base"]
    # an untrained U-Net draws noise: no valid face with either sampler, and the two samplers differ
    assert base["valid_rate"] == 0.0 and base["ancestral"]["valid_rate"] == 0.0 and not base["passed"]
    assert base["render_error_median"] > base["render_error_threshold"]
    assert base["ancestral"]["render_error_median"] != base["render_error_median"]
    assert (tmp_path / "q" / "samples.png").is_file() and "eta = 1" in (tmp_path / "q" / "quality.md").read_text()
    assert data["run"]["model"] == str(model) and data["run"]["directions_dir"] == str(empty)
    assert set(data["results"]["inversion"]["psnr_db"]) == {"40", "100"}
    assert str(empty) in data["results"]["directions"]["note"]
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "base", "--model", str(tmp_path / "missing"),
                                   "--out", str(tmp_path / "q2")])
    assert res.exit_code != 0 and "missing" in res.output
    assert not (tmp_path / "q2").exists()  # failed before writing anything
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "directions", "--directions-dir",
                                   str(tmp_path / "nowhere"), "--out", str(tmp_path / "q3")])
    assert res.exit_code == 2 and "not a folder" in res.output
    # train-directions on the same candidate, into its own folder
    dirs = tmp_path / "dirs"
    # ... with a candidate CLIP (here a copy of the shipped one, as `train-clip --out` writes it)
    import shutil

    from hspace.toyworld.clip_train import CLIP_DIR

    clip = tmp_path / "clip-candidate"
    shutil.copytree(CLIP_DIR, clip)
    res = CliRunner().invoke(app, ["toyworld", "train-directions", "--model", str(model), "--out", str(dirs),
                                   "--only", "glasses", "--n-images", "1", "--eval-n", "2", "--clip", str(clip)])
    assert res.exit_code == 0, res.output
    assert (dirs / "glasses.safetensors").is_file()
    entry = json.loads((dirs / "eval.json").read_text())["directions"]["glasses"]
    assert entry["trained"]["lr"] == TOY_DIRECTIONS["glasses"].lr != DirectionRecipe().lr  # its own rate
    # the objective's weights are recorded in the file as `hspace train` records them (no off-axis penalty here)
    assert entry["trained"]["w_off"] == 0.0
    assert load_direction(dirs / "glasses.safetensors").meta.extra["weights"] == {"clip": 1.0, "l1": 3.0, "off": 0.0}
    assert entry["run"]["model"] == str(model) and entry["run"]["clip"] == str(clip)
    # judged on the candidate with the new file (numbers meaningless on a random model)
    kept = set(entry["eval"]["preservation"])
    assert entry["eval"]["n"] == 2 and "glasses" not in kept and {"smile", "skin_tone", "hair_color"} <= kept
    # an explicit --lr is every direction's; without one, a direction with no rate of its own takes the recipe's
    res = CliRunner().invoke(app, ["toyworld", "train-directions", "--model", str(model), "--out", str(dirs),
                                   "--only", "glasses", "--only", "blond", "--only", "smiling", "--n-images", "1",
                                   "--eval-n", "0", "--clip", str(clip), "--lr", "0.3", "--w-off", "2", "--overwrite"])
    assert res.exit_code == 0, res.output
    entries = json.loads((dirs / "eval.json").read_text())["directions"]
    assert entries["glasses"]["trained"]["lr"] == entries["blond"]["trained"]["lr"] == 0.3
    assert entries["glasses"]["trained"]["w_off"] == entries["smiling"]["trained"]["w_off"] == 2.0
    assert load_direction(dirs / "blond.safetensors").meta.extra["weights"]["off"] == 2.0
    # smiling is trained to the top and its file asks for the editing band (ToyDirection.edit_t_max)
    meta = load_direction(dirs / "smiling.safetensors").meta
    assert (meta.t_edit, meta.t_edit_max) == (TOY_DIRECTIONS["smiling"].t_edit, TOY_DIRECTIONS["smiling"].edit_t_max) == (300, 700)
    assert meta.extra["training"]["train_timesteps"][-1] == 999  # trained to the top
    assert load_direction(dirs / "glasses.safetensors").meta.t_edit_max is None
    assert entries["glasses"]["trained"]["t_edit"] == TOY_DIRECTIONS["glasses"].t_edit != DirectionRecipe().t_edit
    # a direction's own rate and interval replace the recipe's; where it has none, the recipe's stay
    plain = ToyDirection("x", "a face", "a face with a hat", "hat")
    assert recipe_for(plain, DirectionRecipe()) == DirectionRecipe()
    own = recipe_for(TOY_DIRECTIONS["blond"], DirectionRecipe())
    assert (own.lr, own.t_edit) == (TOY_DIRECTIONS["blond"].lr, TOY_DIRECTIONS["blond"].t_edit) != (0.5, 500)
    hat = recipe_for(TOY_DIRECTIONS["hat"], DirectionRecipe())
    assert TOY_DIRECTIONS["hat"].t_edit is None and hat.t_edit == DirectionRecipe().t_edit and hat.lr == 2.0
    assert hat.w_off == DirectionRecipe().w_off == 0.0
    assert recipe_for(ToyDirection("x", "a face", "a face with a hat", "hat", w_off=2.0), DirectionRecipe()).w_off == 2.0


needs_toy_faces = pytest.mark.skipif(
    not (TOY_FACES_DIR / "diffusion_pytorch_model.safetensors").is_file(), reason="toy-faces not shipped")


@needs_probe
@needs_toy_faces
def test_mean_difference_reference_puts_hats_on_held_out_faces(probe):
    """The text-free reference direction (mean h difference between training faces and their
    exact edits) on the shipped toy-faces puts hats on faces where the null edit puts none. (On the
    eps model h carried the hat on 5-6 of 6 faces at strength 1; the v model shipped since
    2026-11-26 carries less of it in h: 2 of 6 at strength 1, 4 at strength 3.)"""
    from hspace.backbones.registry import load_backbone
    from hspace.evaluation.factors import evaluate_toy_edit
    from hspace.toyworld.directions import DirectionRecipe, mean_difference_for

    backbone = load_backbone("toy-faces")
    recipe = DirectionRecipe(n_images=12)
    train_editor = Editor(backbone, EditConfig(n_inv_steps=recipe.n_inv_steps, n_steps=recipe.n_steps, batch_size=16,
                                               progress=False))
    direction, pairs = mean_difference_for(backbone, TOY_DIRECTIONS["hat"], recipe, train_editor.invert)
    assert pairs == sum(not factors_for(recipe.data_seed, i).hat for i in range(12)) and pairs >= 4
    assert direction.meta.t_edit == recipe.t_edit and direction.meta.extra["toy_reference"]["pairs"] == pairs
    held_out = [i for i in range(20) if not factors_for(1_000_003, i).hat][:6]
    faces = face_images(1_000_003, 20)[held_out]
    editor = Editor(backbone, EditConfig(n_inv_steps=100, n_steps=100, batch_size=6, precision="bf16", progress=False))
    latents = editor.invert(faces)
    edited = editor.edit(latents, [(direction, 3.0)]).images.clamp(-1, 1)
    report = evaluate_toy_edit(probe, faces, edited, "hat", 1.0)
    assert report["success"]["n_eligible"] == 6 and report["success"]["n_success"] >= 3
    null = evaluate_toy_edit(probe, faces, editor.edit(latents, [(direction, 0.0)]).images.clamp(-1, 1), "hat", 1.0)
    assert null["success"]["n_success"] == 0  # the hats come from the direction, not from the round trip


@needs_probe
@needs_toy_faces
def test_train_directions_mean_difference_method(tmp_path):
    import json

    runner = CliRunner()
    res = runner.invoke(app, ["toyworld", "train-directions", "--method", "mean-difference", "--only", "hat"])
    assert res.exit_code == 2 and "--out" in res.output  # never into the shipped folder
    res = runner.invoke(app, ["toyworld", "train-directions", "--method", "mean-difference", "--clip", str(tmp_path),
                              "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "no CLIP" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--method", "nonsense", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "mean-difference" in res.output
    res = runner.invoke(app, ["toyworld", "train-directions", "--method", "mean-difference", "--only", "hat",
                              "--n-images", "4", "--eval-n", "0", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "d" / "eval.json").read_text())["directions"]["hat"]
    assert entry["run"]["method"] == "mean-difference" and entry["trained"]["pairs"] >= 1
    assert (tmp_path / "d" / "hat.safetensors").is_file()


@torch.no_grad()
def test_h_oracle_edit_is_exact_for_an_unchanged_twin_and_per_face():
    from hspace.sampler import generate
    from hspace.toyworld.directions import h_oracle_edit

    backbone = _tame64()
    g = torch.Generator().manual_seed(0)
    src, twin = torch.randn(3, 3, 64, 64, generator=g), torch.randn(3, 3, 64, 64, generator=g)
    plain = generate(backbone, src, 6)
    torch.testing.assert_close(h_oracle_edit(backbone, src, src, 6, 500, precision="fp32"), plain)
    edited = h_oracle_edit(backbone, src, twin, 6, 500, precision="fp32", batch_size=3)
    assert (edited - plain).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every face moved
    # each face gets its own twin's h, whatever the batching
    torch.testing.assert_close(h_oracle_edit(backbone, src, twin, 6, 500, precision="fp32", batch_size=1), edited,
                               atol=1e-5, rtol=1e-4)
    mixed = torch.cat([twin[:1], src[1:]])  # only face 0 has a different twin
    one = h_oracle_edit(backbone, src, mixed, 6, 500, precision="fp32", batch_size=3)
    torch.testing.assert_close(one[1:], plain[1:])
    torch.testing.assert_close(one[:1], edited[:1], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_h_oracle_levels_move_the_skips_too():
    """With every skip level added, the first edited step's e~ is the twin's own eps: the exact
    Asyrp step from the source towards the twin, computed by hand on a two-step grid."""
    from hspace.sampler import asymmetric_step, ddim_step
    from hspace.toyworld.directions import h_oracle_edit, h_oracle_edits, skip_resolutions

    backbone = _tame64()
    sizes = skip_resolutions(backbone)
    assert sizes == sorted(sizes) and sizes[-1] == 64 and backbone.h_shape[-1] in sizes
    g = torch.Generator().manual_seed(1)
    src, twin = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    ac = backbone.alphas_cumprod
    x1 = asymmetric_step(src, backbone.eps(src, 999), backbone.eps(twin, 999), ac[999], ac[0]).x_next
    by_hand = ddim_step(x1, backbone.eps(x1, 0), ac[0], 1.0).x_next
    every = h_oracle_edit(backbone, src, twin, 2, 999, precision="fp32", levels=sizes)
    torch.testing.assert_close(every, by_hand, atol=1e-4, rtol=1e-4)
    # h alone, or h with one level, is another edit; and each face still gets its own twin's change
    only_h = h_oracle_edit(backbone, src, twin, 2, 999, precision="fp32")
    coarse = h_oracle_edit(backbone, src, twin, 2, 999, precision="fp32", levels=sizes[:1])
    assert (only_h - every).abs().amax() > 1e-3 and (coarse - only_h).abs().amax() > 1e-3
    torch.testing.assert_close(h_oracle_edit(backbone, src, twin, 2, 999, precision="fp32", levels=sizes[:1],
                                             batch_size=1), coarse, atol=1e-3, rtol=1e-3)
    # several level sets in one walk give what separate runs give
    together = h_oracle_edits(backbone, src, twin, 2, 999, [(), sizes[:1], sizes], precision="fp32")
    for one, alone in zip(together, (only_h, coarse, every)):
        torch.testing.assert_close(one, alone)
    with pytest.raises(ValueError, match=r"not skip resolutions.*\[16, 32, 64\]"):
        h_oracle_edit(backbone, src, twin, 2, 999, levels=(12,))


@torch.no_grad()
def test_h_oracle_band_walks_both_trajectories_above_it():
    """With a band below the top, the top step is plain DDIM for the edited face, while the source's
    and the twin's trajectories still walk, so the band's first edit uses the twin's eps at the twin's
    own x_t there (by hand, every level, on the two-step grid 999 -> 0)."""
    from hspace.sampler import asymmetric_step, ddim_step
    from hspace.toyworld.directions import h_oracle_edit, skip_resolutions

    backbone = _tame64()
    sizes = skip_resolutions(backbone)
    g = torch.Generator().manual_seed(2)
    src, twin = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    ac = backbone.alphas_cumprod
    src1 = ddim_step(src, backbone.eps(src, 999), ac[999], ac[0]).x_next
    twin1 = ddim_step(twin, backbone.eps(twin, 999), ac[999], ac[0]).x_next
    by_hand = asymmetric_step(src1, backbone.eps(src1, 0), backbone.eps(twin1, 0), ac[0], 1.0).x_next
    banded = h_oracle_edit(backbone, src, twin, 2, 0, precision="fp32", levels=sizes, t_edit_max=0)
    torch.testing.assert_close(banded, by_hand, atol=1e-4, rtol=1e-4)
    # the band up to the top is the paper's interval
    torch.testing.assert_close(h_oracle_edit(backbone, src, twin, 2, 0, precision="fp32", t_edit_max=999),
                               h_oracle_edit(backbone, src, twin, 2, 0, precision="fp32"))
    with pytest.raises(ValueError, match="band would be empty"):
        h_oracle_edit(backbone, src, twin, 2, 500, t_edit_max=400)


@needs_probe
def test_check_h_oracle_judges_each_direction(probe, tmp_path):
    from hspace.directions import save_direction
    from hspace.toyworld.quality import check_h_oracle

    backbone = _tame64()
    folder = tmp_path / "dirs"
    folder.mkdir()  # a hat file (|dh| known exactly) and an eyes_closed file of another shape
    save_direction(GlobalDirection.for_backbone(backbone, torch.full(backbone.h_shape, 0.5)), folder / "hat.safetensors")
    # a file that does not fit this model is named and skipped, not a crash
    save_direction(GlobalDirection((8, 8, 8), torch.ones(8, 8, 8)), folder / "eyes_closed.safetensors")
    rep = check_h_oracle(backbone, probe, names=["hat", "eyes_closed"], n=6, steps=4, progress=False,
                         log=lambda s: None, folder=folder)
    norms = rep["directions"]["hat"]["dh_norms"]
    assert norms["direction_dh"] == pytest.approx(0.5 * torch.Size(backbone.h_shape).numel() ** 0.5, rel=1e-3)
    assert norms["exact_edit_h_change"] > 0 and norms["ratio"] == pytest.approx(norms["direction_dh"] / norms["exact_edit_h_change"])
    assert norms["n_faces"] == rep["directions"]["hat"]["n_edited"] and rep["directions"]["eyes_closed"]["dh_norms"] is None
    hats = sum(not factors_for(1_000_003, i).hat for i in range(6))
    assert rep["directions"]["hat"]["n_edited"] == hats
    assert rep["directions"]["eyes_closed"]["n_edited"] == sum(factors_for(1_000_003, i).eyes_open for i in range(6))
    for name, r in rep["directions"].items():
        assert 0.0 <= r["min_preserved"] <= 1.0 and r["worst_factor"] in r["preservation"]
    assert "hat" not in rep["directions"]["hat"]["preservation"] and rep["passed"] is None
    # its rows in the check's table, and the CLI accepts it by name (it is not among the default checks)
    from hspace.cli.toyworld_build import CHECKS, _markdown

    table = _markdown({"h-oracle": rep})
    assert table.count("h of its exact edit") == 2 and table.count("abs(dh) of the direction file") == 1
    assert "h-oracle" not in CHECKS
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "h-oracle", "--model", str(tmp_path / "missing"),
                                   "--out", str(tmp_path / "q")])
    assert res.exit_code != 0 and "missing" in res.output and "unknown check" not in res.output
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "probe", "--by-level", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "only change the h-oracle check" in res.output
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "probe", "--oracle-t-edit-max", "700", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "only change the h-oracle check" in res.output
    res = CliRunner().invoke(app, ["toyworld", "check", "--only", "h-oracle", "--oracle-t-edit", "500",
                                   "--oracle-t-edit-max", "400", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "--oracle-t-edit-max must be a timestep in 500..999" in res.output
    assert not (tmp_path / "q").exists()


@needs_probe
def test_check_h_oracle_by_level(probe):
    from hspace.cli.toyworld_build import _markdown
    from hspace.toyworld.quality import check_h_oracle

    rep = check_h_oracle(_tame64(), probe, names=["hat"], n=4, steps=4, progress=False, log=lambda s: None,
                         by_level=True, t_edit=300, t_edit_max=800)
    assert rep["level_sets"] == ["h+16", "h+16+32", "h+16+32+64"] and rep["t_edit"] == 300 and rep["t_edit_max"] == 800
    by = rep["directions"]["hat"]["by_level"]
    assert list(by) == rep["level_sets"]
    for v in by.values():
        assert 0.0 <= v["min_preserved"] <= 1.0 and "hat" not in v["preservation"]
    table = _markdown({"h-oracle": rep})
    assert table.count("skip levels in px") == 3 and "300 <= t <= 800" in table


def test_refine_reading_recovers_a_shifted_pose_and_smile():
    """Render and compare walks an off reading back to the face's own pose: the error it reports
    is the rendering's, and it falls to near zero from one that a few pixels' shift makes large."""
    from hspace.toyworld.faces import factors_for
    from hspace.toyworld.quality import _render_error, refine_reading

    f = factors_for(1_000_003, 2).to_dict()
    image = face_images(1_000_003, 3)[2]
    assert _render_error(f, image, 4) < 1e-3  # the face is its own rendering
    off = dict(f, dx=f["dx"] + 0.006, tilt=f["tilt"] - 1.0, smile=max(-1.0, f["smile"] - 0.08))
    start = _render_error(off, image, 4)
    got, err = refine_reading(off, image)
    assert start > 0.01 and err < 0.25 * start
    assert err == pytest.approx(_render_error(got, image, 4))
    assert abs(got["dx"] - f["dx"]) < 0.003 and abs(got["tilt"] - f["tilt"]) < 0.5
    assert {k: v for k, v in got.items() if k not in ("dx", "dy", "scale", "tilt", "smile")} == {
        k: v for k, v in f.items() if k not in ("dx", "dy", "scale", "tilt", "smile")}


def test_train_directions_refuses_an_empty_band_before_any_work(tmp_path):
    # smiling's file asks for the band t <= 700 (edit_t_max): a t_edit above it would edit nothing
    out = tmp_path / "dirs"
    res = CliRunner().invoke(app, ["toyworld", "train-directions", "--only", "smiling", "--t-edit", "800",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "smiling" in res.output and "below its t_edit 800" in res.output
    res = CliRunner().invoke(app, ["toyworld", "train-directions", "--only", "glasses", "--t-edit-max", "200",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "band top 200" in res.output
    res = CliRunner().invoke(app, ["toyworld", "train-directions", "--only", "glasses", "--w-off", "-1",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "--w-off must be >= 0" in res.output
    assert not out.exists()  # refused before loading or writing anything


def test_train_direction_follows_the_recipes_kind_and_weights(tmp_path):
    """DirectionRecipe.kind picks the direction type (the sweep compares them); the objective's
    weights are recorded in the file's meta."""
    from hspace.backbones.registry import load_diffusers_folder
    from hspace.encoders import build_tiny_clip
    from hspace.toyworld.train_unet import TINY_UNET, build_unet, make_scheduler

    model = tmp_path / "candidate"
    build_unet(dict(TINY_UNET, sample_size=64)).save_pretrained(model)
    make_scheduler().save_pretrained(model)
    backbone = load_diffusers_folder(model)
    images = face_images(0, 1)
    recipe = DirectionRecipe(n_images=1, n_steps=4, n_inv_steps=4, kind="global", lr=1.0, w_off=2.0, precision="fp32")
    latents = Editor(backbone, EditConfig(n_inv_steps=4, n_steps=4, progress=False)).invert(images)
    out = train_direction(backbone, build_tiny_clip(), TOY_DIRECTIONS["glasses"], recipe, latents, images, progress=False)
    assert isinstance(out.direction, GlobalDirection) and out.steps > 0
    assert out.direction.meta.extra["weights"] == {"clip": 1.0, "l1": 3.0, "off": 2.0}
    with pytest.raises(ValueError, match="direction_kind"):
        train_direction(backbone, build_tiny_clip(), TOY_DIRECTIONS["glasses"],
                        dataclasses.replace(recipe, kind="bogus"), latents, images, progress=False)
