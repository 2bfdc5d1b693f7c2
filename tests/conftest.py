"""Shared fixtures: tiny randomly initialised backbones built from configs, and the golden folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "asyrp-official"


def tiny_unet_config(**overrides) -> dict:
    """A 32x32 UNet2DModel with 32/64/64 channels; h is [64, 8, 8]."""
    cfg = dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=16,
    )
    cfg.update(overrides)
    return cfg


def make_tiny_unet(seed: int = 0, **overrides) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(**tiny_unet_config(**overrides))
    # Diffusers zero-initialises nothing here, but small random perturbations of norms make bugs visible.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * (2 * torch.rand(p.shape, generator=g) - 1))
    return unet.eval()


@pytest.fixture
def tiny_backbone() -> DiffusersUNetBackbone:
    return DiffusersUNetBackbone(make_tiny_unet(), backbone_id="test/tiny")


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"golden data folder not found at {REFERENCE}; clone the project next to ../shared to run golden tests")
    return REFERENCE
