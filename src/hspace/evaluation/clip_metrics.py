"""Text alignment of an edit with any :class:`~hspace.encoders.ImageTextEncoder` (CLIP).

* **Directional CLIP similarity** (StyleGAN-NADA, used by Asyrp as the training loss and as an
  evaluation): ``S_dir = cos(dI, dT)`` with ``dI = e(edited) - e(source)`` and
  ``dT = t(target) - t(source)``, where ``e``/``t`` are the image/text embeddings normalised to unit
  length first (as the paper's ``CLIPLoss`` does). 1 means the image moved exactly along the text
  direction. An image whose embedding did not move (``|dI| <= 1e-6``, e.g. edited == source) has no
  direction: its S_dir is defined as **0.0** and it is counted in ``n_unchanged``; never NaN.
* **CLIP score**: ``cos(e(image), t(target))`` per image, reported for the source and the edited
  images and their difference. ``clip_score_x100`` is ``100 * max(cos, 0)``, the convention of
  torchmetrics' ``CLIPScore`` (Hessel et al.'s CLIPScore uses ``2.5 * max(cos, 0)`` instead).

Scores depend on the encoder: ``"tiny-random-clip"`` has random weights, so its numbers exercise the
code path and mean nothing (:func:`encoder_is_meaningful`).

Example:
    >>> import torch
    >>> from hspace.encoders import load_encoder
    >>> enc = load_encoder("tiny-random-clip")
    >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> directional_similarity(enc, x, x, "face", "smiling face").tolist()   # nothing moved: 0 by definition
    [0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..encoders import TINY_CLIP_NAME, ImageTextEncoder

__all__ = [
    "UNCHANGED_EPS",
    "encode_images",
    "directional_similarity",
    "clip_score",
    "clip_edit_metrics",
    "encoder_is_meaningful",
]

UNCHANGED_EPS = 1e-6  # |dI| at or below this (unit-normalised embeddings): the image did not move


def encoder_is_meaningful(encoder: ImageTextEncoder) -> bool:
    """False for encoders with random weights (``tiny-random-clip``), whose scores mean nothing."""
    return str(getattr(encoder, "name", "")) != TINY_CLIP_NAME


@torch.no_grad()
def encode_images(
    encoder: ImageTextEncoder, images: torch.Tensor, batch_size: int = 32, progress: bool = False, desc: str = "CLIP"
) -> torch.Tensor:
    """Unit-normalised image embeddings ``[B, D]`` float32, in batches (with a tqdm bar if ``progress``)."""
    from .batching import map_batches

    parts = map_batches(lambda x: encoder.encode_image(x.float()).float(), images, batch_size, progress, desc)
    if not parts:
        raise ValueError("no images to encode")
    return F.normalize(torch.cat(parts), dim=-1)


@torch.no_grad()
def _encode_texts(encoder: ImageTextEncoder, texts: list[str]) -> torch.Tensor:
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"texts must be non-empty strings, got {t!r}")
    return F.normalize(encoder.encode_text(list(texts)).float(), dim=-1)


def _sdir(e_src: torch.Tensor, e_edit: torch.Tensor, t_src: torch.Tensor, t_tgt: torch.Tensor,
          texts: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """S_dir per image from unit embeddings; also the mask of unchanged images."""
    d_text = (t_tgt - t_src).reshape(-1)
    if float(d_text.norm()) <= UNCHANGED_EPS:
        raise ValueError(
            f"source text {texts[0]!r} and target text {texts[1]!r} have the same embedding, so there is no text "
            "direction; give two different texts"
        )
    d_img = e_edit - e_src
    norms = d_img.norm(dim=-1)
    unchanged = norms <= UNCHANGED_EPS
    cos = (d_img @ d_text) / (norms.clamp_min(UNCHANGED_EPS) * d_text.norm())
    return torch.where(unchanged, torch.zeros_like(cos), cos).double(), unchanged


def directional_similarity(
    encoder: ImageTextEncoder,
    source: torch.Tensor,
    edited: torch.Tensor,
    source_text: str,
    target_text: str,
    batch_size: int = 32,
) -> torch.Tensor:
    """Directional CLIP similarity ``S_dir`` per image (see the module docstring).

    Args:
        encoder: any :class:`~hspace.encoders.ImageTextEncoder`.
        source, edited: ``[B, 3, H, W]`` in [-1, 1], paired by index.
        source_text, target_text: the edit's texts, e.g. ``"face"`` and ``"smiling face"``.
        batch_size: images per encoder call.

    Returns:
        ``[B]`` float64 in [-1, 1]; exactly 0.0 for images whose embedding did not move.

    Raises:
        ValueError: batches of different shapes, empty texts, or two texts with the same embedding.
    """
    if source.shape != edited.shape:
        raise ValueError(f"source and edited batches must have the same shape, got {tuple(source.shape)} and {tuple(edited.shape)}")
    t = _encode_texts(encoder, [source_text, target_text])
    e_src, e_edit = encode_images(encoder, source, batch_size), encode_images(encoder, edited, batch_size)
    return _sdir(e_src, e_edit, t[0], t[1], (source_text, target_text))[0]


def clip_score(encoder: ImageTextEncoder, images: torch.Tensor, text: str, batch_size: int = 32) -> torch.Tensor:
    """Cosine similarity of each image's embedding with ``text``'s: ``[B]`` float64 in [-1, 1]
    (multiply ``max(cos, 0)`` by 100 for torchmetrics' ``CLIPScore`` convention)."""
    t = _encode_texts(encoder, [text])
    return (encode_images(encoder, images, batch_size) @ t[0]).double()


def _mean(x: torch.Tensor) -> float | None:
    return float(x.mean()) if x.numel() else None


def clip_edit_metrics(
    encoder: ImageTextEncoder,
    source: torch.Tensor,
    edited: torch.Tensor,
    source_text: str | None,
    target_text: str | None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Every CLIP number of an edit, encoding each image once.

    Args:
        encoder: any :class:`~hspace.encoders.ImageTextEncoder`.
        source, edited: ``[B, 3, H, W]`` in [-1, 1], paired by index.
        source_text, target_text: the edit's texts. Without ``target_text`` only the image-only
            number (``image_similarity``) is computed; without ``source_text`` S_dir is skipped.
        batch_size: images per encoder call. progress: show tqdm bars.

    Returns:
        ``{"encoder", "meaningful", "note", "source_text", "target_text", "n", "n_unchanged",
        "directional_similarity": {"mean", "per_image"} | None, "clip_score": {"source", "edited",
        "delta", "edited_x100", "per_image_source", "per_image_edited"} | None,
        "image_similarity": {"mean", "per_image"}}``; ``image_similarity`` is cos(e(source), e(edited)).
    """
    if source.shape != edited.shape:
        raise ValueError(f"source and edited batches must have the same shape, got {tuple(source.shape)} and {tuple(edited.shape)}")
    name = str(getattr(encoder, "name", type(encoder).__name__))
    meaningful = encoder_is_meaningful(encoder)
    e_src = encode_images(encoder, source, batch_size, progress, desc="CLIP source")
    e_edit = encode_images(encoder, edited, batch_size, progress, desc="CLIP edited")
    img_sim = (e_src * e_edit).sum(-1).double()
    out: dict[str, Any] = {
        "encoder": name,
        "meaningful": meaningful,
        "note": None if meaningful else f"{name} has RANDOM weights: these scores exercise the code and mean nothing",
        "source_text": source_text,
        "target_text": target_text,
        "n": int(len(source)),
        "n_unchanged": int(((e_edit - e_src).norm(dim=-1) <= UNCHANGED_EPS).sum()),
        "directional_similarity": None,
        "clip_score": None,
        "image_similarity": {"mean": _mean(img_sim), "per_image": img_sim.tolist()},
    }
    if target_text:
        t_tgt = _encode_texts(encoder, [target_text])[0]
        cs_src, cs_edit = (e_src @ t_tgt).double(), (e_edit @ t_tgt).double()
        out["clip_score"] = {
            "source": _mean(cs_src), "edited": _mean(cs_edit), "delta": _mean(cs_edit - cs_src),
            "edited_x100": _mean(100.0 * cs_edit.clamp_min(0)),
            "per_image_source": cs_src.tolist(), "per_image_edited": cs_edit.tolist(),
        }
        if source_text:
            t_src = _encode_texts(encoder, [source_text])[0]
            sdir, _ = _sdir(e_src, e_edit, t_src, t_tgt, (source_text, target_text))
            out["directional_similarity"] = {"mean": _mean(sdir), "per_image": sdir.tolist()}
    return out
