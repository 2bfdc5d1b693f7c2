"""channels_last weights for bf16 (prepare_backbone_for) and where the library applies them."""

from __future__ import annotations

import torch

from conftest import make_tiny_unet
from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.editor import EditConfig, Editor
from hspace.precision import prepare_backbone_for
from hspace.sampler import invert


def conv_weights(bb):
    return [p for p in bb.parameters() if p.dim() == 4 and p.shape[-1] > 1]


def all_channels_last(bb) -> bool:
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(bb))


def test_bf16_converts_weights_once_fp32_does_nothing():
    bb = DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    assert prepare_backbone_for("fp32", bb) is bb and not all_channels_last(bb)
    assert prepare_backbone_for("bf16", bb) is bb and all_channels_last(bb)
    for k, v in bb.state_dict().items():
        assert torch.equal(v, before[k]), k  # same values, other layout
    assert bb.alphas_cumprod.dtype == torch.float32
    prepare_backbone_for("bf16", bb)  # idempotent
    assert all_channels_last(bb)


def test_float32_inversion_nearly_unchanged_with_channels_last_weights():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")
    cl = prepare_backbone_for("bf16", DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny"))
    a, b = invert(plain, x, 6).latents, invert(cl, x, 6).latents
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_editor_and_trainer_prepare_for_bf16_only():
    from hspace.encoders import build_tiny_clip
    from hspace.objectives import make_clip_objective
    from hspace.trainer import TrainConfig, Trainer

    bb = DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")
    Editor(bb, EditConfig(progress=False, cache_latents=False))
    assert not all_channels_last(bb)
    Editor(bb, EditConfig(precision="bf16", progress=False, cache_latents=False))
    assert all_channels_last(bb)
    bb2 = DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")
    obj = make_clip_objective(build_tiny_clip(), "face", "smiling face")
    Trainer(bb2, obj, TrainConfig(progress=False))
    assert not all_channels_last(bb2)
    Trainer(bb2, obj, TrainConfig(precision="bf16", progress=False))
    assert all_channels_last(bb2)
