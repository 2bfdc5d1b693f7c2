"""Per-image pixel metrics used in run reports (reconstruction PSNR, edit magnitude).

Pure functions over image batches ``[B, 3, H, W]`` in hspace's convention (values in
[-1, 1]); each returns one value per image, ``[B]`` float64.

Example:
    >>> import torch
    >>> x = torch.zeros(2, 3, 4, 4)
    >>> mean_abs_diff(x, x + 0.5).tolist()
    [0.5, 0.5]
    >>> round(psnr(x, x + 0.2)[0].item(), 2)  # MSE 0.04 on a range of 2: 10 log10(4 / 0.04)
    20.0
"""

from __future__ import annotations

import torch

__all__ = ["psnr", "mean_abs_diff"]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"expected two tensors [B, C, H, W], got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two tensors of the same shape [B, C, H, W], got {list(x.shape)} and {list(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, clip: bool = True) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB (``inf`` for identical images).

    Args:
        x, y: ``[B, C, H, W]``, nominally in [-1, 1].
        data_range: the span of valid values (2 for [-1, 1]).
        clip: clip both to [-1, 1] first, as saving them to 8-bit images would.

    Returns:
        ``[B]`` float64: ``10 log10(data_range^2 / MSE)``.
    """
    _check_pair(x, y)
    x, y = x.detach().double(), y.detach().double()
    if clip:
        x, y = x.clamp(-1, 1), y.clamp(-1, 1)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def mean_abs_diff(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image (no clipping): ``[B]`` float64."""
    _check_pair(x, y)
    return (x.detach().double() - y.detach().double()).abs().flatten(1).mean(1)
