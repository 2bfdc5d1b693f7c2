"""hspace.backbones.adm: our guided-diffusion U-Net against the official golden data.

Golden files: ``reference/asyrp-official/adm_small`` (a reduced official ``UNetModel`` with the
real models' structural flags) and ``deltablock_golden.safetensors``. Real 256 px models are
checked by key names, shapes and parameter counts, built on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hspace.backbones.adm import (
    ADMBackbone,
    ADMConfig,
    ADMUNet,
    build_adm_unet,
    count_parameters,
    load_adm_checkpoint,
    timestep_embedding,
)
from hspace.backbones.base import Backbone
from hspace.directions.implicit import ImplicitDirection
from hspace.schedule import default_alphas_cumprod

TOL = dict(rtol=1e-5, atol=2e-5)


@lru_cache(maxsize=None)
def _small(folder: str) -> tuple[ADMBackbone, dict, dict]:
    root = Path(folder) / "adm_small"
    cfg_json = json.loads((root / "config.json").read_text())
    cfg = ADMConfig.from_dict(cfg_json["unet_constructor_args"])
    bb = load_adm_checkpoint(root / "state_dict.safetensors", cfg, "adm-small")
    return bb, load_file(str(root / "io.safetensors")), cfg_json


@pytest.fixture
def small(reference_dir: Path) -> tuple[ADMBackbone, dict, dict]:
    return _small(str(reference_dir))


def _tiny(seed: int = 0, **overrides) -> ADMUNet:
    """A small ADM U-Net with non-trivial random weights (nothing zero-initialised)."""
    args = dict(
        image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(2,),
        channel_mult=(1, 2), num_head_channels=16, out_channels=6,
    )
    args.update(overrides)
    torch.manual_seed(seed)
    model = ADMUNet(ADMConfig(**args))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


# ------------------------------------------------------------------ golden: reduced official model


def test_keys_and_shapes_match_official_order(small, reference_dir):
    bb, _, _ = small
    keys = json.loads((reference_dir / "adm_small" / "keys.json").read_text())
    sd = bb.model.state_dict()
    assert [k for k, _ in keys["keys"]] == list(sd)
    assert {k: list(s) for k, s in keys["keys"]} == {k: list(v.shape) for k, v in sd.items()}
    assert count_parameters(bb.model) == keys["num_params"] == 1_965_894


def test_forward_h_temb_match_golden(small):
    bb, io, _ = small
    with torch.no_grad():
        enc = bb.encode(io["x"], io["t"])
        raw = bb.decode_raw(enc)
    assert raw.shape == (2, 6, 32, 32) and enc.h.shape == (2, 64, 4, 4) and enc.temb.shape == (2, 128)
    torch.testing.assert_close(raw, io["eps"], **TOL)
    torch.testing.assert_close(enc.h, io["h"], **TOL)
    torch.testing.assert_close(enc.temb, io["temb"], **TOL)
    assert enc.t.dtype == torch.float32 and torch.equal(enc.t, io["t"])


def test_split_is_exactly_the_full_forward(small):
    bb, io, _ = small
    with torch.no_grad():
        full = bb.model(io["x"], io["t"])
        raw = bb.forward_raw(io["x"], io["t"])
        enc = bb.encode(io["x"], io["t"])
        eps = bb.decode(enc)
        eps2 = bb.eps(io["x"], io["t"])
    assert torch.equal(raw, full)
    assert eps.shape == (2, 3, 32, 32)
    assert torch.equal(eps, full[:, :3]) and torch.equal(eps2, eps)
    assert len(enc.skips) == len(bb.model.output_blocks)


def test_sinusoid_and_time_mlp_match_golden(small, reference_dir):
    bb, _, _ = small
    gold = load_file(str(reference_dir / "deltablock_golden.safetensors"))
    t = gold["timesteps_999_500"]
    emb = timestep_embedding(t, 128)
    # Arguments reach t * f ~ 999 rad, where one float32 ulp is 6.1e-5; torch's float32 exp
    # differs by one ulp between CPUs for a few frequencies (measured: 2 of 64 here, giving
    # 2.9e-5), so the tolerance is two ulps of the largest argument. A wrong order or
    # frequency divisor is off by O(1).
    torch.testing.assert_close(emb, gold["adm.sinusoid_dim128_t999_500"], rtol=0, atol=1.3e-4)
    close = (emb - gold["adm.sinusoid_dim128_t999_500"]).abs() <= 1e-6
    assert close.float().mean() > 0.9
    # the DDPM flavour ([sin, cos], divisor half - 1) must NOT match: the conventions differ
    assert not torch.allclose(emb, gold["ddpm.sinusoid_dim128_t999_500"], atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(bb.model.time_embedding(t), gold["adm_small.temb_t999_500"], **TOL)
    assert timestep_embedding(torch.tensor([3.0]), 7).shape == (1, 7)


@pytest.mark.parametrize("ignore_timestep", [False, True])
def test_edit_path_matches_golden(small, reference_dir, ignore_timestep):
    bb, io, _ = small
    f = ImplicitDirection("adm", 64, 128, ignore_timestep=ignore_timestep)
    f.load_official_state_dict(load_file(str(reference_dir / "adm_small" / "edit_layer0_state_dict.safetensors")))
    prefix = "edit_ignore_timestep" if ignore_timestep else "edit"
    with torch.no_grad():
        enc = bb.encode(io["x"], io["t"])
        dh = f(enc.h, enc.t, enc.temb)
        raw_edit = bb.decode_raw(enc, enc.h + 0.8 * dh)
        eps_edit = bb.decode(enc, enc.h + 0.8 * dh)
    torch.testing.assert_close(dh, io[f"{prefix}.delta_h"], **TOL)
    torch.testing.assert_close(raw_edit, io[f"{prefix}.eps_edit"], **TOL)
    assert torch.equal(eps_edit, raw_edit[:, :3])
    assert (eps_edit - io["eps"][:, :3]).abs().max() > 0.05  # the edit does something


def test_backbone_protocol(small):
    bb, io, _ = small
    assert isinstance(bb, Backbone)
    assert bb.h_shape == (64, 4, 4) and bb.temb_dim == 128 and bb.image_size == 32 and bb.in_channels == 3
    assert torch.equal(bb.alphas_cumprod, default_alphas_cumprod())
    assert bb.schedule_config["beta_schedule"] == "linear" and bb.schedule_config["num_train_timesteps"] == 1000
    assert bb.device == torch.device("cpu") and bb.dtype == torch.float32
    assert not any(p.requires_grad for p in bb.parameters())
    with torch.no_grad():
        a = bb.eps(io["x"], 500)
        b = bb.eps(io["x"], torch.tensor([500.0, 500.0]))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batch"):
        enc = bb.encode(io["x"], io["t"])
        bb.decode(enc, enc.h[:1])
    with pytest.raises(ValueError, match="shape"):
        bb.encode(io["x"], torch.tensor([1.0, 2.0, 3.0]))


def test_reduced_config_matches_adm_config_roundtrip(small):
    _, _, cfg_json = small
    args = cfg_json["unet_constructor_args"]
    cfg = ADMConfig.from_dict(args)
    back = cfg.to_dict()
    for k, v in back.items():
        assert args[k] == v, k
    assert cfg.h_shape == tuple(cfg_json["derived"]["h_shape"][1:])
    with pytest.raises(ValueError, match="dims"):
        ADMConfig.from_dict({**args, "dims": 3})
    with pytest.raises(ValueError, match="unknown"):
        ADMConfig.from_dict({**args, "bogus": 1})


# ------------------------------------------------------------------ real 256 px models (meta device)


def test_real_p2_model_keys_shapes_and_count(reference_dir):
    ref = json.loads((reference_dir / "adm_small" / "real_adm_p2_keys.json").read_text())
    model = build_adm_unet(ref["unet_constructor_args"], device="meta")
    sd = model.state_dict()
    keys = [(k, s) for k, s in ref["keys"] if not k.startswith("layer_")]
    assert [k for k, _ in keys] == list(sd)
    assert {k: list(s) for k, s in keys} == {k: list(v.shape) for k, v in sd.items()}
    assert count_parameters(model) == ref["num_params"] == 93_563_910
    assert model.config.h_shape == (512, 8, 8) and model.config.time_embed_dim == 512
    assert all(p.is_meta for p in model.parameters())


def test_real_models_as_built_by_official_builder(reference_dir):
    built = json.loads((reference_dir / "adm_small" / "config.json").read_text())[
        "real_256_models_as_built_by_official_script_util"
    ]
    p2 = build_adm_unet(built["CelebA_HQ_P2"]["unet_constructor_args"], device="meta")
    for name in ("MetFACE", "AFHQ_dog_and_FFHQ"):
        other = build_adm_unet(built[name]["unet_constructor_args"], device="meta")
        assert {k: v.shape for k, v in other.state_dict().items()} == {k: v.shape for k, v in p2.state_dict().items()}
    imnet = build_adm_unet(built["IMAGENET_256_uncond_ADM"]["unet_constructor_args"], device="meta")
    sd = imnet.state_dict()
    assert sd["label_emb.weight"].shape == (1000, 1024)
    assert imnet.config.h_shape == (1024, 8, 8) and imnet.config.time_embed_dim == 1024
    assert sd["time_embed.0.weight"].shape == (1024, 256)
    assert sd["out.2.weight"].shape == (6, 256, 3, 3)
    # attention at 32, 16 and 8 px with 64-channel heads
    assert sd["input_blocks.10.1.qkv.weight"].shape == (3 * 512, 512, 1)
    assert imnet.middle_block[1].num_heads == 1024 // 64
    uncond = build_adm_unet(replace(imnet.config, num_classes=None), device="meta")
    assert count_parameters(imnet) - count_parameters(uncond) == 1000 * 1024
    assert count_parameters(uncond) == 552_814_086


# ------------------------------------------------------------------ variants without golden data


def test_class_embedding_is_loaded_but_unused():
    cond = _tiny(num_classes=10)
    plain = ADMUNet(replace(cond.config, num_classes=None)).eval()
    plain.load_state_dict({k: v for k, v in cond.state_dict().items() if k != "label_emb.weight"})
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert torch.equal(cond(x, t), plain(x, t))


def test_plain_resampling_and_no_scale_shift():
    model = _tiny(use_scale_shift_norm=False, resblock_updown=False, conv_resample=True)
    sd = model.state_dict()
    assert "input_blocks.2.0.op.weight" in sd and "output_blocks.1.2.conv.weight" in sd
    assert sd["input_blocks.1.0.emb_layers.1.weight"].shape == (32, 128)
    bb = ADMBackbone(model, backbone_id="tiny")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert torch.equal(bb.decode_raw(bb.encode(x, t)), model(x, t))
        # time reaches the output
        assert (bb.eps(x, t) - bb.eps(x, t.flip(0))).abs().max() > 1e-3
    pooled = _tiny(resblock_updown=False, conv_resample=False)
    assert not any(k.endswith((".op.weight", ".conv.weight")) for k in pooled.state_dict())
    with torch.no_grad():
        assert pooled(x, t).shape == (2, 6, 16, 16)


def test_new_attention_order_differs_from_legacy():
    legacy = _tiny()
    new = ADMUNet(replace(legacy.config, use_new_attention_order=True)).eval()
    new.load_state_dict(legacy.state_dict())
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500.0])
    with torch.no_grad():
        a, b = legacy(x, t), new(x, t)
    assert a.shape == b.shape and (a - b).abs().max() > 1e-4
    # with a single head the two orders coincide
    one = _tiny(num_head_channels=-1, num_heads=1)
    one_new = ADMUNet(replace(one.config, use_new_attention_order=True)).eval()
    one_new.load_state_dict(one.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(one(x, t), one_new(x, t))


def test_bfloat16_keeps_schedule_float32():
    bb = ADMBackbone(_tiny(), backbone_id="tiny")
    bb.to(dtype=torch.bfloat16)
    assert bb.dtype == torch.bfloat16 and bb.alphas_cumprod.dtype == torch.float32
    with torch.no_grad():
        eps = bb.eps(torch.randn(1, 3, 16, 16), 300)
    assert eps.dtype == torch.bfloat16 and torch.isfinite(eps.float()).all()


def test_strict_loading_names_keys(tmp_path):
    model = _tiny()
    sd = model.state_dict()
    sd.pop("middle_block.1.qkv.weight")
    sd["middle_block.1.qkv_typo.weight"] = torch.zeros(1)
    sd["out.2.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        load_adm_checkpoint(path, model.config, "tiny")
    msg = str(err.value)
    assert str(path) in msg and "middle_block.1.qkv.weight" in msg and "middle_block.1.qkv_typo.weight" in msg
    assert "missing keys: 1" in msg and "unexpected keys: 1" in msg and "out.2.bias" in msg
    with pytest.raises(FileNotFoundError):
        load_adm_checkpoint(tmp_path / "absent.pt", model.config, "tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_adm_checkpoint(tmp_path / "junk.pt", model.config, "tiny")
