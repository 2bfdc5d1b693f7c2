"""Reading checkpoint files safely, shared by the model families that load raw state dicts.

Pickled files go through ``torch.load(map_location="cpu", weights_only=True)`` only: nothing
but tensors and plain containers is ever unpickled. ``.safetensors`` is read directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["PICKLE_SUFFIXES", "extract_state_dict", "read_state_dict", "key_listing"]

PICKLE_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "ema", "net")


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded checkpoint object.

    Accepts a bare state dict, a list/tuple whose first element is one (DDIM training's
    ``[model.state_dict(), optimizer.state_dict(), ...]``), or a dict holding one under
    ``state_dict``/``model``/``model_state_dict``/``ema``/``net``.

    Raises:
        ValueError: no state dict found (the message lists what the object holds).
    """
    if _looks_like_state_dict(obj):
        return dict(obj)
    if isinstance(obj, (list, tuple)) and obj and _looks_like_state_dict(obj[0]):
        return dict(obj[0])
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if _looks_like_state_dict(obj.get(key)):
                return dict(obj[key])
        what = f"a dict with keys {sorted(map(str, obj))[:10]}"
    elif isinstance(obj, (list, tuple)):
        what = f"a {type(obj).__name__} of {len(obj)} items ({', '.join(type(o).__name__ for o in obj[:5])})"
    else:
        what = f"a {type(obj).__name__}"
    raise ValueError(
        f"{source}: found no model state dict in {what}; expected a dict of tensors, a list whose first "
        f"element is one, or a dict holding one under one of {list(_WRAPPER_KEYS)}"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (on the CPU) from ``.ckpt``/``.pth``/``.pt``/``.bin`` or ``.safetensors``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, unreadable file, or no state dict inside (the file is named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path}: cannot read as safetensors: {err}") from err
    if suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint suffix {suffix!r}; expected one of {PICKLE_SUFFIXES} or .safetensors")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: cannot load with torch.load(weights_only=True) ({type(err).__name__}: {str(err).strip()[:300]}). "
            "Only plain tensor checkpoints are accepted; re-save the state dict "
            "(torch.save(model.state_dict(), ...)) or convert it to .safetensors"
        ) from err
    return extract_state_dict(obj, source=str(path))


def key_listing(keys: Sequence[str], limit: int = 10) -> str:
    """``"N [k1, k2, ... (+M more)]"`` for error messages, sorted."""
    keys = sorted(keys)
    more = f", ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} [{', '.join(keys[:limit])}{more}]"
