"""The one seam every model family implements: encode to h, decode from h.

Everything above this layer (sampler, directions, editor, trainer) talks to a
:class:`Backbone` and never learns which model family it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch

__all__ = ["Encoded", "Backbone"]


@dataclass(frozen=True)
class Encoded:
    """Result of the down path and middle block of a U-Net.

    Attributes:
        h: middle-block output (the h-space), ``[B, C, H, W]``.
        skips: skip activations of the down path, in the order the decoder consumes
            them (family-specific; treat as opaque).
        temb: the backbone's time embedding as its blocks receive it, ``[B, E]``.
        t: the timesteps the encoding was made at, ``[B]`` float32.
        x_t: the input, kept by backbones whose network predicts something other than eps
            (v or x0), which need it to turn their output into eps; None otherwise.
    """

    h: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    temb: torch.Tensor
    t: torch.Tensor
    x_t: Optional[torch.Tensor] = None

    def repeat(self, n: int) -> "Encoded":
        """The same encoding stacked n times along the batch (to decode h and h + dh as one batch)."""
        return Encoded(
            h=self.h.repeat(n, *([1] * (self.h.dim() - 1))),
            skips=tuple(s.repeat(n, *([1] * (s.dim() - 1))) for s in self.skips),
            temb=self.temb.repeat(n, *([1] * (self.temb.dim() - 1))),
            t=self.t.repeat(n),
            x_t=None if self.x_t is None else self.x_t.repeat(n, *([1] * (self.x_t.dim() - 1))),
        )


@runtime_checkable
class Backbone(Protocol):
    """A frozen noise-prediction network split at its bottleneck.

    Attributes:
        backbone_id: a stable name for the architecture + weights (hub id, folder or built-in name).
        h_shape: ``(C, H, W)`` of h for the native image size.
        temb_dim: width E of the time embedding.
        image_size: native image side in pixels.
        in_channels: image channels (3 for RGB).
        alphas_cumprod: ``[T]`` float32 abar_t of the model's own schedule.
        schedule_config: a JSON-able description of that schedule (recorded in direction files).
    """

    backbone_id: str
    h_shape: tuple[int, int, int]
    temb_dim: int
    image_size: int
    in_channels: int
    alphas_cumprod: torch.Tensor
    schedule_config: dict

    def encode(self, x_t: torch.Tensor, t: torch.Tensor) -> Encoded:
        """Down path + middle block. ``x_t`` ``[B, 3, S, S]``, ``t`` ``[B]`` (or a scalar)."""
        ...

    def decode(self, enc: Encoded, h: torch.Tensor | None = None) -> torch.Tensor:
        """Up path from ``h`` (default ``enc.h``) with ``enc``'s skips and temb; returns eps ``[B, 3, S, S]``."""
        ...

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Plain noise prediction, equal to ``decode(encode(x_t, t))``."""
        ...

    def to(self, *args, **kwargs) -> "Backbone":
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...
