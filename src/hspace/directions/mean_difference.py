"""Directions from two sets of images: the mean difference of h along their DDIM trajectories.

A source of directions beyond the paper's CLIP training (DESIGN.md 1.4): given images *with*
an attribute and images *without* it (paired or not, any sizes), walk each image's unedited
DDIM trajectory from its x_T and record h at every grid step ``t >= t_edit``; then

    dh_t = mean over "to" images of h_t  -  mean over "from" images of h_t

is a :class:`~hspace.directions.PerStepDirection`, edited with like any other direction. No
text, no CLIP and no optimiser: it needs only labelled examples, and it is as good as h is at
carrying the attribute (on ``toy-faces`` it is the reference point for the CLIP-trained
directions, ``docs/toyworld.md``). The mean of paired differences equals the difference of
the means, so pairing never matters.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from ..precision import Precision, check_precision, network_autocast, to_memory_format
from ..sampler import direction_term, predict_x0
from ..schedule import abar_at, ddim_grid, generation_pairs
from .base import DirectionMeta
from .simple import PerStepDirection

__all__ = ["h_along_trajectories", "mean_difference_direction"]


@torch.no_grad()
def h_along_trajectories(backbone: Any, latents: torch.Tensor, n_steps: int, t_edit: int, *,
                         precision: Precision = "fp32", batch_size: int = 16,
                         reduce: Literal["sum", "none"] = "sum",
                         measure: Callable[[Any], torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """h (float32) at every grid step ``t >= t_edit`` of the unedited DDIM trajectories (eta 0,
    no clipping: as inverted images are reconstructed) that start at ``latents`` ``[N, C, S, S]``:
    summed over the images (``[C, H, W]`` per step, memory independent of N) or, with
    ``reduce="none"``, per image (``[N, C, H, W]``). ``measure(enc)`` records something else
    per image instead of h, from the step's :class:`~hspace.backbones.base.Encoded` (h, temb, t),
    e.g. a direction's ``|dh|`` at the image's own h."""
    if reduce not in ("sum", "none"):
        raise ValueError(f"reduce must be 'sum' or 'none', got {reduce!r}")
    ac = backbone.alphas_cumprod
    pairs = [(t, t_next) for t, t_next in generation_pairs(ddim_grid(n_steps, ac.shape[0] - 1)) if t >= t_edit]
    out: dict[int, list[torch.Tensor]] = {t: [] for t, _ in pairs}
    for start in range(0, latents.shape[0], batch_size):
        x = latents[start : start + batch_size].to(backbone.device, torch.float32)
        for t, t_next in pairs:
            tt = torch.full((x.shape[0],), float(t), device=x.device)
            with network_autocast(precision, x.device):
                enc = backbone.encode(to_memory_format(x, precision), tt)
                eps = backbone.decode(enc)
                h = (enc.h if measure is None else measure(enc)).float()  # a measure may run a network too
            out[t].append(h.sum(dim=0, keepdim=True) if reduce == "sum" else h.contiguous())
            eps = eps.float()
            a_next = abar_at(ac, t_next)
            x = a_next.sqrt() * predict_x0(x, eps, abar_at(ac, t)) + direction_term(eps, a_next)
    if reduce == "sum":
        return {t: torch.cat(hs).sum(dim=0) for t, hs in out.items()}
    return {t: torch.cat(hs) for t, hs in out.items()}


def mean_difference_direction(backbone: Any, from_latents: torch.Tensor, to_latents: torch.Tensor, *,
                              n_steps: int = 40, t_edit: int = 500, precision: Precision = "fp32",
                              batch_size: int = 16, **meta_fields: Any) -> PerStepDirection:
    """The per-step direction ``dh_t = mean h_t(to) - mean h_t(from)`` (see the module docstring).

    Args:
        backbone: the frozen model.
        from_latents: x_T ``[N, C, S, S]`` of images without the attribute (e.g. from
            :meth:`hspace.editor.Editor.invert`, or Gaussian noise for the model's own samples).
        to_latents: x_T ``[M, C, S, S]`` of images with it; M need not equal N.
        n_steps: DDIM grid of the trajectories; recorded as ``n_train_steps``, so editing with
            another number of steps rescales the strength like any trained direction.
        t_edit: the editing interval's start; h is recorded where ``t >= t_edit``.
        precision: "bf16" runs the U-Net under bf16 autocast.
        batch_size: images per forward pass.
        meta_fields: more :class:`~hspace.directions.DirectionMeta` fields (``source_text``, ...).

    Raises:
        ValueError: an empty set, latents that do not fit the backbone, or a ``t_edit`` that
            leaves no grid step.
    """
    check_precision(precision)
    shape = (backbone.in_channels, backbone.image_size, backbone.image_size)
    for name, lat in (("from_latents", from_latents), ("to_latents", to_latents)):
        if lat.ndim != 4 or tuple(lat.shape[1:]) != shape:
            raise ValueError(f"{name} must be [N, {shape[0]}, {shape[1]}, {shape[2]}] for this model, got {list(lat.shape)}")
        if lat.shape[0] == 0:
            raise ValueError(f"{name} is empty: a mean difference needs at least one image on each side")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    sums_from = h_along_trajectories(backbone, from_latents, n_steps, t_edit, precision=precision, batch_size=batch_size)
    if not sums_from:
        raise ValueError(f"t_edit={t_edit} leaves no step of the {n_steps}-step grid to edit")
    sums_to = h_along_trajectories(backbone, to_latents, n_steps, t_edit, precision=precision, batch_size=batch_size)
    n_from, n_to = from_latents.shape[0], to_latents.shape[0]
    init = {t: sums_to[t] / n_to - sums_from[t] / n_from for t in sums_from}
    extra = {**meta_fields.pop("extra", {}), "mean_difference": {"from_images": n_from, "to_images": n_to,
                                                                   "precision": precision}}
    h_shape = tuple(backbone.h_shape)
    schedule = getattr(backbone, "schedule_config", None)
    meta = DirectionMeta(kind="per-step", h_shape=h_shape, backbone_id=backbone.backbone_id, t_edit=t_edit,
                         n_train_steps=n_steps, schedule=dict(schedule) if schedule else None, extra=extra,
                         **meta_fields)
    return PerStepDirection(list(init), h_shape, init=init, meta=meta)
