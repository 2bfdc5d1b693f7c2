"""Training objectives over the edit's predicted x0 (``P_edit``).

Each objective has ``prepare(source_images) -> state`` (per-image work done once, cached
by the trainer) and ``__call__(p_edit, p_src, state) -> ObjectiveOutput``. Combine them
with :class:`WeightedSum`; :func:`make_clip_objective` builds the paper's
``w_clip * clip + w_l1 * cos_txt * l1``.
"""

from hspace.objectives.base import Objective, ObjectiveOutput, WeightedSum, select_state
from hspace.objectives.classifier import ClassifierObjective
from hspace.objectives.clip import DEFAULT_TEMPLATES, CLIPDirectionalLoss, CLIPOffAxisPenalty, make_clip_objective, text_cosine
from hspace.objectives.l1 import L1Preservation

__all__ = [
    "DEFAULT_TEMPLATES",
    "CLIPDirectionalLoss",
    "CLIPOffAxisPenalty",
    "ClassifierObjective",
    "L1Preservation",
    "Objective",
    "ObjectiveOutput",
    "WeightedSum",
    "make_clip_objective",
    "select_state",
    "text_cosine",
]
