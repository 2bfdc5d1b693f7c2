"""Interval presets of known models (hub ids, named checkpoints) and where they are used."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from hspace.backbones.checkpoints import NAMED_MODELS
from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.directions import GlobalDirection, load_direction
from hspace.editor import DEFAULT_T_EDIT, EditConfig, Editor, resolve_interval
from hspace.interval import PRESETS, choose_interval
from hspace.presets import HUB_PRESETS, known_presets, no_preset_reason, preset_for_backbone, preset_source

from conftest import make_tiny_unet

CELEBA_ID = "google/ddpm-ema-celebahq-256"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path_factory.getbasetemp() / "hspace-cache"))


def backbone_with_id(backbone_id: str) -> DiffusersUNetBackbone:
    bb = DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")
    bb.backbone_id = backbone_id
    return bb


def cfg(**kw) -> EditConfig:
    return EditConfig(**{"n_inv_steps": 4, "n_steps": 4, "progress": False, "cache_latents": False, **kw})


def direction(bb, **meta):
    return GlobalDirection.for_backbone(bb, 0.1 * torch.randn(bb.h_shape, generator=torch.Generator().manual_seed(0)), **meta)


# ---------------------------------------------------------------------------------------- mapping
def test_hub_ids_map_to_the_papers_presets():
    assert preset_for_backbone("google/ddpm-ema-celebahq-256") == "celeba"
    assert preset_for_backbone("google/ddpm-ema-church-256") == "church"
    assert preset_for_backbone("google/ddpm-ema-bedroom-256") == "bedroom"


def test_cat_has_no_preset_and_says_why():
    assert "google/ddpm-ema-cat-256" in HUB_PRESETS
    assert preset_for_backbone("google/ddpm-ema-cat-256") is None
    assert "LSUN cat" in no_preset_reason("google/ddpm-ema-cat-256")


def test_named_models_use_their_interval_preset():
    for name, m in NAMED_MODELS.items():
        assert preset_for_backbone(name) == m.interval_preset, name
        assert known_presets()[name] == m.interval_preset
    assert preset_for_backbone("ddpm:celebahq-256") == "celeba"
    assert preset_for_backbone("adm:p2-metfaces-256") == "metface"
    assert preset_for_backbone("adm:imagenet-256-uncond") is None
    assert no_preset_reason("adm:imagenet-256-uncond")


def test_every_mapped_preset_exists_and_unknown_ids_give_none():
    for value in known_presets().values():
        assert value is None or value in PRESETS
    for unknown in ("tiny-random", "/home/me/my-unet", "", None, "google/ddpm-cifar10-32"):
        assert preset_for_backbone(unknown) is None
        assert no_preset_reason(unknown) is None


def test_ids_are_normalised():
    assert preset_for_backbone(" Google/DDPM-EMA-CelebAHQ-256/ ") == "celeba"
    assert preset_for_backbone("ddpm:church-256=/data/church_outdoor.ckpt") == "church"
    assert preset_source("celeba", CELEBA_ID) == "preset:celeba for google/ddpm-ema-celebahq-256"


# ---------------------------------------------------------------------------------------- editing
def test_resolve_interval_uses_the_backbones_preset():
    bb = backbone_with_id(CELEBA_ID)
    want = choose_interval("celeba")
    t_edit, t_boost, src = resolve_interval(cfg(), direction(bb), bb.backbone_id)
    assert (t_edit, t_boost) == (want.t_edit, want.t_boost) == (538, 167)
    assert src["t_edit"] == src["t_boost"] == "preset:celeba for google/ddpm-ema-celebahq-256"


def test_resolve_interval_order_user_then_file_then_preset_then_default():
    bb = backbone_with_id(CELEBA_ID)
    assert resolve_interval(cfg(t_edit=700), direction(bb), bb.backbone_id)[:2] == (700, 167)
    t_edit, t_boost, src = resolve_interval(cfg(), direction(bb, t_edit=610), bb.backbone_id)
    assert (t_edit, t_boost) == (610, 167) and src["t_edit"] == "direction file" and src["t_boost"].startswith("preset:celeba")
    assert resolve_interval(cfg(t_edit=600, t_boost=50), direction(bb), bb.backbone_id)[:2] == (600, 50)
    # the direction's own backbone_id is used when none is passed
    assert resolve_interval(cfg(), direction(bb))[:2] == (538, 167)
    other = backbone_with_id("google/ddpm-ema-cat-256")
    t_edit, t_boost, src = resolve_interval(cfg(), direction(other), other.backbone_id)
    assert (t_edit, t_boost) == (DEFAULT_T_EDIT, 0) and "LSUN cat" in src["t_edit"]


def test_resolve_interval_reads_the_preset_at_the_directions_cos_txt():
    bb = backbone_with_id(CELEBA_ID)
    d = direction(bb)
    d.meta = d.meta.replace(extra={"cos_txt": 0.6})
    t_edit, _, src = resolve_interval(cfg(), d, bb.backbone_id)
    assert t_edit == choose_interval("celeba", cos_txt=0.6).t_edit < 538
    assert src["t_edit"] == "preset:celeba for google/ddpm-ema-celebahq-256, cos_txt 0.600"


def test_editor_uses_the_preset(monkeypatch):
    bb = backbone_with_id("google/ddpm-ema-church-256")
    ed = Editor(bb, cfg())
    lat = torch.randn(1, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0))
    out = ed.edit(lat, [(direction(bb), 1.0)])
    want = choose_interval("church")
    assert (out.t_edit, out.t_boost) == (want.t_edit, min(want.t_boost, want.t_edit)) == (396, 293)
    assert out.interval_source["t_edit"] == "preset:church for google/ddpm-ema-church-256"


# ---------------------------------------------------------------------------------------- training
def test_train_interval_uses_the_preset_at_the_texts_cos_txt():
    from hspace.cli.train import choose_train_interval

    bb = backbone_with_id(CELEBA_ID)
    for cos in (1.0, 0.7, 0.4):
        want = choose_interval("celeba", cos_txt=cos)
        t_edit, t_boost, source, _ = choose_train_interval(bb, 40, cos)
        assert (t_edit, t_boost) == (want.t_edit, min(want.t_boost, want.t_edit))
        assert source == f"preset:celeba for {CELEBA_ID}, cos_txt {cos:.3f}"
    assert choose_train_interval(bb, 40, 0.4)[0] < choose_train_interval(bb, 40, 1.0)[0]
    # --t-edit and --preset come first
    assert choose_train_interval(bb, 40, 0.7, t_edit=800)[:3] == (800, None, "--t-edit")
    t_edit, _, source, _ = choose_train_interval(bb, 40, 0.7, preset="church")
    assert t_edit == choose_interval("church", cos_txt=0.7).t_edit and source.startswith("preset:church,")
    # an unknown model falls through to the default
    assert choose_train_interval(backbone_with_id("test/unknown"), 40, 0.7)[0] == 500


def test_cli_train_picks_the_preset(tmp_path, monkeypatch):
    from hspace.cli import common
    from hspace.cli.interval import text_similarity
    from hspace.cli.main import app

    bb = backbone_with_id(CELEBA_ID)
    monkeypatch.setattr(common, "load_model", lambda model, device="cpu": bb)
    out = tmp_path / "smile.safetensors"
    result = CliRunner().invoke(app, ["train", "-m", CELEBA_ID, "--source", "face", "--target", "smiling face",
                                      "--noise", "1", "--clip", "tiny-random-clip", "--steps", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cos = text_similarity("tiny-random-clip", "face", "smiling face")
    want = choose_interval("celeba", cos_txt=cos)
    assert f"preset:celeba for {CELEBA_ID}, cos_txt {cos:.3f}" in result.output
    d = load_direction(out, backbone=bb)
    assert d.meta.t_edit == want.t_edit
    assert d.meta.extra["t_edit_source"].startswith(f"preset:celeba for {CELEBA_ID}")


def test_toy_faces_has_training_defaults_and_others_do_not():
    from hspace.presets import train_defaults_for
    from hspace.toyworld.directions import TOY_FACES_TRAIN_DEFAULTS

    assert train_defaults_for("toy-faces") is TOY_FACES_TRAIN_DEFAULTS
    assert train_defaults_for(" Toy-Faces/ ") is TOY_FACES_TRAIN_DEFAULTS
    # a target text naming a shipped direction gets that direction's recipe; others the default
    from hspace.toyworld.directions import TOY_DIRECTIONS, DirectionRecipe

    for text, name in (("smiling face", "smiling"), ("a face with blond hair", "blond"), ("face with a hat", "hat"),
                       ("face with glasses", "glasses"), ("a face, eyes closed", "eyes_closed")):
        got, spec = train_defaults_for("toy-faces", text), TOY_DIRECTIONS[name]
        assert (got.lr, got.t_edit) == (spec.lr, spec.t_edit or DirectionRecipe().t_edit), text
        assert name in got.why
    assert train_defaults_for("toy-faces", "blond face").lr == 2.0 != train_defaults_for("toy-faces", "face").lr
    for text in ("a face with a beard", "a face", "smiling face with glasses", None):  # none, or two, named
        assert train_defaults_for("toy-faces", text) is TOY_FACES_TRAIN_DEFAULTS, text
    for other in (CELEBA_ID, "tiny-random", "/some/folder", None):
        assert train_defaults_for(other) is None
    # a paper preset (a known model) would come first; toy-faces has none
    assert preset_for_backbone("toy-faces") is None


def _train_toy(tmp_path, monkeypatch, *extra: str):
    from hspace.cli import common
    from hspace.cli.main import app

    bb = backbone_with_id("toy-faces")
    monkeypatch.setattr(common, "load_model", lambda model, device="cpu": bb)
    out = tmp_path / f"d{len(list(tmp_path.iterdir()))}.safetensors"
    result = CliRunner().invoke(app, ["train", "-m", "toy-faces", "--source", "face", "--target", "smiling face",
                                      "--noise", "1", "--clip", "tiny-random-clip", "--steps", "4", "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output, load_direction(out, backbone=bb)


def test_cli_train_uses_the_models_training_defaults_where_none_are_given(tmp_path, monkeypatch):
    from hspace.presets import train_defaults_for
    from hspace.toyworld.directions import TOY_DIRECTIONS

    own = train_defaults_for("toy-faces", "smiling face")  # the text _train_toy trains
    assert own.lr == TOY_DIRECTIONS["smiling"].lr
    output, d = _train_toy(tmp_path, monkeypatch)
    assert "toy-faces training defaults: the shipped smiling direction's recipe" in output
    assert d.meta.t_edit == own.t_edit and d.meta.t_edit_max == own.t_edit_max
    assert d.meta.extra["training"]["lr"] == own.lr
    assert d.meta.extra["weights"]["off"] == own.w_off
    # what the user gives wins, and the model's band is not put over another t_edit
    output, d = _train_toy(tmp_path, monkeypatch, "--lr", "0.03", "--w-off", "0", "--t-edit", "900")
    assert d.meta.t_edit == 900 and d.meta.t_edit_max is None
    assert d.meta.extra["training"]["lr"] == 0.03 and d.meta.extra["weights"]["off"] == 0.0
    assert "training defaults" not in output


def test_cli_train_refuses_a_negative_off_axis_weight_before_any_work(tmp_path):
    from hspace.cli.main import app

    out = tmp_path / "never.safetensors"
    result = CliRunner().invoke(app, ["train", "-m", "tiny-random", "--source", "face", "--target", "smiling face",
                                      "--noise", "1", "--w-off", "-1", "-o", str(out)])
    assert result.exit_code == 2 and "--w-off must be >= 0" in result.output
    assert not out.exists() and not list(tmp_path.iterdir())
