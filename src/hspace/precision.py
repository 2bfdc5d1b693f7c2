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

__all__ = ["Precision", "PRECISIONS", "check_precision", "network_autocast", "to_memory_format"]


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
