"""Editing real images: invert once, then run the asymmetric reverse process with directions.

The :class:`Editor` owns the caches (inverted latents) and the batching; the math lives in
:mod:`hspace.sampler` and :mod:`hspace.directions`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .backbones.base import Backbone
from .cache import LatentCache, weights_digest
from .directions import ComposedDirection, Direction, check_direction_fits, rescale_for_steps
from .precision import Precision, check_precision, prepare_backbone_for
from .sampler import Phases, generate, invert, model_clips_x0

__all__ = ["EditConfig", "EditOutput", "Editor", "resolve_interval", "resolve_band_top", "DEFAULT_T_EDIT"]

log = logging.getLogger(__name__)

# Used only when neither the user, the direction file nor the model's interval preset gives t_edit.
DEFAULT_T_EDIT = 500


@dataclass(frozen=True)
class EditConfig:
    """Settings of an edit run.

    Args:
        n_inv_steps: DDIM inversion steps (float32 always).
        n_steps: generation steps; strengths are rescaled by n_train / n_steps.
        t_edit: edit where t >= t_edit; None: from the directions' files, else the model's
            interval preset (:mod:`hspace.presets`), else DEFAULT_T_EDIT.
        t_boost: stochastic quality boosting below t_boost; None: from the files, else the
            model's preset, else 0 (off).
        t_edit_max: end the edit at this t, short of the grid's top (hspace's editing band,
            ``t_edit <= t <= t_edit_max``); None: from the directions' files, else the top (the
            paper's interval).
        eta_boost: eta of the boosting phase.
        seed: noise seed; image i of a run uses ``seed + i`` so batching never changes results.
        batch_size: images per network batch.
        precision: "fp32" or "bf16" (U-Net under bf16 autocast during generation).
        joint_decode: decode h and h + dh as one batch of 2B (off by default: more memory,
            and slower above batch 1; see :func:`hspace.sampler.generate`).
        cache_latents: keep inverted latents on disk (see :mod:`hspace.cache`).
        progress: show progress bars.
    """

    n_inv_steps: int = 40
    n_steps: int = 40
    t_edit: int | None = None
    t_boost: int | None = None
    eta_boost: float = 1.0
    seed: int = 0
    batch_size: int = 4
    precision: Precision = "fp32"
    joint_decode: bool = False
    cache_latents: bool = True
    progress: bool = True
    t_edit_max: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_inv_steps", "n_steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_inv_steps < 2 or self.n_steps < 2:
            raise ValueError(f"need at least 2 steps, got n_inv_steps={self.n_inv_steps}, n_steps={self.n_steps}")
        for name in ("t_edit", "t_boost", "t_edit_max"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1000):
                raise ValueError(f"{name} must be an integer timestep in 0..999 or None, got {v!r}")
        if self.t_edit is not None and self.t_boost is not None and self.t_boost > self.t_edit:
            raise ValueError(f"t_boost ({self.t_boost}) must not exceed t_edit ({self.t_edit})")
        if self.t_edit is not None and self.t_edit_max is not None and self.t_edit_max < self.t_edit:
            raise ValueError(f"t_edit_max ({self.t_edit_max}) must not be below t_edit ({self.t_edit})")
        if not self.eta_boost >= 0:
            raise ValueError(f"eta_boost must be >= 0, got {self.eta_boost!r}")
        check_precision(self.precision)


@dataclass
class EditOutput:
    """Result of :meth:`Editor.edit`.

    Attributes:
        images: edited images ``[B, 3, S, S]`` in about [-1, 1].
        t_edit, t_boost: the interval that was used, and where each value came from.
        strengths: the user's strengths per direction (before step rescaling).
    """

    images: torch.Tensor
    t_edit: int
    t_boost: int
    interval_source: dict[str, str] = field(default_factory=dict)
    strengths: list[float] = field(default_factory=list)
    t_edit_max: int | None = None  # the editing band's top; None: the grid's top (the paper's)


def resolve_interval(
    config: EditConfig,
    direction: Direction | None,
    backbone_id: str | None = None,
    cos_txt: float | None = None,
) -> tuple[int, int, dict[str, str]]:
    """t_edit / t_boost from the config, else the direction's metadata, else the model's preset, else defaults.

    Args:
        config: the user's settings (``t_edit`` / ``t_boost`` None: not given).
        direction: the (combined) direction; its metadata may carry t_edit / t_boost.
        backbone_id: the model edited; when it is a known model with one of the paper's
            interval presets (:func:`hspace.presets.preset_for_backbone`, e.g.
            ``google/ddpm-ema-celebahq-256`` -> celeba) that preset fills what the user and the
            direction file leave open. Default: the direction's ``meta.backbone_id``.
        cos_txt: text similarity for the preset's t_edit rule (default: ``extra["cos_txt"]``
            of the direction's metadata, else 1).

    Returns:
        ``(t_edit, t_boost, source)`` where ``source`` says for each value where it came from.
    """
    from .presets import no_preset_reason, preset_for_backbone, preset_source

    meta = direction.meta if direction is not None else None
    if backbone_id is None and meta is not None:
        backbone_id = meta.backbone_id
    preset = preset_for_backbone(backbone_id)
    choice = None
    if preset is not None and (
        (config.t_edit is None and (meta is None or meta.t_edit is None))
        or (config.t_boost is None and (meta is None or meta.t_boost is None))
    ):
        from .interval import choose_interval

        if cos_txt is None:
            cos_txt = (meta.extra.get("cos_txt") if meta is not None else None) or 1.0
        cos_txt = min(max(float(cos_txt), 0.01), 1.0)
        choice = choose_interval(preset, cos_txt=cos_txt)
        label = preset_source(preset, str(backbone_id)) + (f", cos_txt {cos_txt:.3f}" if cos_txt != 1.0 else "")
    src: dict[str, str] = {}
    if config.t_edit is not None:
        t_edit, src["t_edit"] = config.t_edit, "user"
    elif meta is not None and meta.t_edit is not None:
        t_edit, src["t_edit"] = meta.t_edit, "direction file"
    elif choice is not None:
        t_edit, src["t_edit"] = choice.t_edit, label
    else:
        why = no_preset_reason(backbone_id)
        t_edit, src["t_edit"] = DEFAULT_T_EDIT, (
            f"default {DEFAULT_T_EDIT} (set --t-edit or run `hspace interval`"
            + (f"; no preset: {why}" if why else "") + ")"
        )
    if config.t_boost is not None:
        t_boost, src["t_boost"] = config.t_boost, "user"
    elif meta is not None and meta.t_boost is not None:
        t_boost, src["t_boost"] = meta.t_boost, "direction file"
    elif choice is not None:
        t_boost, src["t_boost"] = choice.t_boost, label
    else:
        t_boost, src["t_boost"] = 0, "default 0 (quality boosting off)"
    if t_boost > t_edit:
        log.warning("t_boost %d > t_edit %d: boosting starts below t_edit instead", t_boost, t_edit)
        t_boost = t_edit
    return t_edit, t_boost, src


def resolve_band_top(config: EditConfig, direction: Direction | None) -> tuple[int | None, str]:
    """The editing band's top (``t_edit_max``) and where it came from: the config, else the
    direction's metadata, else None (the grid's top: the paper's interval)."""
    if config.t_edit_max is not None:
        return config.t_edit_max, "user"
    meta = direction.meta if direction is not None else None
    if meta is not None and meta.t_edit_max is not None:
        return meta.t_edit_max, "direction file"
    return None, "none (up to the grid's top, as in the paper)"


class Editor:
    """Edits images with h-space directions on one backbone.

    Args:
        backbone: the frozen model, on any device (``load_backbone(..., device="cuda")``).
            Images and latents are moved to it for the network and come back on the device
            they were given on (usually the CPU).
        config: run settings.

    Example:
        >>> from hspace.backbones.registry import load_backbone
        >>> from hspace.directions import GlobalDirection
        >>> bb = load_backbone("tiny-random")
        >>> ed = Editor(bb, EditConfig(n_inv_steps=4, n_steps=4, progress=False, cache_latents=False))
        >>> x = torch.zeros(1, 3, bb.image_size, bb.image_size)
        >>> out = ed.edit(ed.invert(x), [(GlobalDirection.for_backbone(bb, torch.ones(bb.h_shape)), 1.0)])
        >>> tuple(out.images.shape)
        (1, 3, 32, 32)
    """

    def __init__(self, backbone: Backbone, config: EditConfig = EditConfig()):
        self.backbone = backbone
        self.config = config
        # bf16 generation wants channels_last weights (converted once, in place); inversion
        # stays float32 and gives the same latents up to float rounding (benchmarks/README.md).
        prepare_backbone_for(config.precision, backbone)
        self.latent_cache = LatentCache(backbone.backbone_id, weights_digest(backbone)) if config.cache_latents else None

    def _batches(self, n: int) -> list[slice]:
        bs = self.config.batch_size
        return [slice(i, min(i + bs, n)) for i in range(0, n, bs)]

    def _check_images(self, x: torch.Tensor, what: str) -> None:
        s = self.backbone.image_size
        if x.dim() != 4 or x.shape[1] != self.backbone.in_channels or x.shape[2:] != (s, s):
            raise ValueError(
                f"{what} must be [B, {self.backbone.in_channels}, {s}, {s}] for {self.backbone.backbone_id}, "
                f"got {list(x.shape)}"
            )

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """DDIM-invert images ``[B, 3, S, S]`` in [-1, 1] to latents x_T (float32, cached)."""
        self._check_images(images, "images")
        n = self.config.n_inv_steps
        out: list[torch.Tensor | None] = [None] * images.shape[0]
        if self.latent_cache is not None:
            out = [self.latent_cache.get(img, n) for img in images]
        todo = [i for i, v in enumerate(out) if v is None]
        bar = tqdm(total=len(todo), desc="invert", unit="img", disable=not self.config.progress or not todo)
        for sl in self._batches(len(todo)):
            idx = todo[sl]
            lat = invert(self.backbone, images[idx].to(self.backbone.device), n).latents.to(images.device)
            for j, i in enumerate(idx):
                out[i] = lat[j]
                if self.latent_cache is not None:
                    self.latent_cache.put(images[i], n, lat[j])
            bar.update(len(idx))
        bar.close()
        return torch.stack([v.to(images.device) for v in out])  # type: ignore[union-attr]

    def _run(self, latents: torch.Tensor, delta: Direction | None, phases: Phases, desc: str,
             clip_x0: bool = False) -> torch.Tensor:
        self._check_images(latents, "latents")
        device = self.backbone.device  # the network's; results come back to the caller's
        chunks = []
        bar = tqdm(total=latents.shape[0], desc=desc, unit="img", disable=not self.config.progress)
        for sl in self._batches(latents.shape[0]):
            gens = [torch.Generator().manual_seed(self.config.seed + i) for i in range(sl.start, sl.stop)]
            chunks.append(
                generate(
                    self.backbone, latents[sl].to(device), self.config.n_steps, delta=delta, phases=phases,
                    generator=gens, precision=self.config.precision, joint_decode=self.config.joint_decode,
                    clip_x0=clip_x0,
                ).to(latents.device)
            )
            bar.update(sl.stop - sl.start)
        bar.close()
        return torch.cat(chunks)

    def combine(self, directions: Sequence[tuple[Direction, float]]) -> Direction:
        """Check each direction fits, rescale for the step count, and compose (1/sqrt(N) rule).
        Directions that are modules are moved (in place) to the backbone's device."""
        if not directions:
            raise ValueError("give at least one (direction, strength) pair")
        for d, _ in directions:
            check_direction_fits(d, self.backbone)
        return rescale_for_steps(ComposedDirection(list(directions)).to(self.backbone.device), self.config.n_steps)

    def reconstruct(self, latents: torch.Tensor) -> torch.Tensor:
        """Plain DDIM generation from latents (no edit, no boosting): the inversion's reconstruction."""
        return self._run(latents, None, Phases(), "reconstruct")

    def sample(self, noise: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """New images from Gaussian noise ``[B, 3, S, S]`` with DDIM, clipping P_t to [-1, 1]
        where the model's scheduler config asks for it (``clip_sample``), as a diffusers DDIM
        pipeline would. (:meth:`reconstruct` never clips: inverted latents need the exact
        deterministic path back.)

        ``eta`` is diffusers' DDIM ``eta``: 0 (the default) is deterministic DDIM; above 0 every
        step adds fresh noise (1 is DDPM-like ancestral sampling, i.e. the quality-boosting step
        over the whole trajectory), drawn per image from ``config.seed + i``.
        """
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        # boosting below t_boost = T covers every step; t_boost = 0 turns it off
        phases = Phases(t_boost=self.backbone.alphas_cumprod.shape[0] if eta > 0 else 0, eta_boost=eta)
        return self._run(noise, None, phases, "sample", clip_x0=model_clips_x0(self.backbone))

    def edit(self, latents: torch.Tensor, directions: Sequence[tuple[Direction, float]]) -> EditOutput:
        """Edit latents ``[B, 3, S, S]`` with ``[(direction, strength), ...]`` applied together."""
        delta = self.combine(directions)
        # a combination's interval is the longest of its members' -> the smallest recorded cos_txt
        cos = [float(c) for d, _ in directions if (c := d.meta.extra.get("cos_txt")) is not None]
        t_edit, t_boost, src = resolve_interval(self.config, delta, self.backbone.backbone_id, min(cos) if cos else None)
        t_edit_max, src["t_edit_max"] = resolve_band_top(self.config, delta)
        if t_edit_max is not None and t_edit_max < t_edit:
            raise ValueError(f"the editing band's top t_edit_max {t_edit_max} ({src['t_edit_max']}) is below t_edit "
                             f"{t_edit} ({src['t_edit']}): nothing would be edited; lower t_edit or raise t_edit_max")
        phases = Phases(t_edit=t_edit, t_boost=t_boost, eta_boost=self.config.eta_boost, t_edit_max=t_edit_max)
        images = self._run(latents, delta, phases, "edit")
        return EditOutput(images, t_edit, t_boost, src, [float(s) for _, s in directions], t_edit_max)

    def sweep(self, latents: torch.Tensor, direction: Direction, strengths: Sequence[float]) -> list[EditOutput]:
        """One edit per strength (an interpolation strip), same noise seeds for each."""
        return [self.edit(latents, [(direction, s)]) for s in strengths]

    def describe(self) -> dict:
        """The resolved configuration, for run records."""
        return {"backbone_id": self.backbone.backbone_id, "device": str(self.backbone.device), **asdict(self.config)}
