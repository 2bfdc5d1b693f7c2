"""Precision helpers: optional bf16 autocast + channels_last for the network calls.

DDIM inversion stays in float32 (bf16 moves eps by ~1 % per call, which compounds
along an inversion); editing and training steps may use bf16 (DESIGN.md section 2).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")

__all__ = [
    "Precision",
    "PRECISIONS",
    "check_precision",
    "network_autocast",
    "to_memory_format",
    "prepare_backbone_for",
]


def check_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision  # type: ignore[return-value]


def network_autocast(precision: Precision, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """Context for U-Net calls: bf16 autocast when asked, otherwise a no-op."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def to_memory_format(x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """channels_last for 4-d inputs under bf16 (where oneDNN's fast kernels want it)."""
    if precision == "bf16" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


_CL_FLAG = "_hspace_channels_last"


def prepare_backbone_for(precision: Precision, backbone):
    """Convert the backbone's conv weights to channels_last once, when ``precision`` is "bf16".

    ``to_memory_format`` makes the *inputs* channels_last; without channels_last *weights*
    oneDNN reorders every conv weight on every call. This converts the parameters of the
    underlying module in place (``module.to(memory_format=torch.channels_last)``; only 4-d
    tensors change, values are unchanged) and marks the backbone so later calls do nothing.
    float32 calls on the converted backbone stay float32 (DDIM inversion included); their
    outputs may differ in the last bits (other conv kernels), see benchmarks/README.md.

    Args:
        precision: "fp32" (no-op) or "bf16".
        backbone: any backbone; one that is not an ``nn.Module`` (or whose ``to`` does not
            take ``memory_format``) is left as it is.

    Returns:
        The same backbone (converted in place).
    """
    check_precision(precision)
    if precision != "bf16" or getattr(backbone, _CL_FLAG, False):
        return backbone
    if isinstance(backbone, torch.nn.Module):
        backbone.to(memory_format=torch.channels_last)
        # a backbone's alphas_cumprod buffer is 1-d, so .to(memory_format=...) leaves it alone
        try:
            setattr(backbone, _CL_FLAG, True)
        except AttributeError:
            pass
    return backbone
