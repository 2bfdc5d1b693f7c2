"""Scaling, combining and interpolating directions (DESIGN.md 1.7).

- :class:`ScaledDirection`: ``s * dh`` (a negative s reverses the attribute).
- :class:`ComposedDirection`: several attributes at once, ``sum_i s_i dh_i / sqrt(N)``.
- :func:`interpolate`: ``(1 - alpha) dh_a + alpha dh_b`` (no 1/sqrt(N)).
- :func:`effective_strength` and :func:`rescale_for_steps`: the strength is multiplied by
  ``n_train_steps / n_test_steps`` because the per-step edit does not shrink with the step size.

Editing interval of a combination: its ``t_edit`` is the *smallest* ``t_edit`` among the
members (the edit applies for ``t >= t_edit`` while t runs down from T-1, so the smallest
value is the latest to end, and every member gets at least its whole editing interval);
``t_boost`` is likewise the smallest one that is set. Members whose value is None are
ignored; if all are None the combination's value is None.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import Direction, DirectionMeta

__all__ = [
    "ScaledDirection",
    "ComposedDirection",
    "interpolate",
    "effective_strength",
    "rescale_for_steps",
]


def _check_strength(strength: Any, what: str) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"{what} must be a finite number, got {strength!r}")
    return float(strength)


def _check_direction(direction: Any, what: str) -> None:
    if not callable(direction) or not isinstance(getattr(direction, "meta", None), DirectionMeta):
        raise TypeError(
            f"{what} must be a Direction (callable with a DirectionMeta `meta` attribute), got {type(direction).__name__}"
        )


def _smallest(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _combined_meta(members: Sequence[tuple[Direction, float]], kind: str) -> DirectionMeta:
    metas = [d.meta for d, _ in members]
    channels = {m.h_shape[0] for m in metas}
    full = {tuple(m.h_shape) for m in metas if len(m.h_shape) == 3}
    if len(channels) > 1 or len(full) > 1:
        raise ValueError(
            f"cannot combine directions made for different h shapes: {[tuple(m.h_shape) for m in metas]}; "
            "all members must come from the same backbone"
        )
    h_shape = next(iter(full)) if full else (channels.pop(),)
    tembs = {m.temb_dim for m in metas if m.temb_dim is not None}
    if len(tembs) > 1:
        raise ValueError(f"cannot combine directions that expect different time-embedding widths: {sorted(tembs)}")
    ids = {m.backbone_id for m in metas if m.backbone_id is not None}
    if len(ids) > 1:
        warnings.warn(f"combining directions trained on different backbones {sorted(ids)}; shapes match, so going on")
    n_train = {m.n_train_steps for m in metas}
    schedules = [m.schedule for m in metas if m.schedule is not None]
    texts_src = {m.source_text for m in metas}
    texts_tgt = {m.target_text for m in metas}
    return DirectionMeta(
        kind=kind,
        h_shape=h_shape,
        backbone_id=ids.pop() if len(ids) == 1 else None,
        temb_dim=tembs.pop() if tembs else None,
        source_text=texts_src.pop() if len(texts_src) == 1 else None,
        target_text=texts_tgt.pop() if len(texts_tgt) == 1 else None,
        t_edit=_smallest([m.t_edit for m in metas]),
        t_boost=_smallest([m.t_boost for m in metas]),
        # the widest band: open to the top when any member is
        t_edit_max=None if any(m.t_edit_max is None for m in metas) else max(m.t_edit_max for m in metas),
        n_train_steps=n_train.pop() if len(n_train) == 1 else None,
        schedule=schedules[0] if schedules and all(s == schedules[0] for s in schedules) else None,
        extra={
            "members": [
                {"kind": m.kind, "strength": s, "source_text": m.source_text, "target_text": m.target_text}
                for m, (_, s) in zip(metas, members)
            ]
        },
    )


class ScaledDirection(nn.Module):
    """``strength * direction(h, t, temb)``.

    Args:
        direction: any :class:`Direction`.
        strength: finite number; negative values reverse the attribute.

    The meta is the member's, with kind ``"scaled"`` and ``extra["strength"]``.

    Example:
        >>> from hspace.directions import GlobalDirection
        >>> g = GlobalDirection((4, 2, 2), torch.ones(4, 2, 2))
        >>> ScaledDirection(g, -2.0)(torch.zeros(1, 4, 2, 2), torch.tensor([999]), None)[0, 0, 0, 0].item()
        -2.0
    """

    def __init__(self, direction: Direction, strength: float):
        super().__init__()
        _check_direction(direction, "direction")
        self.strength = _check_strength(strength, "strength")
        self.direction = direction  # registered as a submodule when it is an nn.Module
        m = direction.meta
        self.meta = m.replace(kind="scaled", extra={**m.extra, "member_kind": m.kind, "strength": self.strength})

    def forward(self, h: torch.Tensor, t: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """``strength * dh`` ``[B, C, H, W]``."""
        return self.strength * self.direction(h, t, temb)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"


class ComposedDirection(nn.Module):
    """Several directions at once: ``dh = sum_i s_i dh_i / sqrt(N)`` (N members).

    With one member this is plain scaling. The 1/sqrt(N) keeps the norm of a sum of
    roughly orthogonal directions comparable to one direction (the paper's rule).

    Args:
        members: ``[(direction, strength), ...]``, at least one.
        normalize: divide by sqrt(N) (default). :func:`interpolate` turns it off.

    Raises:
        ValueError: no members, a non-finite strength, or members made for different h
            shapes / time-embedding widths. Different backbone ids with matching shapes warn.

    The meta has kind ``"composed"``, the smallest member ``t_edit`` and ``t_boost`` (see the
    module docstring), the common backbone id / texts / n_train_steps when all members agree
    (else None), and ``extra["members"]`` listing each member's kind, strength and texts.
    """

    def __init__(self, members: Sequence[tuple[Direction, float]], *, normalize: bool = True):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("ComposedDirection needs at least one (direction, strength) pair, got none")
        checked: list[tuple[Direction, float]] = []
        for i, item in enumerate(members):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"members[{i}] must be a (direction, strength) pair, got {item!r}")
            _check_direction(item[0], f"members[{i}][0]")
            checked.append((item[0], _check_strength(item[1], f"members[{i}] strength")))
        self.members = checked
        self.normalize = bool(normalize)
        # Register module members so .to(device) / .parameters() reach them.
        self.member_modules = nn.ModuleList([d for d, _ in checked if isinstance(d, nn.Module)])
        self.meta = _combined_meta(checked, "composed")

    @property
    def strengths(self) -> list[float]:
        """The member strengths, in order."""
        return [s for _, s in self.members]

    def forward(self, h: torch.Tensor, t: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """The combined dh ``[B, C, H, W]``."""
        first, s0 = self.members[0]
        total = s0 * first(h, t, temb)
        for direction, s in self.members[1:]:
            total = total + s * direction(h, t, temb)
        return total / math.sqrt(len(self.members)) if self.normalize else total

    def extra_repr(self) -> str:
        return f"strengths={self.strengths}, normalize={self.normalize}"


def interpolate(a: Direction, b: Direction, alpha: float) -> ComposedDirection:
    """The direction ``(1 - alpha) * dh_a + alpha * dh_b``.

    ``alpha = 0`` gives a, ``alpha = 1`` gives b; values outside [0, 1] extrapolate.
    There is no 1/sqrt(N) factor. t_edit / t_boost follow :class:`ComposedDirection`.

    Raises:
        ValueError: alpha not finite, or a and b made for different h shapes.
    """
    alpha = _check_strength(alpha, "alpha")
    d = ComposedDirection([(a, 1.0 - alpha), (b, alpha)], normalize=False)
    d.meta = d.meta.replace(kind="interpolated", extra={**d.meta.extra, "alpha": alpha})
    return d


def effective_strength(strength: float, n_train_steps: int | None, n_test_steps: int) -> float:
    """``strength * n_train_steps / n_test_steps``; ``strength`` unchanged when n_train_steps is None.

    The edit is applied once per step and does not shrink with the step size, so a direction
    trained with 40 steps and used with 1000 steps needs 40/1000 of the strength.

    Raises:
        ValueError: non-positive step counts or a non-finite strength.
    """
    strength = _check_strength(strength, "strength")
    if isinstance(n_test_steps, bool) or not isinstance(n_test_steps, int) or n_test_steps <= 0:
        raise ValueError(f"n_test_steps must be a positive int, got {n_test_steps!r}")
    if n_train_steps is None:
        return strength
    if isinstance(n_train_steps, bool) or not isinstance(n_train_steps, int) or n_train_steps <= 0:
        raise ValueError(f"n_train_steps must be a positive int or None, got {n_train_steps!r}")
    return strength * n_train_steps / n_test_steps


def rescale_for_steps(direction: Direction, n_test_steps: int) -> Direction:
    """Apply :func:`effective_strength` to every leaf of a (possibly combined) direction.

    Each leaf is scaled by its own ``meta.n_train_steps / n_test_steps`` (leaves without
    n_train_steps are left alone), so members trained with different grids each get their
    own factor. The result's ``meta.n_train_steps`` is None (it must not be rescaled again)
    and ``meta.extra["rescaled_for_n_steps"]`` records ``n_test_steps``.
    """
    out = _rescale(direction, n_test_steps)
    if out is direction:
        return direction
    out.meta = out.meta.replace(n_train_steps=None, extra={**out.meta.extra, "rescaled_for_n_steps": n_test_steps})
    return out


def _rescale(direction: Direction, n: int) -> Direction:
    if isinstance(direction, ScaledDirection):
        inner = _rescale(direction.direction, n)
        return direction if inner is direction.direction else ScaledDirection(inner, direction.strength)
    if isinstance(direction, ComposedDirection):
        new = [(_rescale(d, n), s) for d, s in direction.members]
        if all(a is b for (a, _), (b, _) in zip(new, direction.members)):
            return direction
        out = ComposedDirection(new, normalize=direction.normalize)
        out.meta = out.meta.replace(kind=direction.meta.kind)
        return out
    factor = effective_strength(1.0, direction.meta.n_train_steps, n)
    return direction if factor == 1.0 else ScaledDirection(direction, factor)
