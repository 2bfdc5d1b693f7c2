"""DDIM and the asymmetric reverse process (Asyrp) as small functions.

Symbols follow DESIGN.md 1.2 and the paper: for a noise estimate e at x_t, with
a = abar_t and a' = abar_next,

* P_t(e) = (x_t - sqrt(1 - a) e) / sqrt(a)            -- predicted clean image (:func:`predict_x0`)
* D_t(e) = sqrt(1 - a' - sigma^2) e                   -- direction term (:func:`direction_term`)
* sigma  = eta sqrt((1 - a / a') (1 - a') / (1 - a))  -- (:func:`ddim_sigma`)
* DDIM:  x_next = sqrt(a') P_t(e)  + D_t(e) + sigma z  (:func:`ddim_step`)
* Asyrp: x_next = sqrt(a') P_t(e~) + D_t(e) + sigma z, with e~ = eps(x_t | h + dh) (:func:`asymmetric_step`)

The step functions carry no ``no_grad`` (training differentiates through them); the loops
:func:`invert` and :func:`generate` take any :class:`~hspace.backbones.base.Backbone`, the
way k-diffusion samplers take ``model``, and report progress through ``callback``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .backbones.base import Backbone, Encoded
from .precision import Precision, network_autocast, to_memory_format
from .schedule import abar_at, ddim_grid, generation_pairs, inversion_pairs

__all__ = [
    "StepOutput",
    "StepInfo",
    "InversionOutput",
    "Phases",
    "predict_x0",
    "ddim_sigma",
    "direction_term",
    "ddim_step",
    "asymmetric_step",
    "draw_noise",
    "invert",
    "generate",
    "decode_pair",
    "model_clips_x0",
]

DeltaFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class StepOutput:
    """One sampler step: ``x_next`` and the predicted clean image ``x0`` (P_t) it used."""

    x_next: torch.Tensor
    x0: torch.Tensor


@dataclass(frozen=True)
class StepInfo:
    """What a loop reports to ``callback`` after each step."""

    index: int
    t: int
    t_next: int
    x_t: torch.Tensor
    x_next: torch.Tensor
    x0: torch.Tensor
    phase: str


@dataclass(frozen=True)
class InversionOutput:
    """Result of :func:`invert`: the latent ``x_T`` and, if asked, every x_t and P_t on the way."""

    latents: torch.Tensor
    seq: list[int]
    trajectory: dict[int, torch.Tensor] | None = None
    x0_preds: dict[int, torch.Tensor] | None = None


def _as_abar(a: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(a, dtype=torch.float32, device=like.device)
    return a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() == 1 else a


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    """P_t(e) = (x_t - sqrt(1 - a) e) / sqrt(a). ``a`` is abar_t (scalar or ``[B]``)."""
    a = _as_abar(a, x_t)
    return (x_t - eps * (1 - a).sqrt()) / a.sqrt()


def ddim_sigma(a: torch.Tensor | float, a_next: torch.Tensor | float, eta: float) -> torch.Tensor:
    """sigma = eta sqrt((1 - a/a') (1 - a') / (1 - a)); zero for eta = 0."""
    a = torch.as_tensor(a, dtype=torch.float32)
    a_next = torch.as_tensor(a_next, dtype=torch.float32, device=a.device)
    if eta == 0:  # also covers inversion, where a' < a and the root would be imaginary
        return torch.zeros_like(a)
    return eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()


def direction_term(eps: torch.Tensor, a_next: torch.Tensor | float, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
    """D_t(e) = sqrt(1 - a' - sigma^2) e."""
    a_next = _as_abar(a_next, eps)
    sigma = _as_abar(sigma, eps)
    return ((1 - a_next) - sigma**2).sqrt() * eps


def draw_noise(shape: torch.Size | tuple[int, ...], generator: Generators, device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise; a list of generators draws each batch item from its own (reproducible per image)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator]).to(device)
    return torch.randn(shape, generator=generator).to(device)


def _step(x_t, eps_p, eps_d, a, a_next, eta, noise, generator, clip_x0=False) -> StepOutput:
    x0 = predict_x0(x_t, eps_p, a)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    sigma = ddim_sigma(a, a_next, eta)
    x_next = _as_abar(a_next, x_t).sqrt() * x0 + direction_term(eps_d, a_next, sigma)
    if eta > 0:
        if noise is None:
            noise = draw_noise(x_t.shape, generator, x_t.device)
        x_next = x_next + sigma * noise
    elif noise is not None:
        raise ValueError("noise was given but eta = 0 uses none")
    return StepOutput(x_next=x_next, x0=x0)


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    a: torch.Tensor | float,
    a_next: torch.Tensor | float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: Generators = None,
    clip_x0: bool = False,
) -> StepOutput:
    """One DDIM step x_t -> x_next (downwards for generation, upwards with eta = 0 for inversion).

    Args:
        x_t: ``[B, C, H, W]``.
        eps: noise estimate e at x_t, ``[B, C, H, W]``.
        a: abar_t. a_next: abar of the target step (1 for t_next = -1).
        eta: 0 is deterministic DDIM, 1 is DDPM-like.
        noise: ready-made z (eta > 0 only); otherwise drawn from ``generator``.
        clip_x0: clamp P_t to [-1, 1] before stepping (diffusers' ``clip_sample``; the
            direction term keeps the unclipped e, as diffusers' DDIM does).
    """
    return _step(x_t, eps, eps, a, a_next, eta, noise, generator, clip_x0)


def asymmetric_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    eps_edit: torch.Tensor,
    a: torch.Tensor | float,
    a_next: torch.Tensor | float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: Generators = None,
    clip_x0: bool = False,
) -> StepOutput:
    """Asyrp step: P_t from the edited estimate e~, D_t from the original e (DESIGN.md 1.2).

    Returns ``StepOutput(x_next, x0=P_t(e~))`` (P_t clamped to [-1, 1] with ``clip_x0``).
    """
    return _step(x_t, eps_edit, eps, a, a_next, eta, noise, generator, clip_x0)


def _twice(enc: Encoded) -> Encoded:
    """``enc`` stacked twice along the batch with ``torch.cat``, which keeps channels_last
    (``Tensor.repeat`` returns contiguous tensors, and mixed layouts make oneDNN reorder)."""
    return Encoded(
        h=torch.cat([enc.h, enc.h]),
        skips=tuple(torch.cat([s, s]) for s in enc.skips),
        temb=torch.cat([enc.temb, enc.temb]),
        t=torch.cat([enc.t, enc.t]),
        x_t=None if enc.x_t is None else torch.cat([enc.x_t, enc.x_t]),
    )


def decode_pair(backbone: Backbone, enc: Encoded, h_edit: torch.Tensor, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode h and h + dh from one encoder pass; ``joint`` runs them as one batch of 2B."""
    if joint:
        both = backbone.decode(_twice(enc), torch.cat([enc.h, h_edit]))
        return both.chunk(2)
    return backbone.decode(enc), backbone.decode(enc, h_edit)


def model_clips_x0(backbone: Backbone) -> bool:
    """Whether ``backbone``'s scheduler config asks for P_t clamped to [-1, 1] while sampling
    (``clip_sample``, as a diffusers pipeline would do). False when it does not say: the
    paper's models and the authors' code never clip."""
    return bool((getattr(backbone, "schedule_config", None) or {}).get("clip_sample", False))


def _t_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device)


@torch.no_grad()
def invert(
    backbone: Backbone,
    x0: torch.Tensor,
    n_steps: int = 40,
    t0: int | None = None,
    *,
    keep_trajectory: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
) -> InversionOutput:
    """Deterministic DDIM inversion x_0 -> x_T, always in float32.

    Args:
        backbone: any backbone.
        x0: images ``[B, 3, S, S]`` in [-1, 1].
        n_steps: grid size (the paper uses 40).
        t0: top timestep (default: the last step of the model's schedule).
        keep_trajectory: also return every x_t and P_t on the way (for interval curves).
    """
    t0 = backbone.alphas_cumprod.shape[0] - 1 if t0 is None else t0
    seq = ddim_grid(n_steps, t0)
    ac = backbone.alphas_cumprod
    x = x0.float()
    traj = {seq[0]: x} if keep_trajectory else None
    preds: dict[int, torch.Tensor] | None = {} if keep_trajectory else None
    pairs = inversion_pairs(seq)
    for i, (t, t_next) in enumerate(tqdm(pairs, desc="invert", disable=not progress, leave=False)):
        eps = backbone.eps(x, _t_batch(t, x)).float()
        out = ddim_step(x, eps, abar_at(ac, t), abar_at(ac, t_next))
        if keep_trajectory:
            traj[t_next] = out.x_next
            preds[t] = out.x0
        if callback is not None:
            callback(StepInfo(i, t, t_next, x, out.x_next, out.x0, "inversion"))
        x = out.x_next
    return InversionOutput(latents=x, seq=seq, trajectory=traj, x0_preds=preds)


@dataclass(frozen=True)
class Phases:
    """Where each generation phase starts (DESIGN.md 1.6).

    editing: t >= t_edit (asymmetric step, eta 0); denoising: t_boost <= t < t_edit (eta 0);
    quality boosting: t < t_boost (eta = ``eta_boost``). t_boost = 0 (or below) disables boosting.
    ``t_edit_max`` (hspace's editing band, beyond the paper) ends the editing phase below the top:
    above it the steps are plain DDIM (eta 0).
    """

    t_edit: int = 0
    t_boost: int = 0
    eta_boost: float = 1.0
    t_edit_max: int | None = None

    def phase(self, t: int, editing: bool) -> str:
        if editing and t >= self.t_edit and (self.t_edit_max is None or t <= self.t_edit_max):
            return "editing"
        if t >= self.t_boost:
            return "denoising"
        return "boosting"


@torch.no_grad()
def generate(
    backbone: Backbone,
    x_T: torch.Tensor,
    n_steps: int = 40,
    t0: int | None = None,
    *,
    delta: DeltaFn | None = None,
    phases: Phases = Phases(),
    shift: Literal["asymmetric", "symmetric", "eps"] = "asymmetric",
    generator: Generators = None,
    precision: Precision = "fp32",
    joint_decode: bool = False,
    clip_x0: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Reverse process from x_T with the three phases; returns x_0 ``[B, 3, S, S]`` (float32).

    Args:
        delta: ``dh = delta(h, t, temb)``, applied as h + dh where t >= ``phases.t_edit``
            (scale and compose it before, e.g. with ``hspace.directions``). None: plain DDIM.
        shift: "asymmetric" (Asyrp: only P_t uses e~), "symmetric" (both P_t and D_t use
            e~; nearly cancels, the paper's Theorem 1), kept for experiments.
            "eps" is not accepted here; shifting eps directly is an analysis concern.
        generator: noise source for the boosting phase (a list gives one per image).
        precision: "bf16" runs the U-Net under bf16 autocast (step arithmetic stays float32).
        joint_decode: decode h and h + dh as one batch of 2B. Off by default: measured with
            ``benchmarks/bench_edit.py`` on the 2-core CPU it is 2.5 % faster at batch 1 but
            10 % slower at batch 8, and it raises peak memory above the reference way's
            (+28 MiB at batch 1, +220 MiB at batch 8 on the 18 M-param benchmark U-Net).
        clip_x0: clamp every P_t to [-1, 1] (diffusers' ``clip_sample``), for sampling from
            Gaussian noise where the model's config asks for it (:func:`model_clips_x0`). Off
            for inverted latents: their P_t leave [-1, 1] at large t and clipping them breaks
            the reconstruction (toy-faces: 38.6 dB -> 13.1 dB at 100 steps). Inversion never clips.
    """
    if shift not in ("asymmetric", "symmetric"):
        raise ValueError(f"shift must be 'asymmetric' or 'symmetric', got {shift!r}")
    t0 = backbone.alphas_cumprod.shape[0] - 1 if t0 is None else t0
    seq = ddim_grid(n_steps, t0)
    ac = backbone.alphas_cumprod
    x = x_T.float()
    pairs = generation_pairs(seq)
    for i, (t, t_next) in enumerate(tqdm(pairs, desc="generate", disable=not progress, leave=False)):
        phase = phases.phase(t, editing=delta is not None)
        tt = _t_batch(t, x)
        with network_autocast(precision, x.device):
            enc = backbone.encode(to_memory_format(x, precision), tt)
            if phase == "editing":
                h_edit = enc.h + delta(enc.h, tt, enc.temb).to(enc.h.dtype)
                eps, eps_edit = decode_pair(backbone, enc, h_edit, joint_decode)
            else:
                eps = eps_edit = backbone.decode(enc)
        eps, eps_edit = eps.float(), eps_edit.float()
        eta = phases.eta_boost if phase == "boosting" else 0.0
        a, a_next = abar_at(ac, t), abar_at(ac, t_next)
        if shift == "symmetric":
            out = ddim_step(x, eps_edit, a, a_next, eta, generator=generator, clip_x0=clip_x0)
        else:
            out = asymmetric_step(x, eps, eps_edit, a, a_next, eta, generator=generator, clip_x0=clip_x0)
        if callback is not None:
            callback(StepInfo(i, t, t_next, x, out.x_next, out.x0, phase))
        x = out.x_next
    return x
