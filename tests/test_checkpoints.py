"""hspace.backbones.checkpoints: named real models, described without weights, loaded strictly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hspace.backbones import checkpoints, registry
from hspace.backbones.adm import ADMBackbone, ADMConfig, ADMUNet
from hspace.backbones.checkpoints import (
    NAMED_MODELS,
    NamedModel,
    describe_named,
    find_weights,
    list_named,
    load_named,
    split_model_spec,
)
from hspace.backbones.registry import ModelNotAvailableError, list_models, load_backbone
from hspace.interval import resolve_preset

SMALL_ARGS = dict(  # adm_small's constructor arguments (reference/asyrp-official/adm_small/config.json)
    image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(2, 4),
    dropout=0.0, channel_mult=(1, 2, 2, 2), num_classes=None, num_heads=4, num_head_channels=16,
    num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=False,
)


@pytest.fixture(autouse=True)
def empty_weight_dirs(monkeypatch, tmp_path: Path) -> Path:
    """No weights anywhere unless a test puts them there."""
    wdir = tmp_path / "weights_env"
    wdir.mkdir()
    monkeypatch.setenv("HSPACE_WEIGHTS", str(wdir))
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path / "cache"))
    return wdir


@pytest.fixture
def tiny_entry(monkeypatch) -> NamedModel:
    """A named entry with adm_small's architecture, registered for the duration of a test."""
    entry = NamedModel(
        name="adm:tiny-test",
        family="adm",
        description="test model",
        config=ADMConfig(**SMALL_ARGS),
        weights_file="tiny_test.pt",
        source="the test itself",
        interval_preset="celeba",
    )
    monkeypatch.setitem(NAMED_MODELS, entry.name, entry)
    return entry


@pytest.fixture
def tiny_model() -> ADMUNet:
    torch.manual_seed(0)
    return ADMUNet(ADMConfig(**SMALL_ARGS)).eval()


def _x() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([999.0, 10.0])


# ------------------------------------------------------------------ the table


@pytest.mark.parametrize("name", list(NAMED_MODELS))
def test_describe_every_named_model_without_weights(name):
    m = NAMED_MODELS[name]
    d = describe_named(name)
    json.dumps(d)  # JSON-able
    assert d["name"] == name and d["family"] == m.family and d["weights_file"] == m.weights_file
    assert d["found"] is None and m.weights_file in d["put_it"] and "HSPACE_WEIGHTS" in d["put_it"]
    assert d["source"] and d["image_size"] == 256
    want_h = (1024, 8, 8) if name == "adm:imagenet-256-uncond" else (512, 8, 8)
    assert tuple(d["h_shape"]) == want_h and d["temb_dim"] == want_h[0]
    assert d["num_params"] == m.expected["num_params"]
    assert tuple(d["h_shape"]) == tuple(m.expected["h_shape"]) and d["temb_dim"] == m.expected["temb_dim"]
    assert d["schedule"] == {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
    if m.interval_preset is not None:
        assert resolve_preset(m.interval_preset) == m.interval_preset
    assert name in list_named() and list_models()[name] == m.description


def test_p2_family_matches_the_official_builder(reference_dir):
    built = json.loads((reference_dir / "adm_small" / "config.json").read_text())[
        "real_256_models_as_built_by_official_script_util"
    ]
    for name, key in [
        ("adm:p2-celebahq-256", "CelebA_HQ_P2"),
        ("adm:p2-metfaces-256", "MetFACE"),
        ("adm:iddpm-afhqdog-256", "AFHQ_dog_and_FFHQ"),
        ("adm:p2-ffhq-256", "AFHQ_dog_and_FFHQ"),
        ("adm:iddpm-ffhq-256", "AFHQ_dog_and_FFHQ"),
    ]:
        assert NAMED_MODELS[name].config == ADMConfig.from_dict(built[key]["unet_constructor_args"]), name
    # The official builder adds an unused class embedding to the unconditional ImageNet model;
    # we describe the checkpoint as published (no label_emb) and accept either when loading.
    official = ADMConfig.from_dict(built["IMAGENET_256_uncond_ADM"]["unet_constructor_args"])
    assert NAMED_MODELS["adm:imagenet-256-uncond"].config == replace(official, num_classes=None)
    assert NAMED_MODELS["adm:imagenet-256-uncond"].label_emb_optional


def test_ddpm_entries_match_the_real_key_list(reference_dir):
    ref = json.loads((reference_dir / "ddpm_small" / "real_ddpm_celebahq_keys.json").read_text())
    for name in ("ddpm:celebahq-256", "ddpm:church-256", "ddpm:bedroom-256"):
        assert NAMED_MODELS[name].expected["num_params"] == ref["num_params"]


def test_split_model_spec():
    assert split_model_spec("adm:p2-celebahq-256") == ("adm:p2-celebahq-256", None)
    assert split_model_spec("adm:p2-celebahq-256=/data/p2.pt") == ("adm:p2-celebahq-256", "/data/p2.pt")
    with pytest.raises(ValueError, match="nothing after"):
        split_model_spec("adm:p2-celebahq-256=")


# ------------------------------------------------------------------ missing weights


@pytest.mark.parametrize("name", ["adm:p2-celebahq-256", "ddpm:church-256", "adm:imagenet-256-uncond"])
def test_missing_weights_say_what_and_where(name):
    m = NAMED_MODELS[name]
    for call in (lambda: load_named(name), lambda: load_backbone(name)):
        with pytest.raises(ModelNotAvailableError) as err:
            call()
        msg = str(err.value)
        assert name in msg and m.weights_file in msg and "HSPACE_WEIGHTS" in msg and f"--model {name}=PATH" in msg
        assert m.source.split()[0] in msg


def test_unknown_named_model():
    with pytest.raises(ValueError, match="adm:p2-celebahq-256"):
        load_backbone("adm:nope-256")
    with pytest.raises(ValueError, match="unknown named model"):
        describe_named("ddpm:nope")


def test_explicit_missing_path():
    with pytest.raises(FileNotFoundError, match="celebahq_p2.pt"):
        load_named("adm:p2-celebahq-256", weights="/nonexistent/p2.pt")


# ------------------------------------------------------------------ loading (tiny stand-in entry)


def test_load_from_hspace_weights_pt(tiny_entry, tiny_model, empty_weight_dirs):
    torch.save(tiny_model.state_dict(), empty_weight_dirs / "tiny_test.pt")
    assert find_weights("adm:tiny-test") == empty_weight_dirs / "tiny_test.pt"
    assert describe_named("adm:tiny-test")["found"] == str(empty_weight_dirs / "tiny_test.pt")
    bb = load_named("adm:tiny-test")
    assert isinstance(bb, ADMBackbone) and bb.backbone_id == "adm:tiny-test"
    x, t = _x()
    with torch.no_grad():
        assert torch.equal(bb.eps(x, t), tiny_model(x, t)[:, :3])
    assert bb.schedule_config["beta_schedule"] == "linear"


def test_load_from_cache_dir_and_spec_string(tiny_entry, tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("HSPACE_WEIGHTS")
    cache_weights = tmp_path / "cache" / "weights"
    cache_weights.mkdir(parents=True)
    torch.save({"state_dict": tiny_model.state_dict()}, cache_weights / "tiny_test.pt")  # wrapped checkpoint
    x, t = _x()
    with torch.no_grad():
        ref = tiny_model(x, t)[:, :3]
        assert torch.equal(load_named("adm:tiny-test").eps(x, t), ref)
        st = tmp_path / "elsewhere" / "tiny.safetensors"
        st.parent.mkdir()
        save_file(tiny_model.state_dict(), str(st))
        bb = load_backbone(f"adm:tiny-test={st}", dtype="bfloat16")
        assert bb.backbone_id == "adm:tiny-test" and bb.dtype == torch.bfloat16
        assert bb.alphas_cumprod.dtype == torch.float32
        bb32 = load_named("adm:tiny-test", weights=st)
        assert torch.equal(bb32.eps(x, t), ref)


def test_wrong_keys_are_refused_by_name(tiny_entry, tiny_model, empty_weight_dirs):
    sd = tiny_model.state_dict()
    sd.pop("input_blocks.3.1.proj_out.weight")
    sd["input_blocks.3.1.proj_out.weight_bogus"] = torch.zeros(3)
    path = empty_weight_dirs / "tiny_test.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        load_named("adm:tiny-test")
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys: 1 [input_blocks.3.1.proj_out.weight]" in msg
    assert "unexpected keys: 1 [input_blocks.3.1.proj_out.weight_bogus]" in msg


def test_asyrp_edit_layers_in_file_are_ignored(tiny_entry, tiny_model, empty_weight_dirs):
    sd = dict(tiny_model.state_dict())
    sd["layer_0.in_layers.0.weight"] = torch.ones(64)
    torch.save(sd, empty_weight_dirs / "tiny_test.pt")
    assert "layer_0.in_layers.0.weight" not in load_named("adm:tiny-test").model.state_dict()


def test_optional_label_embedding(tiny_entry, monkeypatch, empty_weight_dirs):
    entry = replace(tiny_entry, label_emb_optional=True)
    monkeypatch.setitem(NAMED_MODELS, entry.name, entry)
    torch.manual_seed(0)
    cond = ADMUNet(replace(entry.config, num_classes=5)).eval()
    torch.save(cond.state_dict(), empty_weight_dirs / "tiny_test.pt")
    bb = load_named("adm:tiny-test")
    assert bb.model.label_emb.weight.shape == (5, 128)
    x, t = _x()
    with torch.no_grad():
        eps_cond = bb.eps(x, t)
    sd = {k: v for k, v in cond.state_dict().items() if k != "label_emb.weight"}
    torch.save(sd, empty_weight_dirs / "tiny_test.pt")
    bb = load_named("adm:tiny-test")
    assert not hasattr(bb.model, "label_emb")
    with torch.no_grad():
        assert torch.equal(bb.eps(x, t), eps_cond)  # the class embedding is never used


def test_registry_lists_named_and_keeps_builtins():
    models = registry.list_models()
    assert "tiny-random" in models and "adm:p2-celebahq-256" in models and "ddpm:bedroom-256" in models
    assert not any("RANDOM" in models[n].upper() for n in checkpoints.list_named())


def test_ddpm_family_routes_to_the_ddpm_loader(monkeypatch, reference_dir, empty_weight_dirs):
    """A ``ddpm:*`` entry loads through hspace.backbones.ddpm_simple (golden reduced DDPM as stand-in)."""
    ddpm_simple = pytest.importorskip("hspace.backbones.ddpm_simple")
    from safetensors.torch import load_file

    small = reference_dir / "ddpm_small"
    cfg = ddpm_simple.config_from_official_yaml_dict(json.loads((small / "config.json").read_text()), name="small")
    monkeypatch.setattr(ddpm_simple, "DDPM_TINY_TEST", cfg, raising=False)
    entry = NamedModel(
        name="ddpm:tiny-test", family="ddpm", description="test", config="DDPM_TINY_TEST",
        weights_file="tiny_ddpm.ckpt", source="the test itself", interval_preset="celeba",
    )
    monkeypatch.setitem(NAMED_MODELS, entry.name, entry)
    torch.save(load_file(str(small / "state_dict.safetensors")), empty_weight_dirs / "tiny_ddpm.ckpt")
    d = describe_named("ddpm:tiny-test")
    assert d["computed"] and tuple(d["h_shape"]) == (64, 4, 4) and d["temb_dim"] == 128 and d["num_params"] == 1_525_411
    bb = load_backbone("ddpm:tiny-test")
    assert bb.backbone_id == "ddpm:tiny-test" and bb.h_shape == (64, 4, 4)
    io = load_file(str(small / "io.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(io["x"], io["t"]), io["eps"], rtol=1e-5, atol=2e-5)
