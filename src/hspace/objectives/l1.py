"""L1 preservation: keep the edit's predicted x0 close to the unedited one."""

from __future__ import annotations

import torch

from hspace.objectives.base import ObjectiveOutput

__all__ = ["L1Preservation"]


class L1Preservation:
    """``scale * mean |P_edit - P_src|``: mean over pixels per image, then over the batch.

    Args:
        scale: constant factor (default 1). :func:`~hspace.objectives.make_clip_objective`
            keeps this at 1 and puts ``cos_txt`` into the :class:`WeightedSum` weight instead.

    Example:
        >>> out = L1Preservation()(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), None)
        >>> float(out.loss)
        1.0
    """

    name = "l1"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def prepare(self, source_images: torch.Tensor) -> None:
        """Nothing to cache."""
        return None

    def per_image(self, p_edit: torch.Tensor, p_src: torch.Tensor) -> torch.Tensor:
        """``[B]`` per-image losses."""
        if p_edit.shape != p_src.shape:
            raise ValueError(
                f"p_edit and p_src must have the same shape, but got {tuple(p_edit.shape)} and {tuple(p_src.shape)}."
            )
        return self.scale * (p_edit - p_src).abs().flatten(1).mean(dim=1)

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: None = None) -> ObjectiveOutput:
        return ObjectiveOutput(loss=self.per_image(p_edit, p_src).mean(), terms={})

    def __repr__(self) -> str:
        return f"L1Preservation(scale={self.scale:g})"
