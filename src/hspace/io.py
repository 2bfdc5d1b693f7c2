"""Image input/output: find, load, validate, resize, and convert to and from tensors.

Functions only, never interactive. Image tensors follow one convention everywhere in
hspace: float32, RGB, ``[B, 3, H, W]`` (or ``[3, H, W]`` for one image), values in
``[-1, 1]``.

Example:
    >>> import torch
    >>> from hspace.io import to_pil
    >>> to_pil(torch.zeros(3, 8, 8)).size
    (8, 8)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "LoadedImages",
    "find_images",
    "load_image",
    "load_images",
    "validate_images",
    "to_pil",
    "save_image",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case, with the dot) that :func:`find_images` picks up in folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# Pillow modes that hold more than 8 bits per sample, and their full-scale value.
_HIGH_BIT_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


class ImageLoadError(ValueError):
    """An image file could not be read or decoded. The message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path}: {reason}")


@dataclass
class LoadedImages:
    """The result of :func:`load_images`.

    Attributes:
        images: ``[B, 3, S, S]`` float32 in ``[-1, 1]``, one row per entry of ``paths``
            (``B`` may be 0 when every file failed).
        paths: the files that loaded, in input order.
        failed: ``(path, reason)`` for each file that did not load, in input order.
        notices: human-readable notes about conversions (resizing, cropping, alpha, bit depth).
    """

    images: torch.Tensor
    paths: list[Path]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_requested(self) -> int:
        """How many files were asked for (loaded + failed)."""
        return len(self.paths) + len(self.failed)

    def summary(self) -> str:
        """One line such as ``"8 of 10 images loaded; 2 failed: a.png (reason), b.jpg (reason)"``."""
        text = f"{len(self.paths)} of {self.num_requested} images loaded"
        if self.failed:
            details = ", ".join(f"{p.name} ({reason})" for p, reason in self.failed)
            text += f"; {len(self.failed)} failed: {details}"
        return text


def _natural_key(path: Path) -> list:
    """Sort key that puts ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def find_images(inputs: list[Path] | list[str] | Path | str) -> list[Path]:
    """Expand files and folders into a list of image files.

    Files are kept as given (whatever their extension: an unreadable one fails later, at
    load time, with a reason). Folders are listed non-recursively; files in them whose
    extension is one of :data:`IMAGE_EXTENSIONS` (any case) are taken, hidden files
    (names starting with ``.``) are skipped, and the result is sorted by name with numbers
    in natural order. Duplicates (the same resolved file twice) are dropped.

    Args:
        inputs: files and/or folders, in the order they should be processed.

    Returns:
        The image paths.

    Raises:
        FileNotFoundError: an input does not exist (the message names it).
        ValueError: ``inputs`` is empty, or a folder contains no images (the message names
            the folder and the accepted extensions).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = [Path(p).expanduser() for p in inputs]
    if not inputs:
        raise ValueError("no input images given: pass at least one image file or folder")
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        if not item.exists():
            raise FileNotFoundError(f"input not found: {item}")
        if item.is_dir():
            files = sorted(
                (
                    p
                    for p in item.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
                ),
                key=_natural_key,
            )
            if not files:
                raise ValueError(
                    f"folder {item} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)}; "
                    "sub-folders are not searched)"
                )
        else:
            files = [item]
        for p in files:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                found.append(p)
    return found


def _open_rgb(path: Path) -> tuple[Image.Image, list[str]]:
    """Open and decode ``path`` fully, and convert it to 8-bit RGB. Returns the image and notes."""
    notes: list[str] = []
    if not path.exists():
        raise ImageLoadError(path, "file not found")
    if path.is_dir():
        raise ImageLoadError(path, "it is a folder, not an image file")
    try:
        with Image.open(path) as img:
            n_frames = getattr(img, "n_frames", 1)
            img.load()
            if n_frames > 1:
                notes.append(f"has {n_frames} frames, used the first")
            img = ImageOps.exif_transpose(img)  # a camera's rotation tag, applied as a viewer would
            img.load()
    except FileNotFoundError as e:  # removed between the check and the open
        raise ImageLoadError(path, "file not found") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(path, "not a recognised image format (corrupt, empty, or not an image)") from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"image too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(path, f"corrupt or truncated image data ({type(e).__name__}: {e})") from e
    if img.width == 0 or img.height == 0:
        raise ImageLoadError(path, f"image is empty ({img.width}x{img.height})")

    mode = img.mode
    if mode == "RGB":
        return img, notes
    if mode in _HIGH_BIT_MODES or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode in _HIGH_BIT_MODES:
            full = _HIGH_BIT_MODES[mode]
        elif mode == "F":
            # Floating-point TIFFs: [0, 1] data is the common case; anything larger is taken as 16-bit scale.
            full = 1.0 if arr.max(initial=0.0) <= 1.0 else (255.0 if arr.max() <= 255.0 else 65535.0)
        else:
            # 32-bit integer mode ("I"): Pillow uses it for 16-bit grayscale PNGs. Values above 255
            # mean 16-bit data; below that the image is already on the 8-bit scale.
            full = 65535.0 if arr.max(initial=0.0) > 255.0 else 255.0
        if not np.isfinite(arr).all():
            raise ImageLoadError(path, "image contains NaN or infinite values")
        arr8 = np.clip(np.round(arr / full * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr8, mode="L").convert("RGB")
        notes.append(f"{mode} grayscale scaled from 0..{int(full)} to 8-bit RGB")
        return img, notes
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if alpha.min() < 255:
            notes.append(f"{mode} transparency composited on white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), notes
    if mode in ("L", "1", "I;8"):
        notes.append("grayscale converted to RGB")
        return img.convert("L").convert("RGB"), notes
    if mode == "P":
        return img.convert("RGB"), notes
    try:
        return img.convert("RGB"), notes  # CMYK, YCbCr, LAB, HSV, ...
    except (ValueError, OSError) as e:
        raise ImageLoadError(path, f"cannot convert Pillow mode {mode!r} to RGB ({e})") from e


def _square_resize(img: Image.Image, size: int) -> tuple[Image.Image, str | None]:
    """Centre-crop to a square and resize to ``size``; returns the image and a note (or None)."""
    w, h = img.size
    note_parts = []
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        note_parts.append(f"centre-cropped from {w}x{h} to {side}x{side}")
    side = img.size[0]
    if side != size:
        resample = Image.Resampling.LANCZOS if side > size else Image.Resampling.BICUBIC
        img = img.resize((size, size), resample=resample)
        note_parts.append(
            f"{'resized' if not note_parts else 'then resized'} from {side}x{side} to {size}x{size}"
        )
    return img, (", ".join(note_parts) if note_parts else None)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def load_image(path: Path | str, size: int) -> tuple[torch.Tensor, list[str]]:
    """Load one image as a ``[3, size, size]`` float32 tensor in ``[-1, 1]``.

    Grayscale, palette, 16-bit (scaled from 0..65535, not clipped) and CMYK images are
    converted to 8-bit RGB; transparency is composited on white; an EXIF rotation tag is
    applied. A non-square image is centre-cropped to its shorter side, and any image whose
    side is not ``size`` is resized (LANCZOS when shrinking, BICUBIC when enlarging).

    Args:
        path: the image file.
        size: side length in pixels of the square output (the model's native size).

    Returns:
        ``(image, notices)``: the tensor ``[3, size, size]``, and human-readable notes (each
        naming the file) about every conversion made; empty when the file was used as is.

    Raises:
        ImageLoadError: the file is missing, unreadable, corrupt or truncated (a ValueError;
            the message names the file and the reason).
        ValueError: ``size`` is not a positive integer.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    path = Path(path)
    img, notes = _open_rgb(path)
    img, resize_note = _square_resize(img, size)
    if resize_note:
        notes.append(resize_note)
    notices = [f"{path}: {'; '.join(notes)}"] if notes else []
    return _pil_to_tensor(img), notices


def load_images(paths: list[Path] | list[str], size: int) -> LoadedImages:
    """Load many images, keeping going past files that fail.

    Args:
        paths: image files (e.g. from :func:`find_images`).
        size: side length of the square outputs.

    Returns:
        :class:`LoadedImages` with the stacked batch ``[B, 3, size, size]`` of the files that
        loaded, their paths, the ``(path, reason)`` of each failure, and all notices. Use
        :meth:`LoadedImages.summary` to report e.g. "8 of 10 images loaded; 2 failed: ...".

    Raises:
        ValueError: ``size`` is not a positive integer.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    tensors: list[torch.Tensor] = []
    ok: list[Path] = []
    failed: list[tuple[Path, str]] = []
    notices: list[str] = []
    for p in paths:
        p = Path(p)
        try:
            x, notes = load_image(p, size)
        except ImageLoadError as e:
            logger.warning("%s", e)
            failed.append((p, e.reason))
            continue
        tensors.append(x)
        ok.append(p)
        notices.extend(notes)
    images = torch.stack(tensors) if tensors else torch.empty(0, 3, size, size)
    return LoadedImages(images=images, paths=ok, failed=failed, notices=notices)


def _describe(x: torch.Tensor) -> str:
    if x.numel() == 0:
        return f"shape {list(x.shape)} (empty)"
    xf = x.detach().float()
    finite = torch.isfinite(xf)
    if finite.all():
        return f"shape {list(x.shape)}, dtype {x.dtype}, values in [{xf.min().item():.4g}, {xf.max().item():.4g}]"
    n_bad = int((~finite).sum())
    return f"shape {list(x.shape)}, dtype {x.dtype}, with {n_bad} NaN/inf values"


def validate_images(
    x: torch.Tensor, *, name: str = "images", batched: bool = True, range_tol: float = 1e-3
) -> torch.Tensor:
    """Check that ``x`` is an image batch in hspace's convention; return it unchanged.

    Args:
        x: expected ``[B, 3, H, W]`` (``[3, H, W]`` when ``batched`` is False), floating point,
            finite, values in ``[-1, 1]``.
        name: what to call ``x`` in the error message.
        batched: whether a batch dimension is expected.
        range_tol: how far values may stray outside ``[-1, 1]`` (rounding slack).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong shape, dtype, non-finite values or values out of range; the message
            states what was received and what was expected.
    """
    expected = "[B, 3, H, W]" if batched else "[3, H, W]"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {expected} in [-1, 1], got {type(x).__name__}")
    ndim = 4 if batched else 3
    if x.dim() != ndim or x.shape[-3] != 3 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have shape {expected} (RGB, values in [-1, 1]), got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor with values in [-1, 1], got {_describe(x)}; "
            "convert 8-bit data with x.float() / 127.5 - 1"
        )
    if x.numel():
        xf = x.detach()
        if not torch.isfinite(xf).all():
            raise ValueError(f"{name} must be finite with values in [-1, 1], got {_describe(x)}")
        lo, hi = xf.min().item(), xf.max().item()
        if lo < -1.0 - range_tol or hi > 1.0 + range_tol:
            hint = " (it looks like 0..255 data: use x / 127.5 - 1)" if hi > 2.0 else ""
            raise ValueError(f"{name} must have values in [-1, 1], got {_describe(x)}{hint}")
    return x


def to_pil(x: torch.Tensor, *, range_tol: float = 0.5) -> Image.Image:
    """Convert one image tensor to an 8-bit RGB PIL image.

    Values are clipped to ``[-1, 1]`` (diffusion samples overshoot slightly) and mapped to
    0..255 with rounding, so ``to_pil`` inverts :func:`load_image` exactly for 8-bit data.

    Args:
        x: ``[3, H, W]`` (or ``[1, 3, H, W]``) in ``[-1, 1]``, any float dtype or device.
        range_tol: values further than this outside ``[-1, 1]`` raise instead of being
            clipped, since they usually mean a tensor in the wrong convention.

    Raises:
        ValueError: wrong shape, non-finite values, or values beyond ``[-1 - range_tol,
            1 + range_tol]``; the message states what came in.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        raise ValueError(f"to_pil takes one image [3, H, W]; got a batch, {_describe(x)}: pass x[i]")
    validate_images(x, name="image", batched=False, range_tol=range_tol)
    arr = ((x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")


def save_image(x: torch.Tensor, path: Path | str, *, quality: int = 95) -> Path:
    """Write one image tensor ``[3, H, W]`` in ``[-1, 1]`` to ``path``; the format follows the extension.

    This function overwrites ``path`` if it exists: check first with
    :func:`hspace.outputs.safe_path`. The parent folder is created if missing.

    Args:
        x: the image (see :func:`to_pil`).
        path: destination; ``.png`` (lossless) is recommended, ``.jpg``/``.jpeg`` use ``quality``.
        quality: JPEG/WebP quality 1..100.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: bad tensor (see :func:`to_pil`) or an extension Pillow cannot write.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"cannot save image to {path}: unsupported extension {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    img = to_pil(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": quality} if ext in (".jpg", ".jpeg", ".webp") else {}
    img.save(path, **kwargs)
    return path
