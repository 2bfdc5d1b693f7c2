"""The one direction file format: a single ``.safetensors`` file that describes itself.

Tensors: the direction's weights (an implicit f_t under the official key names, e.g.
``conv1.weight``; a per-step direction as ``dh.t<timestep>``; a global one as ``dh``).
Safetensors metadata: key ``"hspace"`` holds a JSON header::

    {"format_version": 1, "hspace_version": "0.1.0",
     "kind": "implicit-ddpm" | "implicit-adm" | "per-step" | "global",
     "config": {...constructor arguments...},
     "meta": {...DirectionMeta fields: backbone_id, h_shape, temb_dim, texts, t_edit, ...}}

Loading never unpickles anything. Official ``.pth`` checkpoints are a separate input,
converted by :func:`hspace.directions.import_official` (CLI: ``hspace import-official``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from .base import Direction, DirectionFileError, DirectionMeta, DirectionMismatchError
from .compose import ComposedDirection, ScaledDirection
from .implicit import ImplicitDirection
from .simple import GlobalDirection, PerStepDirection

__all__ = [
    "FORMAT_VERSION",
    "HEADER_KEY",
    "FILE_KINDS",
    "save_direction",
    "load_direction",
    "read_direction_header",
    "check_direction_fits",
]

FORMAT_VERSION = 1
HEADER_KEY = "hspace"
FILE_KINDS: tuple[str, ...] = ("implicit-ddpm", "implicit-adm", "per-step", "global")
_NOT_OURS = (
    "this is not an hspace direction file; official .pth files are converted with `hspace import-official` "
    "(library: hspace.directions.import_official)"
)


def _weights(direction: Direction) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    if isinstance(direction, ImplicitDirection):
        kind, config, sd = f"implicit-{direction.variant}", direction.config(), direction.block.state_dict()
    elif isinstance(direction, (PerStepDirection, GlobalDirection)):
        kind, config, sd = direction.meta.kind, direction.config(), direction.state_dict()
    else:
        hint = (
            " save each member separately and combine them again after loading"
            if isinstance(direction, (ScaledDirection, ComposedDirection))
            else ""
        )
        raise TypeError(
            f"cannot save a {type(direction).__name__}: direction files hold one of {FILE_KINDS} "
            f"(ImplicitDirection, PerStepDirection, GlobalDirection);{hint}"
        )
    return kind, config, {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def _check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise DirectionFileError(
                f"{where}: tensor {name!r} holds {n_bad} NaN/inf value(s) of {tensor.numel()}; "
                "the direction diverged during training; retrain it (e.g. with a lower learning rate)"
            )


def save_direction(direction: Direction, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``direction`` to one self-describing ``.safetensors`` file.

    The file is written to a temporary name and renamed, so an interrupted save never leaves
    a half-written direction behind. Parent folders are created.

    Args:
        direction: an :class:`ImplicitDirection`, :class:`PerStepDirection` or :class:`GlobalDirection`.
        path: destination (``.safetensors`` recommended).
        overwrite: replace an existing file. Without it an existing file is an error.

    Returns:
        The path written.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is False.
        TypeError: the direction kind cannot be stored (e.g. a ComposedDirection).
        DirectionFileError: a weight holds NaN/inf (such a file could not be loaded again).
        ValueError: the meta is not JSON-serialisable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file path such as {path / 'direction.safetensors'}")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it, or choose another path"
        )
    kind, config, tensors = _weights(direction)
    _check_finite(tensors, f"cannot save {path}")
    header = {
        "format_version": FORMAT_VERSION,
        "hspace_version": __version__,
        "kind": kind,
        "config": config,
        "meta": direction.meta.replace(kind=kind).to_dict(),
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot save {path}: the direction's meta is not JSON-serialisable ({err}); check meta.extra / meta.schedule") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: text})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _open_header(path: Path) -> tuple[dict[str, Any], Any]:
    if not path.exists():
        raise FileNotFoundError(f"direction file not found: {path}")
    if path.is_dir():
        raise DirectionFileError(f"{path} is a folder, expected a direction .safetensors file")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own error type for malformed files
        with open(path, "rb") as fh:
            magic = fh.read(2)
        hint = " (it looks like a zip/torch .pth file)" if magic == b"PK" else ""
        raise DirectionFileError(f"{path} is not a safetensors file{hint}: {err}. {_NOT_OURS}") from err
    raw = (handle.metadata() or {}).get(HEADER_KEY)
    if raw is None:
        raise DirectionFileError(f"{path}: no {HEADER_KEY!r} header in the safetensors metadata; {_NOT_OURS}")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DirectionFileError(f"{path}: the {HEADER_KEY!r} header is not valid JSON ({err}); {_NOT_OURS}") from err
    if not isinstance(header, dict) or not {"format_version", "kind", "config", "meta"} <= set(header):
        found = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise DirectionFileError(
            f"{path}: invalid {HEADER_KEY!r} header, expected keys format_version, kind, config, meta; found {found}. {_NOT_OURS}"
        )
    version = header["format_version"]
    if version != FORMAT_VERSION:
        raise DirectionFileError(
            f"{path}: direction format_version {version!r} (written by hspace {header.get('hspace_version', '?')}), "
            f"this hspace {__version__} reads format_version {FORMAT_VERSION}; upgrade hspace to load it"
        )
    if header["kind"] not in FILE_KINDS:
        raise DirectionFileError(f"{path}: unknown direction kind {header['kind']!r}, expected one of {FILE_KINDS}")
    if not isinstance(header["config"], dict) or not isinstance(header["meta"], dict):
        raise DirectionFileError(f"{path}: header 'config' and 'meta' must be JSON objects")
    return header, handle


def read_direction_header(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed JSON header of a direction file, without loading its tensors (for ``hspace info``).

    Raises:
        FileNotFoundError, DirectionFileError: as :func:`load_direction`.
    """
    return _open_header(Path(path))[0]


def _build(kind: str, config: dict[str, Any], meta: DirectionMeta) -> Direction:
    if kind.startswith("implicit-"):
        if config.get("variant") != kind.removeprefix("implicit-"):
            raise ValueError(f"config variant {config.get('variant')!r} disagrees with kind {kind!r}")
        return ImplicitDirection(**config, meta=meta)
    if kind == "per-step":
        return PerStepDirection(**config, meta=meta)
    return GlobalDirection(**config, meta=meta)


def load_direction(path: str | os.PathLike, backbone: Any = None) -> Direction:
    """Load a direction file written by :func:`save_direction`.

    Args:
        path: the ``.safetensors`` file.
        backbone: optional :class:`~hspace.backbones.Backbone`; when given, the direction is
            checked with :func:`check_direction_fits`.

    Returns:
        The rebuilt direction (an ``nn.Module`` in eval mode, on the CPU).

    Raises:
        FileNotFoundError: no such file.
        DirectionFileError: not a safetensors file, no/invalid hspace header, unknown
            format_version or kind, a config/meta that does not rebuild, weights that do not
            match the config, or NaN/inf in a tensor (the tensor is named).
        DirectionMismatchError: the direction does not fit ``backbone``.
    """
    path = Path(path)
    header, handle = _open_header(path)
    kind = header["kind"]
    tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    _check_finite(tensors, f"refusing to load {path}")
    try:
        meta = DirectionMeta.from_dict({**header["meta"], "kind": kind})
        direction = _build(kind, header["config"], meta)
        if isinstance(direction, ImplicitDirection):
            direction.load_official_state_dict(tensors)
        else:
            direction.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DirectionFileError(f"{path}: cannot rebuild the {kind!r} direction from its header and weights: {err}") from err
    direction.eval()
    if backbone is not None:
        check_direction_fits(direction, backbone)
    return direction


def _leaves(direction: Direction) -> list[Direction]:
    if isinstance(direction, ScaledDirection):
        return _leaves(direction.direction)
    if isinstance(direction, ComposedDirection):
        return [leaf for d, _ in direction.members for leaf in _leaves(d)]
    return [direction]


def _describe(meta: DirectionMeta) -> str:
    return f"h {list(meta.h_shape)}, temb_dim {meta.temb_dim}"


def check_direction_fits(direction: Direction, backbone: Any) -> None:
    """Check that ``direction`` can edit the h of ``backbone``.

    Rules, per leaf of a scaled/composed direction: the channel count of h must match; the
    spatial size must match for free-tensor directions (per-step, global), while an implicit
    f_t (1x1 convs) only warns on a spatial difference; a direction that consumes the time
    embedding needs ``backbone.temb_dim``. A different backbone id with fitting shapes only warns.

    Raises:
        DirectionMismatchError: with both shapes, both temb widths and both backbone ids.
    """
    bb_shape = tuple(backbone.h_shape)
    bb_temb = backbone.temb_dim
    bb_id = getattr(backbone, "backbone_id", None)
    problems: list[str] = []
    for leaf in _leaves(direction):
        m = leaf.meta
        if m.h_shape[0] != bb_shape[0]:
            problems.append(f"{m.kind}: h has {m.h_shape[0]} channels, backbone has {bb_shape[0]}")
        elif len(m.h_shape) == 3 and tuple(m.h_shape[1:]) != bb_shape[1:]:
            msg = f"{m.kind}: h is {m.h_shape[1]}x{m.h_shape[2]}, backbone's is {bb_shape[1]}x{bb_shape[2]}"
            if isinstance(leaf, ImplicitDirection):
                warnings.warn(f"{msg}; an implicit f_t runs at any size, but it was trained at another one")
            else:
                problems.append(msg)
        if m.temb_dim is not None and m.temb_dim != bb_temb:
            problems.append(f"{m.kind}: temb_dim {m.temb_dim}, backbone's is {bb_temb}")
    meta = direction.meta
    if problems:
        raise DirectionMismatchError(
            f"direction ({meta.kind}, made for backbone {meta.backbone_id!r}: {_describe(meta)}) does not fit "
            f"backbone {bb_id!r} (h {list(bb_shape)}, temb_dim {bb_temb}): " + "; ".join(problems)
            + ". Use a direction trained for this backbone, or the backbone the direction was trained on."
        )
    ids = {leaf.meta.backbone_id for leaf in _leaves(direction)} - {None}
    for other in sorted(ids):
        if bb_id is not None and other != bb_id:
            warnings.warn(
                f"direction was made for backbone {other!r} but is used with {bb_id!r}; the shapes fit "
                f"(h {list(bb_shape)}, temb_dim {bb_temb}), so going on, but the edit may mean something else"
            )
