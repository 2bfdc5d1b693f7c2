"""Directions that are free tensors: one per trained timestep, or one for all timesteps.

Both use the additive rule h' = h + dh (DESIGN.md 1.4): dh does not depend on h.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .base import Direction, DirectionMeta, check_h, timesteps_for_batch

__all__ = ["PerStepDirection", "GlobalDirection", "mean_dh"]


def _check_h_shape(h_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(h_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"h_shape must be (C, H, W) of positive ints, got {h_shape!r}")
    return shape  # type: ignore[return-value]


def _meta_for(kind: str, h_shape: tuple[int, int, int], meta: DirectionMeta | None) -> DirectionMeta:
    if meta is None:
        return DirectionMeta(kind=kind, h_shape=h_shape)
    if tuple(meta.h_shape) != h_shape:
        raise ValueError(f"meta.h_shape {tuple(meta.h_shape)} disagrees with h_shape {h_shape}")
    return meta.replace(kind=kind, temb_dim=None)


def _initial(h_shape: tuple[int, int, int], init: torch.Tensor | None, what: str) -> torch.Tensor:
    if init is None:
        return torch.zeros(h_shape)
    init = torch.as_tensor(init)
    if tuple(init.shape) != h_shape:
        raise ValueError(f"{what} has shape {list(init.shape)}, expected {list(h_shape)} (= h_shape)")
    return init.detach().clone().float()


class PerStepDirection(nn.Module):
    """One free tensor dh_t ``[C, H, W]`` per trained timestep.

    Lookup: for each batch element, the tensor of the trained timestep equal to t is used;
    when t was not trained (e.g. editing with another number of steps than training), the
    nearest trained timestep is used, and on a tie between two the smaller one.

    Parameters are stored as ``dh.t<timestep>`` (e.g. ``dh.t999``), one ``nn.Parameter`` each,
    so an optimiser only updates the steps that were used. They start at zero unless
    ``init`` is given.

    Args:
        timesteps: the trained timesteps (distinct ints >= 0, any order).
        h_shape: ``(C, H, W)`` of h.
        init: optional ``{t: tensor [C, H, W]}`` initial values (missing steps start at zero).
        meta: description; its ``kind`` is set to ``"per-step"`` and ``temb_dim`` to None.

    Raises:
        ValueError: empty/duplicate/negative timesteps, bad shapes.

    Example:
        >>> d = PerStepDirection([999, 500], (4, 2, 2))
        >>> d(torch.zeros(3, 4, 2, 2), torch.tensor([999, 700, 10]), None).shape
        torch.Size([3, 4, 2, 2])
    """

    def __init__(
        self,
        timesteps: Sequence[int],
        h_shape: Sequence[int],
        *,
        init: dict[int, torch.Tensor] | None = None,
        meta: DirectionMeta | None = None,
    ):
        super().__init__()
        if any(isinstance(t, bool) or int(t) != t for t in timesteps):
            raise ValueError(f"timesteps must be integers, got {list(timesteps)}")
        steps = [int(t) for t in timesteps]
        if not steps:
            raise ValueError("timesteps must name at least one trained timestep, got an empty list")
        if any(t < 0 for t in steps) or len(set(steps)) != len(steps):
            raise ValueError(f"timesteps must be distinct ints >= 0, got {list(timesteps)}")
        self.h_shape = _check_h_shape(h_shape)
        self.timesteps: list[int] = sorted(steps)
        init = dict(init or {})
        stray = sorted(set(init) - set(self.timesteps))
        if stray:
            raise ValueError(f"init has timesteps {stray} that are not in timesteps {self.timesteps}")
        self.dh = nn.ParameterDict(
            {f"t{t}": nn.Parameter(_initial(self.h_shape, init.get(t), f"init[{t}]")) for t in self.timesteps}
        )
        self.meta = _meta_for("per-step", self.h_shape, meta)

    @classmethod
    def for_backbone(cls, backbone: Any, timesteps: Sequence[int], **meta_fields: Any) -> "PerStepDirection":
        """Zero-initialised per-step direction sized for ``backbone`` (id and h shape go into meta)."""
        h_shape = tuple(backbone.h_shape)
        meta = DirectionMeta(kind="per-step", h_shape=h_shape, backbone_id=backbone.backbone_id, **meta_fields)
        return cls(timesteps, h_shape, meta=meta)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (without meta and init), as stored in a direction file."""
        return {"timesteps": list(self.timesteps), "h_shape": list(self.h_shape)}

    def step_tensor(self, t: int) -> nn.Parameter:
        """The parameter used at timestep ``t`` (nearest trained timestep)."""
        return self.dh[f"t{self.timesteps[int(self.nearest_index(torch.tensor([t]))[0])]}"]

    def nearest_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index into :attr:`timesteps` of the nearest trained timestep for each entry of ``t`` (ties: smaller)."""
        # Not a buffer: Module.to(bfloat16) would round 999 to 1000.
        trained = torch.tensor(self.timesteps, dtype=torch.float64)
        dist = (t.detach().cpu().double().reshape(-1, 1) - trained.reshape(1, -1)).abs()
        return dist.argmin(dim=1)  # argmin returns the first minimum: the smaller timestep on a tie

    def forward(self, h: torch.Tensor, t: torch.Tensor | int | float, temb: torch.Tensor | None = None) -> torch.Tensor:
        """dh for each batch element; ``temb`` is unused.

        Args:
            h: ``[B, C, H, W]`` (only its shape, dtype and device are used).
            t: timesteps ``[B]`` or a scalar.
            temb: unused.

        Returns:
            ``[B, C, H, W]``.
        """
        check_h(h, self.h_shape[0], "PerStepDirection", self.h_shape[1:])
        idx = self.nearest_index(timesteps_for_batch(t, h.shape[0])).tolist()
        params = [self.dh[f"t{self.timesteps[i]}"] for i in idx]
        if len(set(idx)) == 1:
            out = params[0].unsqueeze(0).expand(h.shape[0], *self.h_shape)
        else:
            out = torch.stack(params)
        return out.to(dtype=h.dtype, device=h.device)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, h_shape={self.h_shape}"


class GlobalDirection(nn.Module):
    """One free tensor dh ``[C, H, W]`` used at every timestep.

    Args:
        h_shape: ``(C, H, W)`` of h.
        dh: optional initial value ``[C, H, W]`` (default zeros).
        meta: description; its ``kind`` is set to ``"global"`` and ``temb_dim`` to None.

    Example:
        >>> d = GlobalDirection((4, 2, 2), torch.ones(4, 2, 2))
        >>> d(torch.zeros(3, 4, 2, 2), torch.tensor(999), None).sum().item()
        48.0
    """

    def __init__(self, h_shape: Sequence[int], dh: torch.Tensor | None = None, *, meta: DirectionMeta | None = None):
        super().__init__()
        self.h_shape = _check_h_shape(h_shape)
        self.dh = nn.Parameter(_initial(self.h_shape, dh, "dh"))
        self.meta = _meta_for("global", self.h_shape, meta)

    @classmethod
    def for_backbone(cls, backbone: Any, dh: torch.Tensor | None = None, **meta_fields: Any) -> "GlobalDirection":
        """Global direction sized for ``backbone`` (zeros unless ``dh`` is given)."""
        h_shape = tuple(backbone.h_shape)
        meta = DirectionMeta(kind="global", h_shape=h_shape, backbone_id=backbone.backbone_id, **meta_fields)
        return cls(h_shape, dh, meta=meta)

    @classmethod
    def from_direction(cls, direction: Direction, samples: Iterable[Any]) -> "GlobalDirection":
        """Average another direction's outputs into one global dh (see :func:`mean_dh`).

        The new meta copies ``direction.meta`` (texts, t_edit, ...), with kind ``"global"`` and
        ``extra["derived_from"]`` naming the source kind and the number of samples averaged.
        """
        dh, count = _mean_dh_and_count(direction, samples)
        src = direction.meta
        h_shape = tuple(dh.shape)
        if len(src.h_shape) == 3 and tuple(src.h_shape) != h_shape:
            raise ValueError(f"samples have h of shape {list(h_shape)} but the direction was made for {list(src.h_shape)}")
        meta = src.replace(
            kind="global",
            h_shape=h_shape,
            temb_dim=None,
            extra={**src.extra, "derived_from": {"kind": src.kind, "num_samples": count}},
        )
        return cls(h_shape, dh, meta=meta)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (without meta and dh), as stored in a direction file."""
        return {"h_shape": list(self.h_shape)}

    def forward(self, h: torch.Tensor, t: torch.Tensor | int | float | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        """The same dh for every batch element and timestep: ``[B, C, H, W]`` (t, temb unused)."""
        check_h(h, self.h_shape[0], "GlobalDirection", self.h_shape[1:])
        return self.dh.unsqueeze(0).expand(h.shape[0], *self.h_shape).to(dtype=h.dtype, device=h.device)

    def extra_repr(self) -> str:
        return f"h_shape={self.h_shape}"


def _unpack(sample: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if all(hasattr(sample, a) for a in ("h", "t", "temb")):  # an Encoded
        return sample.h, sample.t, sample.temb
    if isinstance(sample, (tuple, list)) and len(sample) == 3:
        return sample[0], sample[1], sample[2]
    raise TypeError(f"each sample must be an Encoded or a tuple (h, t, temb), got {type(sample).__name__}")


@torch.no_grad()
def _mean_dh_and_count(direction: Direction, samples: Iterable[Any]) -> tuple[torch.Tensor, int]:
    total: torch.Tensor | None = None
    count = 0
    for sample in samples:
        h, t, temb = _unpack(sample)
        dh = direction(h, t, temb).double().sum(dim=0)
        if total is not None and dh.shape != total.shape:
            raise ValueError(f"samples disagree on the shape of h: {list(total.shape)} and then {list(dh.shape)}")
        total = dh if total is None else total + dh
        count += h.shape[0]
    if total is None or count == 0:
        raise ValueError("mean_dh needs at least one (h, t, temb) sample, got none")
    return (total / count).float().cpu(), count


def mean_dh(direction: Direction, samples: Iterable[Any]) -> torch.Tensor:
    """The mean of ``direction(h, t, temb)`` over every batch element of every sample.

    This turns an h-dependent direction (e.g. the paper's f_t) into one global dh.

    Args:
        direction: any :class:`Direction`.
        samples: ``Encoded`` objects (from ``backbone.encode``) or ``(h, t, temb)`` tuples.

    Returns:
        ``[C, H, W]`` float32 on the CPU (accumulated in float64).

    Raises:
        ValueError: no samples, or samples of different h shapes.
        TypeError: a sample is neither an Encoded nor a 3-tuple.
    """
    return _mean_dh_and_count(direction, samples)[0]
