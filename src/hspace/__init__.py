"""hspace: semantic image editing in the h-space of frozen diffusion models.

The public API, importable from the top level (loaded on first use, so ``import hspace``
stays cheap)::

    from hspace import load_backbone, Editor, EditConfig, Trainer, TrainConfig
    from hspace import load_direction, save_direction, load_encoder, make_clip_objective
    from hspace import evaluate_edit, evaluate_toy_edit, directional_similarity, frechet_distance
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_backbone": "hspace.backbones.registry",
    "list_models": "hspace.backbones.registry",
    "Editor": "hspace.editor",
    "EditConfig": "hspace.editor",
    "EditOutput": "hspace.editor",
    "Trainer": "hspace.trainer",
    "TrainConfig": "hspace.trainer",
    "TrainOutput": "hspace.trainer",
    "load_direction": "hspace.directions",
    "save_direction": "hspace.directions",
    "import_official": "hspace.directions",
    "ComposedDirection": "hspace.directions",
    "ImplicitDirection": "hspace.directions",
    "GlobalDirection": "hspace.directions",
    "PerStepDirection": "hspace.directions",
    "load_encoder": "hspace.encoders",
    "make_clip_objective": "hspace.objectives",
    "invert": "hspace.sampler",
    "generate": "hspace.sampler",
    "Phases": "hspace.sampler",
    "choose_interval": "hspace.interval",
    "evaluate_edit": "hspace.evaluation",
    "evaluate_toy_edit": "hspace.evaluation",
    "pixel_metrics": "hspace.evaluation",
    "directional_similarity": "hspace.evaluation",
    "clip_score": "hspace.evaluation",
    "frechet_distance": "hspace.evaluation",
    "kernel_inception_distance": "hspace.evaluation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hspace' has no attribute {name!r}")
