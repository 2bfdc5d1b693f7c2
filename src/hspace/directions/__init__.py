"""Directions in h-space: where to move h for a semantic edit, and how to store them.

Public API:
    - :class:`Direction` (protocol ``(h, t, temb) -> dh``) and :class:`DirectionMeta`.
    - Sources: :class:`ImplicitDirection` (the paper's f_t, DDPM or ADM layout),
      :class:`PerStepDirection`, :class:`GlobalDirection`, :func:`mean_dh`,
      :func:`mean_difference_direction` (from two image sets, no training).
    - Combinators: :class:`ScaledDirection`, :class:`ComposedDirection`, :func:`interpolate`,
      :func:`effective_strength`, :func:`rescale_for_steps`.
    - Files: :func:`save_direction`, :func:`load_direction`, :func:`read_direction_header`,
      :func:`check_direction_fits`; official checkpoints: :func:`import_official`.
"""

from .base import Direction, DirectionFileError, DirectionMeta, DirectionMismatchError
from .compose import ComposedDirection, ScaledDirection, effective_strength, interpolate, rescale_for_steps
from .fileformat import (
    FILE_KINDS,
    FORMAT_VERSION,
    check_direction_fits,
    load_direction,
    read_direction_header,
    save_direction,
)
from .implicit import ADMDeltaBlock, DDPMDeltaBlock, ImplicitDirection
from .mean_difference import mean_difference_direction
from .official import OFFICIAL_LAYOUTS, detect_official_variant, import_official
from .simple import GlobalDirection, PerStepDirection, mean_dh

__all__ = [
    "Direction",
    "DirectionMeta",
    "DirectionMismatchError",
    "DirectionFileError",
    "ImplicitDirection",
    "DDPMDeltaBlock",
    "ADMDeltaBlock",
    "PerStepDirection",
    "GlobalDirection",
    "mean_dh",
    "mean_difference_direction",
    "ScaledDirection",
    "ComposedDirection",
    "interpolate",
    "effective_strength",
    "rescale_for_steps",
    "FORMAT_VERSION",
    "FILE_KINDS",
    "save_direction",
    "load_direction",
    "read_direction_header",
    "check_direction_fits",
    "import_official",
    "detect_official_variant",
    "OFFICIAL_LAYOUTS",
]
