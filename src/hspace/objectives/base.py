"""What every training objective returns and how objectives combine.

An objective scores the edit's predicted clean image ``P_edit`` (and may compare it with
``P_src``, the same step's prediction on the unedited trajectory). Work that depends only
on the source image (e.g. its CLIP embedding) goes into :meth:`Objective.prepare`, which
the trainer calls once per image and caches; :meth:`Objective.__call__` then runs at every
timestep with that cached state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ObjectiveOutput", "Objective", "WeightedSum", "select_state"]


@dataclass
class ObjectiveOutput:
    """Result of an objective.

    Attributes:
        loss: scalar to minimise, the mean over the batch; carries the gradient.
        terms: named scalar parts for logging (detached), e.g. ``{"cos": ...}``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """A differentiable score of the edit's predicted x0.

    Attributes:
        name: short name used as the prefix of its terms inside a :class:`WeightedSum`.
    """

    name: str

    def prepare(self, source_images: torch.Tensor) -> Any:
        """Per-image state from the source images ``[B, 3, H, W]`` in ``[-1, 1]``, computed once.

        The state's tensors are indexed by image along dim 0, so :func:`select_state`
        can pick a sub-batch. Objectives that need nothing return ``None``.
        """
        ...

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: Any) -> ObjectiveOutput:
        """Score ``p_edit`` ``[B, 3, H, W]`` against ``p_src`` (same shape) and the prepared ``state``."""
        ...


def select_state(state: Any, index: torch.Tensor | slice | Sequence[int]) -> Any:
    """Pick images ``index`` (along dim 0) out of a prepared state.

    Handles tensors, ``None``, and tuples/lists/dicts of those, recursively; other values
    are returned unchanged.

    Example:
        >>> select_state((torch.arange(4), None), [0, 2])
        (tensor([0, 2]), None)
    """
    if isinstance(state, torch.Tensor):
        if not isinstance(index, (torch.Tensor, slice)):
            index = torch.as_tensor(list(index), dtype=torch.long, device=state.device)
        return state[index]
    if isinstance(state, tuple):
        return tuple(select_state(s, index) for s in state)
    if isinstance(state, list):
        return [select_state(s, index) for s in state]
    if isinstance(state, Mapping):
        return {k: select_state(v, index) for k, v in state.items()}
    return state


class WeightedSum:
    """``loss = sum_i w_i * loss_i`` over member objectives.

    Args:
        members: ``[(weight, objective), ...]``. Each objective needs a ``name`` (or its
            class name is used); repeated names get ``_1``, ``_2``, ... suffixes.

    Terms of the output: for each member ``p``, ``p`` is its (unweighted) loss, ``p.w`` its
    weight and ``p.<key>`` each of its own terms.

    Example:
        >>> from hspace.objectives import L1Preservation
        >>> obj = WeightedSum([(3.0, L1Preservation())])
        >>> out = obj(torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), obj.prepare(torch.zeros(1, 3, 4, 4)))
        >>> float(out.loss), sorted(out.terms)
        (3.0, ['l1', 'l1.w'])
    """

    name = "sum"

    def __init__(self, members: Sequence[tuple[float, Objective]]) -> None:
        members = list(members)
        if not members:
            raise ValueError("WeightedSum needs at least one (weight, objective) pair, but got none.")
        self.weights: list[float] = []
        self.objectives: list[Objective] = []
        self.prefixes: list[str] = []
        seen: dict[str, int] = {}
        for item in members:
            if not (isinstance(item, tuple) and len(item) == 2 and callable(item[1])):
                raise TypeError(f"Each member must be a (weight, objective) pair, but got {item!r}.")
            weight, objective = item
            base = getattr(objective, "name", None) or type(objective).__name__.lower()
            count = seen.get(base, 0)
            seen[base] = count + 1
            self.weights.append(float(weight))
            self.objectives.append(objective)
            self.prefixes.append(base if count == 0 else f"{base}_{count}")

    def prepare(self, source_images: torch.Tensor) -> tuple[Any, ...]:
        """One prepared state per member, in order."""
        return tuple(obj.prepare(source_images) for obj in self.objectives)

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: tuple[Any, ...]) -> ObjectiveOutput:
        if not isinstance(state, tuple) or len(state) != len(self.objectives):
            raise ValueError(
                f"WeightedSum expected the tuple of {len(self.objectives)} states its prepare() returns, "
                f"but got {type(state).__name__}."
            )
        total = None
        terms: dict[str, torch.Tensor] = {}
        for weight, objective, prefix, st in zip(self.weights, self.objectives, self.prefixes, state):
            out = objective(p_edit, p_src, st)
            part = weight * out.loss
            total = part if total is None else total + part
            terms[prefix] = out.loss.detach()
            terms[f"{prefix}.w"] = torch.tensor(weight)
            for key, value in out.terms.items():
                terms[f"{prefix}.{key}"] = value.detach() if isinstance(value, torch.Tensor) else value
        return ObjectiveOutput(loss=total, terms=terms)

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:g} * {p}" for w, p in zip(self.weights, self.prefixes))
        return f"WeightedSum({parts})"
