"""DDPM 'simple' checkpoints converted to diffusers UNet2DModel: strict conversion and golden outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from hspace.backbones.base import Backbone
from hspace.backbones.ddpm_simple import (
    DDPM_BEDROOM_256,
    DDPM_CELEBAHQ_256,
    DDPM_CHURCH_256,
    DDPM_CIFAR10_32,
    DDPMSimpleConfig,
    OfficialDDPMTimesteps,
    build_ddpm_simple_unet,
    config_from_official_yaml_dict,
    convert_ddpm_state_dict,
    ddpm_key_map,
    extract_state_dict,
    infer_ddpm_config,
    load_ddpm_simple,
    unet2d_kwargs,
)
from hspace.directions import ImplicitDirection

NET = dict(rtol=1e-5, atol=2e-5)  # README tolerance for network tensors


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def small(reference_dir: Path) -> Path:
    return reference_dir / "ddpm_small"


@pytest.fixture
def small_config(small: Path) -> DDPMSimpleConfig:
    return config_from_official_yaml_dict(json.loads((small / "config.json").read_text()))


@pytest.fixture
def small_sd(small: Path) -> dict[str, torch.Tensor]:
    return load_file(str(small / "state_dict.safetensors"))


@pytest.fixture
def small_backbone(small: Path, small_config: DDPMSimpleConfig):
    return load_ddpm_simple(small / "state_dict.safetensors", small_config, "golden/ddpm_small")


@pytest.fixture
def edit_layer(small: Path) -> ImplicitDirection:
    f = ImplicitDirection("ddpm", 64, 128)
    f.load_official_state_dict(load_file(str(small / "edit_layer0_state_dict.safetensors")))
    return f.eval()


@pytest.fixture
def real_keys(small: Path) -> dict:
    return json.loads((small / "real_ddpm_celebahq_keys.json").read_text())


def _meta_state_dict(real_keys: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in real_keys["keys"] if not k.startswith("layer_0.")}


# ----------------------------------------------------------------------------------------------
# configs


def test_config_from_official_yaml_dict(small: Path, small_config: DDPMSimpleConfig) -> None:
    assert small_config == DDPMSimpleConfig(
        ch=32, out_ch=3, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,), dropout=0.0,
        resamp_with_conv=True, in_channels=3, resolution=32,
    )
    derived = json.loads((small / "config.json").read_text())["derived"]
    assert small_config.temb_ch == derived["temb_ch"]
    assert list(small_config.block_out_channels) == derived["channels_per_level"]
    assert list(small_config.h_shape) == derived["h_shape"][1:]
    # unwrapped yml layout, lists instead of tuples
    inner = json.loads((small / "config.json").read_text())["config"]
    assert config_from_official_yaml_dict(inner) == small_config


def test_named_configs(real_keys: dict) -> None:
    assert config_from_official_yaml_dict(real_keys["config"]) == DDPM_CELEBAHQ_256
    # church / bedroom: same architecture as CelebA-HQ in the DDIM/SDEdit/Asyrp ymls
    assert DDPM_CHURCH_256 == DDPM_CELEBAHQ_256 == DDPM_BEDROOM_256
    assert DDPM_CELEBAHQ_256.h_shape == (512, 8, 8)
    assert DDPM_CIFAR10_32.h_shape == (256, 4, 4)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="model.type"):
        config_from_official_yaml_dict({"model": {"type": "ncsn"}, "data": {"image_size": 32}})
    with pytest.raises(ValueError, match="missing"):
        config_from_official_yaml_dict({"model": {"ch": 32}, "data": {}})
    with pytest.raises(ValueError, match="ch_mult\\[0\\]"):
        unet2d_kwargs(DDPMSimpleConfig(ch=32, ch_mult=(2, 2), resolution=32))
    with pytest.raises(ValueError, match="resamp_with_conv"):
        unet2d_kwargs(DDPMSimpleConfig(ch=32, ch_mult=(1, 2), resolution=32, resamp_with_conv=False))
    with pytest.raises(ValueError, match="divisible"):
        DDPMSimpleConfig(resolution=100)


def test_unet2d_kwargs_block_layout() -> None:
    kw = unet2d_kwargs(DDPM_CELEBAHQ_256)
    assert kw["down_block_types"] == ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D")
    assert kw["up_block_types"] == ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4
    assert kw["block_out_channels"] == (128, 128, 256, 256, 512, 512)
    assert (kw["norm_eps"], kw["freq_shift"], kw["flip_sin_to_cos"], kw["downsample_padding"]) == (1e-6, 1, False, 0)


# ----------------------------------------------------------------------------------------------
# real 256 px model: key list and shapes only (meta device, no memory)


def test_real_celebahq_conversion_covers_every_key(real_keys: dict) -> None:
    unet = build_ddpm_simple_unet(DDPM_CELEBAHQ_256, device="meta")
    n_params = sum(p.numel() for p in unet.parameters())
    assert n_params == real_keys["num_params"] == 113_673_219
    sd = _meta_state_dict(real_keys)
    assert len(sd) == 450
    converted = convert_ddpm_state_dict(sd, DDPM_CELEBAHQ_256)
    target = unet.state_dict()
    assert set(converted) == set(target)
    for k, v in converted.items():
        assert v.shape == target[k].shape, k
    # the map is a bijection and follows the documented up-path reversal
    key_map = ddpm_key_map(DDPM_CELEBAHQ_256)
    assert set(key_map) == set(sd) and len(set(key_map.values())) == len(key_map)
    assert key_map["up.5.block.2.nin_shortcut.weight"] == "up_blocks.0.resnets.2.conv_shortcut.weight"
    assert key_map["up.4.attn.2.proj_out.weight"] == "up_blocks.1.attentions.2.to_out.0.weight"
    assert key_map["up.1.upsample.conv.bias"] == "up_blocks.4.upsamplers.0.conv.bias"
    assert key_map["mid.block_2.temb_proj.weight"] == "mid_block.resnets.1.time_emb_proj.weight"
    assert key_map["temb.dense.1.bias"] == "time_embedding.linear_2.bias"
    assert infer_ddpm_config(sd, 256) == DDPM_CELEBAHQ_256


def test_real_celebahq_h_shape_on_meta(real_keys: dict) -> None:
    unet = build_ddpm_simple_unet(DDPM_CELEBAHQ_256, device="meta")
    x = torch.empty(1, 3, 256, 256, device="meta")
    emb = unet.time_embedding(unet.time_proj(torch.zeros(1, device="meta")))
    sample, skips = unet.conv_in(x), ()
    for block in unet.down_blocks:
        sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    assert tuple(unet.mid_block(sample, emb).shape[1:]) == DDPM_CELEBAHQ_256.h_shape
    assert emb.shape[1] == 512


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda sd: sd.pop("mid.attn_1.q.weight"), "missing keys: 1 \\[mid.attn_1.q.weight\\]"),
        (lambda sd: sd.__setitem__("extra.weight", torch.empty(3, device="meta")), "unexpected keys: 1 \\[extra.weight\\]"),
        (
            lambda sd: sd.__setitem__("up.0.block.1.conv1.weight", torch.empty(128, 256, 1, 1, device="meta")),
            "shape mismatches: 1 \\[up.0.block.1.conv1.weight: got \\[128, 256, 1, 1\\], expected \\[128, 256, 3, 3\\]\\]",
        ),
        (
            lambda sd: sd.__setitem__("layer_0.conv1.weight", torch.empty(512, 512, 1, 1, device="meta")),
            "ImplicitDirection",
        ),
    ],
)
def test_corrupted_state_dict_is_named(real_keys: dict, corrupt, expected: str) -> None:
    sd = _meta_state_dict(real_keys)
    corrupt(sd)
    with pytest.raises(ValueError, match=expected) as err:
        convert_ddpm_state_dict(sd, DDPM_CELEBAHQ_256, source="celeba_hq.ckpt")
    assert "celeba_hq.ckpt" in str(err.value) and "fix:" in str(err.value)


def test_many_missing_keys_are_summarised(real_keys: dict) -> None:
    sd = {k: v for k, v in _meta_state_dict(real_keys).items() if not k.startswith("up.")}
    with pytest.raises(ValueError, match=r"missing keys: \d+ \[.*\(\+\d+ more\)\]"):
        convert_ddpm_state_dict(sd, DDPM_CELEBAHQ_256)


def test_wrong_config_is_refused(real_keys: dict) -> None:
    with pytest.raises(ValueError, match="ddpm-cifar10-32"):
        convert_ddpm_state_dict(_meta_state_dict(real_keys), DDPM_CIFAR10_32)


# ----------------------------------------------------------------------------------------------
# golden outputs of the reduced official model


def test_sinusoid_matches_official(reference_dir: Path) -> None:
    g = load_file(str(reference_dir / "deltablock_golden.safetensors"))
    unet = build_ddpm_simple_unet(DDPM_CELEBAHQ_256, device="meta")
    assert isinstance(unet.time_proj, OfficialDDPMTimesteps)
    emb = unet.time_proj(g["timesteps_999_500"])
    assert_close(emb, g["ddpm.sinusoid_dim128_t999_500"], rtol=0, atol=0)
    # integer timesteps give the same embedding
    assert_close(unet.time_proj(torch.tensor([999, 500])), emb, rtol=0, atol=0)


def test_convert_small_state_dict(small_sd, small_config, small) -> None:
    converted = convert_ddpm_state_dict(small_sd, small_config)
    unet = build_ddpm_simple_unet(small_config)
    unet.load_state_dict(converted, strict=True)
    official_order = [k for k, _ in json.loads((small / "keys.json").read_text())["keys"]]
    assert sorted(official_order) == sorted(small_sd)
    assert sum(p.numel() for p in unet.parameters()) == 1_525_411
    assert infer_ddpm_config(small_sd, 32) == small_config
    # DataParallel prefix is accepted
    assert set(convert_ddpm_state_dict({f"module.{k}": v for k, v in small_sd.items()}, small_config)) == set(converted)


def test_backbone_reproduces_eps_h_temb(small_backbone, small) -> None:
    io = load_file(str(small / "io.safetensors"))
    assert isinstance(small_backbone, Backbone)
    assert small_backbone.h_shape == (64, 4, 4) and small_backbone.temb_dim == 128
    with torch.no_grad():
        enc = small_backbone.encode(io["x"], io["t"])
        eps = small_backbone.decode(enc)
    assert_close(enc.h, io["h"], **NET)
    assert_close(enc.temb, io["temb"], **NET)
    assert_close(eps, io["eps"], **NET)


def test_backbone_schedule_is_linear_ddpm(small_backbone, reference_dir: Path) -> None:
    sched = load_file(str(reference_dir / "schedule_float32.safetensors"))
    assert_close(small_backbone.alphas_cumprod, sched["alphas_cumprod"], rtol=0, atol=0)
    assert small_backbone.schedule_config["beta_schedule"] == "linear"


def test_edit_path_reproduces_official(small_backbone, edit_layer, small) -> None:
    io = load_file(str(small / "io.safetensors"))
    with torch.no_grad():
        enc = small_backbone.encode(io["x"], io["t"])
        dh = edit_layer(enc.h, enc.t, enc.temb)
        eps_edit = small_backbone.decode(enc, enc.h + 0.8 * dh)
        dh_it = edit_layer(enc.h, enc.t, None)
        eps_edit_it = small_backbone.decode(enc, enc.h + 0.8 * dh_it)
    assert_close(dh, io["edit.delta_h"], **NET)
    assert_close(eps_edit, io["edit.eps_edit"], **NET)
    assert_close(dh_it, io["edit_ignore_timestep.delta_h"], **NET)
    assert_close(eps_edit_it, io["edit_ignore_timestep.eps_edit"], **NET)


@pytest.mark.parametrize("case, coeff", [("edit_t999_eta0", 0.8), ("edit_t486_eta1", -1.5), ("inversion_t0_to_t25", None)])
def test_ddim_step_network_outputs(small_backbone, edit_layer, small, case: str, coeff: float | None) -> None:
    ds = load_file(str(small / "ddim_step.safetensors"))
    with torch.no_grad():
        enc = small_backbone.encode(ds["x_t"], ds[f"{case}.t"])
        assert_close(small_backbone.decode(enc), ds[f"{case}.eps_raw"], **NET)
        if coeff is not None:
            eps_edit = small_backbone.decode(enc, enc.h + coeff * edit_layer(enc.h, enc.t, enc.temb))
            assert_close(eps_edit, ds[f"{case}.eps_edit_raw"], **NET)


# ----------------------------------------------------------------------------------------------
# file formats


def test_load_from_files(tmp_path: Path, small_sd, small_config, small) -> None:
    io = load_file(str(small / "io.safetensors"))
    x, t = io["x"][:1], io["t"][:1]
    # A wrapped list as DDIM training saves it: [model, optimizer, epoch, step]
    torch.save([small_sd, {"state": {}}, 3, 1000], tmp_path / "ckpt.pth")
    torch.save({"model": small_sd, "epoch": 1}, tmp_path / "wrapped.pt")
    torch.save(small_sd, tmp_path / "bare.ckpt")
    save_file(small_sd, str(tmp_path / "model.safetensors"))
    with torch.no_grad():
        want = load_ddpm_simple(small_sd, small_config).eps(x, t)
        for name in ("ckpt.pth", "wrapped.pt", "bare.ckpt", "model.safetensors"):
            bb = load_ddpm_simple(tmp_path / name, small_config)
            assert bb.backbone_id == str((tmp_path / name).resolve())
            assert_close(bb.eps(x, t), want, rtol=1e-6, atol=1e-5)  # same weights; kernels may differ by alignment


def test_load_errors(tmp_path: Path, small_config) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_ddpm_simple(tmp_path / "nope.ckpt", small_config)
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="suffix"):
        load_ddpm_simple(tmp_path / "w.npz", small_config)
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "opt.pth")
    with pytest.raises(ValueError, match="no model state dict"):
        load_ddpm_simple(tmp_path / "opt.pth", small_config)
    with pytest.raises(ValueError, match="no model state dict"):
        extract_state_dict([1, 2], "x")
