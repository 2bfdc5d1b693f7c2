"""Writers for results: output folders, grids, strips, GIFs, JSON and the ``run.json`` record.

Nothing here deletes files, and nothing overwrites a file unless asked to: use
:func:`prepare_output_dir` for a run's folder and :func:`safe_path` before writing a file.
Image cells are tensors ``[3, H, W]`` in ``[-1, 1]`` (hspace's convention) or PIL images.

Example:
    >>> import torch
    >>> from hspace.outputs import make_grid
    >>> make_grid([[torch.zeros(3, 8, 8), torch.ones(3, 8, 8)]], pad=2).size
    (22, 12)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .io import to_pil

__all__ = [
    "prepare_output_dir",
    "safe_path",
    "make_grid",
    "save_strip",
    "save_gif",
    "to_jsonable",
    "write_json",
    "run_record",
]

Cell = torch.Tensor | Image.Image


# --------------------------------------------------------------------------- paths


def prepare_output_dir(path: Path | str, overwrite: bool = False) -> Path:
    """Create an output folder, refusing to reuse a non-empty one unless ``overwrite``.

    With ``overwrite=True`` the folder's existing files stay where they are; files the run
    writes under the same names replace them. Nothing is ever deleted.

    Args:
        path: the folder (parents are created as needed).
        overwrite: allow writing into an existing non-empty folder.

    Returns:
        The folder as a Path (``~`` expanded).

    Raises:
        FileExistsError: the folder exists, is not empty and ``overwrite`` is False; or
            ``path`` is an existing file. The message says how to proceed.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output path {path} is an existing file, not a folder; choose another output folder")
    if path.is_dir() and not overwrite:
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
            raise FileExistsError(
                f"output folder {path} already exists and is not empty ({shown}); "
                "pass --overwrite to write into it (same-named files are replaced, nothing is deleted) "
                "or choose another folder"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def safe_path(path: Path | str, overwrite: bool = False, protected: set[Path] | None = None) -> Path:
    """Check that ``path`` may be written, create its parent folder, and return it.

    Args:
        path: the file about to be written.
        overwrite: allow replacing an existing file (never an input, see ``protected``).
        protected: files that must never be written, whatever ``overwrite`` says
            (typically the input images).

    Returns:
        ``path`` as a Path (``~`` expanded).

    Raises:
        FileExistsError: ``path`` is one of ``protected``; or it exists and ``overwrite`` is
            False; or it is an existing folder. The message says how to proceed.
    """
    path = Path(path).expanduser()
    for p in protected or ():
        if _same_file(path, Path(p).expanduser()):
            raise FileExistsError(
                f"refusing to write {path}: it is one of the input files; choose another output folder"
            )
    if path.is_dir():
        raise FileExistsError(f"cannot write file {path}: a folder with that name exists; choose another name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- images


def _to_image(cell: Cell, where: str) -> Image.Image:
    if isinstance(cell, Image.Image):
        return cell.convert("RGB")
    if isinstance(cell, torch.Tensor):
        try:
            return to_pil(cell)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
    raise TypeError(f"{where}: expected a tensor [3, H, W] in [-1, 1] or a PIL image, got {type(cell).__name__}")


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` with '..' until it fits ``width`` pixels."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "..", font)[0] > width:
        text = text[:-1]
    return text + ".." if text else ""


def make_grid(
    rows: Sequence[Sequence[Cell]],
    pad: int = 2,
    labels: Sequence[str] | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Arrange images in a grid (e.g. one row per input: input, reconstruction, edits).

    Rows may have different lengths; missing cells are left blank. All cells must share one
    size.

    Args:
        rows: ``rows[i][j]`` is a tensor ``[3, H, W]`` in ``[-1, 1]`` or a PIL image.
        pad: pixels between cells and around the border.
        labels: optional column headers, one per column (e.g. ``["input", "s=-1", "s=1"]``),
            drawn above the grid with Pillow's default font (shortened to fit a cell).
        row_labels: optional text, one per row, drawn to the left of each row.
        background: RGB of padding and blank cells.

    Returns:
        The grid as an RGB PIL image.

    Raises:
        ValueError: no images, cells of different sizes, a bad tensor (message names the
            cell), or a label count that does not match the columns/rows.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if not rows or not any(len(r) for r in rows):
        raise ValueError("make_grid needs at least one image, got none")
    images = [[_to_image(c, f"grid cell [{i}][{j}]") for j, c in enumerate(r)] for i, r in enumerate(rows)]
    sizes = {im.size for r in images for im in r}
    if len(sizes) != 1:
        raise ValueError(f"all grid cells must have the same size, got (width, height) {sorted(sizes)}")
    (w, h), = sizes
    n_rows, n_cols = len(images), max(len(r) for r in images)
    if labels is not None and len(labels) != n_cols:
        raise ValueError(f"labels must have one entry per column ({n_cols}), got {len(labels)}")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"row_labels must have one entry per row ({n_rows}), got {len(row_labels)}")

    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(probe, "Ag", font)[1]
    top = (text_h + 2 * max(pad, 2)) if labels is not None else 0
    left = 0
    if row_labels is not None:
        widest = max((_text_size(probe, str(t), font)[0] for t in row_labels), default=0)
        left = min(widest, 4 * w) + 2 * max(pad, 2)
    width = left + pad + n_cols * (w + pad)
    height = top + pad + n_rows * (h + pad)
    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    ink = (0, 0, 0) if sum(background) > 382 else (255, 255, 255)
    for i, r in enumerate(images):
        y = top + pad + i * (h + pad)
        for j, im in enumerate(r):
            grid.paste(im, (left + pad + j * (w + pad), y))
        if row_labels is not None:
            text = _fit(draw, str(row_labels[i]), font, left - 2 * max(pad, 2))
            th = _text_size(draw, text, font)[1]
            draw.text((max(pad, 2), y + (h - th) // 2), text, fill=ink, font=font)
    if labels is not None:
        for j, label in enumerate(labels):
            text = _fit(draw, str(label), font, w)
            tw = _text_size(draw, text, font)[0]
            draw.text((left + pad + j * (w + pad) + (w - tw) // 2, max(pad, 2)), text, fill=ink, font=font)
    return grid


def save_strip(
    images: Sequence[Cell], path: Path | str, *, pad: int = 0, labels: Sequence[str] | None = None
) -> Path:
    """Write a horizontal strip PNG (e.g. an interpolation sweep over strengths).

    Overwrites ``path``: check it with :func:`safe_path` first.

    Args:
        images: the frames, left to right (tensors ``[3, H, W]`` in ``[-1, 1]`` or PIL images).
        path: destination file (``.png`` recommended).
        pad: pixels between frames.
        labels: optional text above each frame (e.g. the strength).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    if not images:
        raise ValueError("save_strip needs at least one image, got none")
    grid = make_grid([list(images)], pad=pad, labels=labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def save_gif(
    images: Sequence[Cell],
    path: Path | str,
    duration_ms: int = 120,
    loop: int = 0,
    bounce: bool = True,
) -> Path:
    """Write an animated GIF of ``images``.

    Overwrites ``path``: check it with :func:`safe_path` first.

    Args:
        images: the frames (tensors ``[3, H, W]`` in ``[-1, 1]`` or PIL images), same size.
        path: destination file (``.gif``).
        duration_ms: display time per frame.
        loop: number of repeats; 0 loops forever.
        bounce: play forwards then backwards (frames ``0..n-1`` then ``n-2..1``), so a sweep
            from ``-s`` to ``+s`` animates smoothly without a jump.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: no frames, frames of different sizes, or ``duration_ms`` < 1.
    """
    path = Path(path)
    if not images:
        raise ValueError("save_gif needs at least one frame, got none")
    if duration_ms < 1:
        raise ValueError(f"duration_ms must be >= 1, got {duration_ms}")
    frames = [_to_image(im, f"GIF frame {i}") for i, im in enumerate(images)]
    sizes = {f.size for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"all GIF frames must have the same size, got (width, height) {sorted(sizes)}")
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=duration_ms,
        loop=loop,
        disposal=1,
        optimize=False,
    )
    return path


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Handles dataclasses (field by field), mappings (keys become strings), sequences and
    sets, Paths, enums, datetimes, torch dtypes/devices, tensors and numpy arrays (nested
    lists; 0-d become numbers) and numpy scalars. Non-finite floats become the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so that the file stays valid JSON. Other
    objects become their ``str``.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def write_json(obj: Any, path: Path | str) -> Path:
    """Write ``obj`` as pretty JSON (indent 2, sorted keys, trailing newline).

    Values are converted with :func:`to_jsonable`. The file is written to a temporary name
    and renamed, so a crash never leaves half a file. Overwrites ``path``: check it with
    :func:`safe_path` first.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_record(config: Any = None, /, **extra: Any) -> dict:
    """The provenance record a run writes as ``run.json``.

    Args:
        config: the resolved run configuration (a dataclass or a dict); stored under
            ``"config"``, with its class name under ``"config_type"``.
        **extra: more top-level entries (e.g. ``command="edit"``, ``inputs=[...]``,
            ``backbone_id=...``); they may not reuse the standard keys.

    Returns:
        A JSON-ready dict with ``hspace_version``, ``versions`` (python, torch, diffusers,
        transformers, numpy, pillow, safetensors, huggingface_hub), ``platform``,
        ``timestamp`` (UTC, ISO 8601), ``argv``, ``config_type`` and ``config``.

    Raises:
        ValueError: an ``extra`` key collides with a standard key.
    """
    from . import __version__

    record: dict[str, Any] = {
        "hspace_version": __version__,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": _version("diffusers"),
            "transformers": _version("transformers"),
            "numpy": np.__version__,
            "pillow": _version("Pillow") or _version("pillow"),
            "safetensors": _version("safetensors"),
            "huggingface_hub": _version("huggingface_hub"),
        },
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
        },
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "config_type": None if config is None else type(config).__name__,
        "config": to_jsonable(config),
    }
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ValueError(f"run_record extra keys {clash} collide with standard keys {sorted(record)}")
    record.update(to_jsonable(extra))
    return record
