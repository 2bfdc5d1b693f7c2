"""Converter for the official Asyrp f_t checkpoints (``*.pth``) into :class:`ImplicitDirection`.

An official file is a ``torch.save`` dict with ``"0"`` (the DeltaBlock state dict),
``"optimizer"`` and ``"scheduler"``, saved from ``cuda:0`` without any metadata. It is read
with ``torch.load(..., map_location="cpu", weights_only=True)``, which refuses arbitrary
pickled objects. The result is saved in our own format with
:func:`hspace.directions.save_direction`; ``.pth`` is never a second native format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .base import DirectionFileError, DirectionMeta
from .implicit import ImplicitDirection

__all__ = ["import_official", "detect_official_variant", "OFFICIAL_LAYOUTS"]

OFFICIAL_LAYOUTS: dict[str, frozenset[str]] = {
    "ddpm": frozenset(
        f"{m}.{p}" for m in ("conv1", "temb_proj", "norm2", "conv2") for p in ("weight", "bias")
    ),
    "adm": frozenset(
        f"{m}.{p}"
        for m in ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3")
        for p in ("weight", "bias")
    ),
}
# (key of the first 1x1 conv [C, C, 1, 1], key of the time Linear [C, E]) per layout
_SHAPE_KEYS = {"ddpm": ("conv1.weight", "temb_proj.weight"), "adm": ("in_layers.2.weight", "emb_layers.1.weight")}


def detect_official_variant(state_dict: dict[str, Any], source: str = "state dict") -> str:
    """``"ddpm"`` or ``"adm"`` from the key set of an official DeltaBlock state dict.

    Raises:
        DirectionFileError: the keys match neither layout (the keys found and both expected
            layouts are listed).
    """
    keys = frozenset(state_dict)
    for variant, expected in OFFICIAL_LAYOUTS.items():
        if keys == expected:
            return variant
    layouts = "; ".join(f"{v}: {sorted(k)}" for v, k in OFFICIAL_LAYOUTS.items())
    raise DirectionFileError(
        f"{source}: the f_t state dict has keys {sorted(keys)}, which match neither official layout ({layouts})"
    )


def import_official(
    pth_path: str | os.PathLike,
    *,
    backbone_id: str | None,
    h_shape: tuple[int, int, int],
    temb_dim: int,
    n_train_steps: int | None,
    t_edit: int | None = None,
    t_boost: int | None = None,
    source_text: str | None = None,
    target_text: str | None = None,
    schedule: dict[str, Any] | None = None,
) -> ImplicitDirection:
    """Load an official Asyrp f_t checkpoint as an :class:`ImplicitDirection`.

    The layout (DDPM or ADM keys) is detected from the key set; the weights are loaded strictly.
    A file that holds the DeltaBlock state dict directly (without the ``"0"`` wrapper) is accepted too.

    Args:
        pth_path: the official ``.pth`` file (e.g. ``smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth``).
        backbone_id: id of the backbone the checkpoint was trained on, recorded in the meta.
        h_shape: ``(C, H, W)`` of that backbone's h, e.g. ``(512, 8, 8)``.
        temb_dim: width of that backbone's time embedding, e.g. 512.
        n_train_steps: DDIM steps used in training (the ``ngen40`` in official names: 40), or None.
        t_edit, t_boost: the editing interval bounds, if known.
        source_text, target_text: the training texts, if known.
        schedule: the noise schedule, if known.

    Returns:
        The direction, in eval mode, with ``meta.extra["imported_from"]`` set to the file name.

    Raises:
        FileNotFoundError: no such file.
        DirectionFileError: the file cannot be read with ``weights_only=True``, has no ``"0"``
            entry, its keys match neither layout, or its shapes disagree with h_shape/temb_dim.
    """
    path = Path(pth_path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise DirectionFileError(
            f"{path}: cannot read it as an official Asyrp checkpoint with torch.load(weights_only=True): {err}"
        ) from err
    if not isinstance(obj, dict):
        raise DirectionFileError(f"{path}: expected a dict with key '0' (the f_t state dict), got {type(obj).__name__}")
    if "0" in obj:
        state_dict = obj["0"]
    elif any(frozenset(obj) == keys for keys in OFFICIAL_LAYOUTS.values()):
        state_dict = obj
    else:
        raise DirectionFileError(
            f"{path}: no key '0' (the f_t state dict) in the checkpoint; found keys {sorted(map(str, obj))}"
        )
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise DirectionFileError(f"{path}: entry '0' is not a state dict of tensors")
    variant = detect_official_variant(state_dict, str(path))
    conv_key, temb_key = _SHAPE_KEYS[variant]
    if state_dict[temb_key].dim() != 2:
        raise DirectionFileError(f"{path}: {temb_key} has shape {list(state_dict[temb_key].shape)}, expected [C, E]")
    channels, file_temb = state_dict[temb_key].shape
    h_shape = tuple(h_shape)
    if len(h_shape) != 3:
        raise ValueError(f"h_shape must be (C, H, W), got {h_shape!r}")
    if channels != h_shape[0] or file_temb != temb_dim or tuple(state_dict[conv_key].shape) != (channels, channels, 1, 1):
        raise DirectionFileError(
            f"{path}: the checkpoint's f_t has {channels} channels and temb_dim {file_temb} "
            f"({conv_key} {list(state_dict[conv_key].shape)}, {temb_key} {list(state_dict[temb_key].shape)}), "
            f"but the backbone has h {list(h_shape)} and temb_dim {temb_dim}; import it for the backbone it was trained on"
        )
    meta = DirectionMeta(
        kind=f"implicit-{variant}",
        h_shape=h_shape,
        backbone_id=backbone_id,
        temb_dim=temb_dim,
        source_text=source_text,
        target_text=target_text,
        t_edit=t_edit,
        t_boost=t_boost,
        n_train_steps=n_train_steps,
        schedule=schedule,
        extra={"imported_from": path.name},
    )
    direction = ImplicitDirection(variant, int(channels), int(temb_dim), meta=meta)
    try:
        direction.load_official_state_dict({k: v.float() for k, v in state_dict.items()})
    except ValueError as err:
        raise DirectionFileError(f"{path}: {err}") from err
    return direction.eval()
