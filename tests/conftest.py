"""Shared fixtures: tiny randomly initialised backbones built from configs, and the golden folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.backbones.registry import TINY_RANDOM_CONFIG

# One thread: the models here are tiny, and with two OpenMP threads on a 2-core machine any
# other load makes torch spin-wait (measured 70x slower); one thread is immune to that.
torch.set_num_threads(1)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "asyrp-official"


def tiny_unet_config(**overrides) -> dict:
    """The built-in tiny-random layout (32x32, 32/64/64 channels, h [64, 8, 8]) with overrides."""
    return {**TINY_RANDOM_CONFIG, **overrides}


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


class TameBackbone(DiffusersUNetBackbone):
    """A tiny random U-Net on top of the exact denoiser for N(0, s^2) data.

    eps = sqrt(1 - a) x_t / (a s^2 + 1 - a) + gamma * unet_eps(h). A random U-Net alone is
    no denoiser, so its samples explode to |x| ~ 1e2; adding the closed-form denoiser keeps
    trajectories in the image range, while h, skips, temb and the decoder stay the real
    diffusers ones (so directions act exactly as they would on a trained model).
    """

    def __init__(self, unet, gamma: float = 0.2, s: float = 0.5):
        super().__init__(unet, backbone_id="test/tame")
        self.gamma, self.s = gamma, s

    def encode(self, x_t, t):
        enc = super().encode(x_t, t)
        return type(enc)(h=enc.h, skips=enc.skips + (x_t,), temb=enc.temb, t=enc.t)

    def decode(self, enc, h=None):
        x_t = enc.skips[-1]
        inner = type(enc)(h=enc.h, skips=enc.skips[:-1], temb=enc.temb, t=enc.t)
        a = self.alphas_cumprod[enc.t.long()].reshape(-1, 1, 1, 1).to(x_t.dtype)
        base = (1 - a).sqrt() * x_t / (a * self.s**2 + 1 - a)
        return base + self.gamma * super().decode(inner, h)


@pytest.fixture
def tame_backbone() -> TameBackbone:
    return TameBackbone(make_tiny_unet())
