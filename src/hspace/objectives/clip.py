"""CLIP directional loss: move the image embedding along the text direction source -> target.

For an edit ``P_edit`` of source image ``x`` (paper section 3.3, DESIGN 1.5):

    d_txt = normalise(mean_templates(E_txt(template(target)) - E_txt(template(source))))
    d_img = normalise(E_img(P_edit) - E_img(x))
    loss  = -log((1 + cos(d_img, d_txt)) / 2)        (0 when parallel, large when opposite)

averaged over the batch, each image against its *own* source embedding. ``E`` is the
encoder's embedding, unit-normalised first by default (CLIP embeddings are compared by
angle; set ``normalize_embeddings=False`` to use the raw projections).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hspace.encoders import ImageTextEncoder
from hspace.objectives.base import ObjectiveOutput, WeightedSum
from hspace.objectives.l1 import L1Preservation

__all__ = ["DEFAULT_TEMPLATES", "CLIPDirectionalLoss", "CLIPOffAxisPenalty", "make_clip_objective", "text_cosine"]

# Our own short list of prompt templates; "{}" is replaced by the source or target text.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a good photo of a {}.",
    "a bright photo of a {}.",
    "a low resolution photo of a {}.",
    "a rendering of a {}.",
)


def text_cosine(encoder: ImageTextEncoder, a: str, b: str) -> float:
    """Cosine similarity of the raw (un-templated) text embeddings of ``a`` and ``b``.

    This is the paper's ``cos_txt``: it scales the L1 weight and the editing interval.
    It is 1 for identical texts.
    """
    with torch.no_grad():
        emb = encoder.encode_text([a, b]).float()
    return float(F.cosine_similarity(emb[0], emb[1], dim=0))


class CLIPDirectionalLoss:
    """Directional CLIP loss between a source and a target text.

    Args:
        encoder: a frozen :class:`~hspace.encoders.ImageTextEncoder`.
        source_text: what the images show now, e.g. ``"face"``.
        target_text: what they should show, e.g. ``"smiling face"``.
        templates: prompt templates containing ``"{}"``; the text direction is averaged
            over them (default :data:`DEFAULT_TEMPLATES`).
        normalize_embeddings: unit-normalise every embedding before taking differences
            (default True).
        eps: floor of ``(1 + cos) / 2`` inside the log, so exact opposition gives
            ``-log(eps)`` instead of infinity (default 1e-7).

    Attributes:
        d_txt: ``[D]`` unit text direction, computed once here.
        cos_txt: cosine between the raw (un-templated) source and target text embeddings;
            DESIGN 1.5 weights the L1 term and the editing interval by it.

    ``prepare(source_images)`` returns the ``[B, D]`` source image embeddings (no gradient);
    pass them back to ``__call__``. Terms: ``cos`` (mean cosine of d_img and d_txt).
    """

    name = "clip"

    def __init__(
        self,
        encoder: ImageTextEncoder,
        source_text: str,
        target_text: str,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        *,
        normalize_embeddings: bool = True,
        eps: float = 1e-7,
    ) -> None:
        templates = list(templates)
        if not templates:
            raise ValueError("`templates` must contain at least one template, but got an empty list.")
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ValueError(f"Every template must contain '{{}}' for the text, but these do not: {bad}.")
        if not (0 < eps < 1):
            raise ValueError(f"`eps` must be in (0, 1), but got {eps}.")
        self.encoder = encoder
        self.source_text = source_text
        self.target_text = target_text
        self.templates = templates
        self.normalize_embeddings = normalize_embeddings
        self.eps = eps

        n = len(templates)
        texts = [t.format(target_text) for t in templates] + [t.format(source_text) for t in templates]
        with torch.no_grad():
            emb = self._embed(encoder.encode_text(texts))
        diff = (emb[:n] - emb[n : 2 * n]).mean(dim=0)
        if float(diff.norm()) == 0.0:
            raise ValueError(
                f"The source text {source_text!r} and target text {target_text!r} embed identically, "
                "so there is no text direction to follow; use two different texts."
            )
        self.d_txt = F.normalize(diff, dim=0)
        self.cos_txt = text_cosine(encoder, source_text, target_text)
        # set by CLIPOffAxisPenalty: it scores the same P_edit in the same step, so the image
        # embedding is computed once and handed over (see edit_embedding)
        self.share_edit_embedding = False
        self._shared: tuple | None = None

    def _embed(self, e: torch.Tensor) -> torch.Tensor:
        e = e.float()
        return F.normalize(e, dim=-1) if self.normalize_embeddings else e

    def prepare(self, source_images: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` embeddings of the source images, computed without gradient."""
        with torch.no_grad():
            return self._embed(self.encoder.encode_image(source_images)).detach()

    def edit_embedding(self, p_edit: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` embeddings of ``p_edit``, with gradient.

        With ``share_edit_embedding`` on (an off-axis penalty is attached), the result is kept for
        the one next call with the same, unmodified tensor, which takes it (the directional loss and
        the penalty score the same P_edit in each training step), so the image encoder runs once per
        step, not twice."""
        key = (p_edit._version, torch.is_grad_enabled())
        if self._shared is not None:
            tensor, shared_key, emb = self._shared
            self._shared = None
            if tensor is p_edit and shared_key == key:
                return emb
        emb = self._embed(self.encoder.encode_image(p_edit))
        if self.share_edit_embedding:
            self._shared = (p_edit, key, emb)
        return emb

    def per_image(self, p_edit: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image ``(loss [B], cos [B])``; ``state`` is what :meth:`prepare` returned for these images."""
        e_edit = self.edit_embedding(p_edit)
        if state.shape != e_edit.shape:
            raise ValueError(
                f"Prepared source embeddings have shape {tuple(state.shape)} but the edit batch embeds to "
                f"{tuple(e_edit.shape)}; call prepare() on the same images as p_edit (or select_state them)."
            )
        d_img = F.normalize(e_edit - state.to(e_edit), dim=-1)
        cos = d_img @ self.d_txt.to(d_img)
        loss = -torch.log(((1 + cos) / 2).clamp_min(self.eps))
        return loss, cos

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: torch.Tensor) -> ObjectiveOutput:
        loss, cos = self.per_image(p_edit, state)
        return ObjectiveOutput(loss=loss.mean(), terms={"cos": cos.detach().mean()})

    def __repr__(self) -> str:
        name = getattr(self.encoder, "name", type(self.encoder).__name__)
        return (
            f"CLIPDirectionalLoss({self.source_text!r} -> {self.target_text!r}, encoder={name!r}, "
            f"templates={len(self.templates)}, cos_txt={self.cos_txt:.3f})"
        )


class CLIPOffAxisPenalty:
    """Penalise what the edit changes in CLIP space *off* the text direction (beyond the paper).

    At each step, with ``P_src`` the same step's prediction on the unedited trajectory:

        delta = E_img(P_edit) - E_img(P_src)          (unit-normalised embeddings)
        loss  = mean_batch |delta - (delta . d_txt) d_txt|^2

    The directional loss only scores the *angle* of the image change, so a large move along
    ``d_txt`` excuses any side effect of a fixed size; this term gives side effects an absolute
    cost. Comparing with ``P_src`` of the same step (not the sharp source image) keeps the blur of
    early predictions out of ``delta``: both are equally blurred. On the toy CLIP, adding a skin
    tone, smile, hat or background change to an exact glasses edit triples this norm (0.16 ->
    0.42-0.53; docs/toyworld.md, "Off-axis penalty").

    Args:
        directional: the :class:`CLIPDirectionalLoss` whose encoder and ``d_txt`` it uses.

    Terms: ``off`` (mean off-axis norm), ``on`` (mean change along ``d_txt``).
    """

    name = "clip_off"

    def __init__(self, directional: CLIPDirectionalLoss) -> None:
        self.directional = directional
        directional.share_edit_embedding = True  # one image encoding of P_edit per step for both

    def prepare(self, source_images: torch.Tensor) -> None:
        """Nothing to cache: the reference is each step's ``P_src``."""
        return None

    def __call__(self, p_edit: torch.Tensor, p_src: torch.Tensor, state: None = None) -> ObjectiveOutput:
        enc, embed = self.directional.encoder, self.directional._embed
        e_edit = self.directional.edit_embedding(p_edit)
        with torch.no_grad():
            e_src = embed(enc.encode_image(p_src)).to(e_edit)
        delta = e_edit - e_src
        d = self.directional.d_txt.to(delta)
        on = delta @ d
        off = delta - on[:, None] * d[None]
        sq = off.pow(2).sum(dim=1)
        return ObjectiveOutput(loss=sq.mean(), terms={"off": sq.detach().sqrt().mean(), "on": on.detach().mean()})

    def __repr__(self) -> str:
        return f"CLIPOffAxisPenalty({self.directional.source_text!r} -> {self.directional.target_text!r})"


def make_clip_objective(
    encoder: ImageTextEncoder,
    source: str,
    target: str,
    w_clip: float = 1.0,
    w_l1: float = 3.0,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    w_off: float = 0.0,
) -> WeightedSum:
    """The paper's training objective: ``w_clip * clip + w_l1 * cos_txt * l1`` (DESIGN 1.5),
    plus ``w_off * clip_off`` (:class:`CLIPOffAxisPenalty`, beyond the paper) when ``w_off > 0``.

    ``cos_txt`` is the directional loss's text cosine, floored at 0 so that an unrelated
    pair of texts turns preservation off instead of rewarding divergence from ``P_src``.

    Args:
        encoder: frozen image-text encoder.
        source, target: the two texts.
        w_clip: weight of the directional CLIP loss (reference default 1).
        w_l1: weight of the L1 preservation loss before the cos_txt factor (reference default 3).
        templates: prompt templates for the text direction.
        w_off: weight of the off-axis CLIP penalty (default 0: the paper's objective).

    Returns:
        A :class:`WeightedSum` with members ``clip`` and ``l1`` (and ``clip_off`` when
        ``w_off > 0``); its ``.objectives[0]`` is the :class:`CLIPDirectionalLoss` (read
        ``cos_txt`` there).
    """
    if w_off < 0:
        raise ValueError(f"`w_off` must be >= 0, but got {w_off}.")
    clip = CLIPDirectionalLoss(encoder, source, target, templates)
    parts: list = [(w_clip, clip), (w_l1 * max(clip.cos_txt, 0.0), L1Preservation())]
    if w_off > 0:
        parts.append((w_off, CLIPOffAxisPenalty(clip)))
    return WeightedSum(parts)
