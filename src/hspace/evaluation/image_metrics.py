"""Per-image fidelity of an edit: PSNR, SSIM and a perceptual distance (LPIPS or a stated fallback).

All functions take two batches ``[B, 3, H, W]`` in hspace's convention (values in [-1, 1]) and
compare image ``i`` of one with image ``i`` of the other. Higher PSNR / SSIM and a lower distance
mean the edit changed the picture less (for an edit, "less" is good only outside the edited
attribute: read them next to the CLIP and factor scores).

* PSNR: :func:`hspace.metrics.psnr` (data range 2, both clipped to [-1, 1]); identical images give
  ``inf`` (written ``"Infinity"`` in JSON); summaries average the finite values and count the rest.
* SSIM: :func:`ssim`, torchmetrics' Gaussian-window SSIM (window 11, sigma 1.5, data range 2).
* Perceptual distance: LPIPS (AlexNet) only when :func:`hspace.distances.lpips_status` finds its
  weights on disk; otherwise :class:`hspace.distances.FallbackDistance`, whose values are **not**
  LPIPS. :func:`pixel_metrics` says which one ran (``"lpips": null`` when it was not LPIPS).

Example:
    >>> import torch
    >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> ssim(x, x).tolist()
    [1.0, 1.0]
    >>> r = pixel_metrics(x, x, distance="fallback")
    >>> r["mean"]["ssim"], r["perceptual_distance"]["is_lpips"], r["lpips"]
    (1.0, False, None)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..distances import Distance, FallbackDistance, get_distance, lpips_status
from ..metrics import psnr

__all__ = ["SSIM_KERNEL", "SSIM_SIGMA", "ssim", "resolve_distance", "pixel_metrics", "finite_mean"]

SSIM_KERNEL = 11  # Gaussian window side (Wang et al. 2004); torchmetrics derives it from sigma: 2 int(3.5 sigma + 0.5) + 1
SSIM_SIGMA = 1.5


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"expected two tensors [B, 3, H, W], got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(
            f"expected two image batches of the same shape [B, 3, H, W] in [-1, 1], got {list(x.shape)} and {list(y.shape)}"
        )


def _check_window(h: int, w: int) -> None:
    if min(h, w) < SSIM_KERNEL:
        raise ValueError(f"SSIM's {SSIM_KERNEL}x{SSIM_KERNEL} window needs images of at least {SSIM_KERNEL}x{SSIM_KERNEL} pixels, got {h}x{w}")


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, clip: bool = True) -> torch.Tensor:
    """Structural similarity per image (torchmetrics' Gaussian-window SSIM).

    Args:
        x, y: ``[B, 3, H, W]``, nominally in [-1, 1].
        data_range: the span of valid values (2 for [-1, 1]).
        clip: clip both to [-1, 1] first, as saving them to 8-bit images would.

    Returns:
        ``[B]`` float64 in [-1, 1]; 1 for identical images. Gaussian window of 11 pixels, sigma 1.5.

    Raises:
        TypeError, ValueError: not two batches of the same shape ``[B, 3, H, W]``, or images smaller
            than the 11x11 window.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(x, y)
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    x, y = x.detach().double(), y.detach().double()
    if clip:
        x, y = x.clamp(-1, 1), y.clamp(-1, 1)
    _check_window(x.shape[-2], x.shape[-1])
    out = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL, data_range=float(data_range), reduction="none"
    )
    return out.reshape(x.shape[0]).double()


def resolve_distance(distance: Distance | str | None = "auto") -> tuple[Distance, dict[str, Any]]:
    """The perceptual distance to use and a record of which one it is.

    Args:
        distance: a :class:`~hspace.distances.Distance`, ``"auto"``/None (LPIPS when its weights are on
            disk, else the fallback, without a warning: the record says why), ``"lpips"`` (raise if
            unusable) or ``"fallback"``.

    Returns:
        ``(distance, info)`` with ``info = {"name", "is_lpips", "note"}``; ``note`` states why LPIPS
        did not run (None when it did).

    Raises:
        DistanceUnavailableError: ``"lpips"`` was asked for and cannot run here.
    """
    note = None
    if distance is None or (isinstance(distance, str) and distance.lower().strip() == "auto"):
        usable, problems = lpips_status()
        if usable:
            d: Distance = get_distance("lpips")
        else:
            d = FallbackDistance()
            note = f"LPIPS is not available ({'; '.join(problems)}); {d.name} ran instead and its values are NOT LPIPS"
    elif isinstance(distance, str):
        d = get_distance(distance)
    else:
        d = distance
    is_lpips = str(getattr(d, "name", "")).startswith("lpips")
    if not is_lpips and note is None:
        note = f"{getattr(d, 'name', type(d).__name__)} is not LPIPS; its values are not comparable with published LPIPS numbers"
    return d, {"name": str(getattr(d, "name", type(d).__name__)), "is_lpips": is_lpips, "note": note}


def finite_mean(values: torch.Tensor | list[float]) -> float | None:
    """Mean of the finite entries (None when there are none)."""
    v = [float(a) for a in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    v = [a for a in v if math.isfinite(a)]
    return sum(v) / len(v) if v else None


@torch.no_grad()
def pixel_metrics(
    source: torch.Tensor,
    edited: torch.Tensor,
    distance: Distance | str | None = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """PSNR, SSIM and the perceptual distance of each edited image against its source.

    Args:
        source, edited: ``[B, 3, H, W]`` in [-1, 1], image ``i`` of one paired with image ``i`` of the other.
        distance: see :func:`resolve_distance`.
        batch_size: images per distance call.

    Returns:
        ``{"per_image": {"psnr": [B], "ssim": [B], "perceptual": [B]}, "mean": {"psnr", "ssim",
        "perceptual"}, "n_identical": int, "lpips": mean LPIPS or None, "perceptual_distance": {"name",
        "is_lpips", "note"}, "ssim_settings": {...}}``. ``mean.psnr`` averages the finite values;
        ``n_identical`` counts the pairs whose PSNR is infinite (identical after clipping).
    """
    _check_pair(source, edited)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    d, info = resolve_distance(distance)
    p = psnr(source, edited)
    s = ssim(source, edited)
    parts = [d(source[i:i + batch_size].float(), edited[i:i + batch_size].float()).detach().double().reshape(-1)
             for i in range(0, len(source), batch_size)]
    dist = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    mean_dist = finite_mean(dist)
    return {
        "per_image": {"psnr": p.tolist(), "ssim": s.tolist(), "perceptual": dist.tolist()},
        "mean": {"psnr": finite_mean(p), "ssim": finite_mean(s), "perceptual": mean_dist},
        "n_identical": int(torch.isinf(p).sum()),
        "lpips": mean_dist if info["is_lpips"] else None,
        "perceptual_distance": info,
        "ssim_settings": {"window": SSIM_KERNEL, "sigma": SSIM_SIGMA, "data_range": 2.0,
                          "implementation": "torchmetrics.functional.structural_similarity_index_measure"},
    }
