"""What every direction is: a callable ``(h, t, temb) -> dh`` plus a description of itself.

A direction says *where* to move h (the U-Net middle-block output) for one semantic
edit. The editor applies it as ``h' = h + s * dh`` during the editing interval
(``t >= t_edit``, see DESIGN.md 1.6); the direction itself never sees the strength
schedule or the sampler.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "Direction",
    "DirectionMeta",
    "DirectionMismatchError",
    "DirectionFileError",
]


class DirectionMismatchError(ValueError):
    """A direction does not fit the backbone it is used with (h shape or time-embedding width)."""


class DirectionFileError(ValueError):
    """A file is not a valid hspace direction file (or an official checkpoint cannot be imported)."""


_META_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "backbone_id": (str, type(None)),
    "h_shape": (tuple,),
    "temb_dim": (int, type(None)),
    "source_text": (str, type(None)),
    "target_text": (str, type(None)),
    "t_edit": (int, type(None)),
    "t_edit_max": (int, type(None)),
    "t_boost": (int, type(None)),
    "n_train_steps": (int, type(None)),
    "schedule": (dict, type(None)),
    "extra": (dict,),
}


@dataclass(frozen=True)
class DirectionMeta:
    """Self-description of a direction, stored in its file header.

    Attributes:
        kind: what produced dh: ``"implicit-ddpm"``, ``"implicit-adm"``, ``"per-step"``,
            ``"global"``, or for in-memory combinations ``"scaled"`` / ``"composed"``.
        h_shape: ``(C, H, W)`` of the h the direction was made for. An implicit f_t built
            without a backbone only knows its channel count and records ``(C,)``.
        backbone_id: the backbone the direction was trained on (``Backbone.backbone_id``), or None.
        temb_dim: width E of the time embedding the direction consumes; None when it
            consumes none (per-step and global directions).
        source_text: the text describing the source attribute (e.g. ``"face"``), if any.
        target_text: the text describing the target attribute (e.g. ``"smiling face"``), if any.
        t_edit: start of the editing interval on the 0..T-1 scale; the edit applies for
            ``t >= t_edit``. None lets the editor decide.
        t_edit_max: top of the editing interval, where it stops short of the grid's top: the
            edit applies for ``t_edit <= t <= t_edit_max`` (hspace's *editing band*, beyond the
            paper, whose interval always reaches T). None: the paper's interval, up to T.
        t_boost: start of the quality-boosting phase (``t < t_boost``), or None.
        n_train_steps: the number of DDIM steps of the grid the direction was trained on. The
            editor multiplies the strength by ``n_train_steps / n_test_steps``
            (:func:`hspace.directions.effective_strength`). None means "do not rescale".
        schedule: the noise schedule of training, e.g. ``{"beta_schedule": "linear",
            "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}``, or None.
        extra: free-form JSON-serialisable details (training losses, provenance, ...).
    """

    kind: str
    h_shape: tuple[int, ...]
    backbone_id: str | None = None
    temb_dim: int | None = None
    source_text: str | None = None
    target_text: str | None = None
    t_edit: int | None = None
    t_boost: int | None = None
    n_train_steps: int | None = None
    t_edit_max: int | None = None
    schedule: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.h_shape, list):
            object.__setattr__(self, "h_shape", tuple(self.h_shape))
        for name, types in _META_TYPES.items():
            value = getattr(self, name)
            # bool is an int subclass; a flag is never a valid count or timestep.
            if not isinstance(value, types) or (isinstance(value, bool) and int in types):
                allowed = " or ".join("None" if t is type(None) else t.__name__ for t in types)
                raise TypeError(f"DirectionMeta.{name} must be {allowed}, got {value!r} ({type(value).__name__})")
        if not (1 <= len(self.h_shape) <= 3) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.h_shape
        ):
            raise ValueError(f"DirectionMeta.h_shape must be (C, H, W) or (C,) of positive ints, got {self.h_shape!r}")
        for name in ("temb_dim", "n_train_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"DirectionMeta.{name} must be positive or None, got {value}")
        for name in ("t_edit", "t_boost", "t_edit_max"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"DirectionMeta.{name} must be a timestep >= 0 or None, got {value}")
        if self.t_edit_max is not None and self.t_edit is not None and self.t_edit_max < self.t_edit:
            raise ValueError(f"DirectionMeta.t_edit_max ({self.t_edit_max}) is below t_edit ({self.t_edit})")

    def replace(self, **changes: Any) -> "DirectionMeta":
        """A copy with some fields changed (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields (``h_shape`` as a list)."""
        d = dataclasses.asdict(self)
        d["h_shape"] = list(self.h_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DirectionMeta":
        """Inverse of :meth:`to_dict`. Unknown keys are kept under ``extra["unknown_meta"]``.

        Raises:
            TypeError, ValueError: a field has the wrong type or value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        unknown = {k: v for k, v in d.items() if k not in known}
        if "h_shape" in kwargs and isinstance(kwargs["h_shape"], list):
            kwargs["h_shape"] = tuple(kwargs["h_shape"])
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), "unknown_meta": unknown}
        return cls(**kwargs)


@runtime_checkable
class Direction(Protocol):
    """Anything that maps an h-space point to an edit direction.

    Implementations: :class:`~hspace.directions.ImplicitDirection` (the paper's f_t),
    :class:`~hspace.directions.PerStepDirection`, :class:`~hspace.directions.GlobalDirection`,
    and the combinators :class:`~hspace.directions.ScaledDirection` and
    :class:`~hspace.directions.ComposedDirection`.

    Attributes:
        meta: the direction's :class:`DirectionMeta`.
    """

    meta: DirectionMeta

    def __call__(self, h: torch.Tensor, t: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """Compute dh.

        Args:
            h: middle-block output ``[B, C, H, W]``.
            t: timesteps ``[B]`` (int or float, 0..T-1 scale), or a scalar for the whole batch.
            temb: the backbone's time embedding ``[B, E]`` (before any activation), or None
                when the caller wants the time term skipped.

        Returns:
            dh ``[B, C, H, W]``, same dtype and device as h.
        """
        ...


def timesteps_for_batch(t: torch.Tensor | int | float, batch: int) -> torch.Tensor:
    """``t`` as a 1-D tensor of length ``batch`` (a scalar or 1-element t is broadcast).

    Raises:
        ValueError: t has a length other than 1 or ``batch``.
    """
    t = torch.as_tensor(t).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"t must be a scalar or have one entry per batch element ({batch}), got shape {tuple(t.shape)}")
    return t


def check_h(h: torch.Tensor, channels: int, who: str, spatial: tuple[int, int] | None = None) -> None:
    """Raise a clear ValueError if h is not ``[B, channels, *spatial]``."""
    if not isinstance(h, torch.Tensor) or h.dim() != 4:
        got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"{who}: h must be a [B, C, H, W] tensor, got {got}")
    if h.shape[1] != channels or (spatial is not None and tuple(h.shape[2:]) != tuple(spatial)):
        want = f"[B, {channels}, {spatial[0]}, {spatial[1]}]" if spatial else f"[B, {channels}, H, W]"
        raise ValueError(
            f"{who}: h has shape {list(h.shape)}, expected {want}; the direction was made for another "
            "backbone (check it with hspace.directions.check_direction_fits)"
        )
