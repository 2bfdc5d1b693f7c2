"""Classifier objective: push (or pull) an attribute classifier's score of the edit."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hspace.objectives.base import ObjectiveOutput

__all__ = ["ClassifierObjective"]

_SCORES = ("logit", "log_prob")


class ClassifierObjective:
    """``loss = -sign * mean_batch score(P_edit)`` for one class of a differentiable classifier.

    Any ``nn.Module`` mapping ``[B, 3, H, W]`` images in ``[-1, 1]`` (after ``preprocess``)
    to logits ``[B, K]`` (or an output object with ``.logits``) works, as does one that
    returns a single attribute logit ``[B]`` / ``[B, 1]`` (use ``target_index=None``).
    Combine with L1 through :class:`~hspace.objectives.WeightedSum`.

    Args:
        model: the classifier. Frozen in place (``requires_grad_(False)``, eval mode)
            unless ``freeze=False``.
        target_index: class to move towards, or ``None`` for single-logit models.
        sign: ``+1`` raises the class score, ``-1`` lowers it.
        score: ``"logit"`` (default) or ``"log_prob"`` (log-softmax over the K classes).
        preprocess: optional differentiable map applied to ``P_edit`` first (resize, normalise).
        freeze: freeze ``model`` (default True).

    Terms: ``score`` (mean score of the target class).

    Example:
        >>> obj = ClassifierObjective(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), target_index=1)
        >>> obj(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), obj.prepare(None)).loss.shape
        torch.Size([])
    """

    name = "classifier"

    def __init__(
        self,
        model: nn.Module,
        target_index: int | None,
        sign: int = 1,
        score: str = "logit",
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        freeze: bool = True,
    ) -> None:
        if sign not in (1, -1):
            raise ValueError(f"`sign` must be one of (1, -1), but got {sign!r}.")
        if score not in _SCORES:
            raise ValueError(f"Argument `score` must be one of {_SCORES}, but got {score!r}.")
        if score == "log_prob" and target_index is None:
            raise ValueError("`score='log_prob'` needs a `target_index` among K > 1 classes.")
        self.model = model
        self.target_index = target_index
        self.sign = sign
        self.score = score
        self.preprocess = preprocess
        if freeze:
            model.requires_grad_(False)
            model.eval()

    def prepare(self, source_images: torch.Tensor | None) -> None:
        """Nothing to cache."""
        return None

    def per_image(self, p_edit: torch.Tensor) -> torch.Tensor:
        """``[B]`` target-class scores of ``p_edit``."""
        x = self.preprocess(p_edit) if self.preprocess is not None else p_edit
        out = self.model(x)
        logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits")
        if self.target_index is None:
            if logits.dim() == 2 and logits.shape[1] == 1:
                logits = logits[:, 0]
            if logits.dim() != 1:
                raise ValueError(
                    f"target_index=None expects one logit per image ([B] or [B, 1]), "
                    f"but the model returned shape {tuple(logits.shape)}."
                )
            return logits
        if logits.dim() != 2 or not (-logits.shape[1] <= self.target_index < logits.shape[1]):
            raise ValueError(
                f"Expected logits [B, K] with K > target_index={self.target_index}, "
                f"but the model returned shape {tuple(logits.shape)}."
            )
        if self.score == "log_prob":
            logits = F.log_softmax(logits.float(), dim=1)
        return logits[:, self.target_index]

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: None = None) -> ObjectiveOutput:
        s = self.per_image(p_edit)
        return ObjectiveOutput(loss=-self.sign * s.mean(), terms={"score": s.detach().mean()})

    def __repr__(self) -> str:
        return (
            f"ClassifierObjective({type(self.model).__name__}, target_index={self.target_index}, "
            f"sign={self.sign:+d}, score={self.score!r})"
        )
