"""What every experiment shares: settings, the images and their inversion, the directions under
test, the probe, and a memo of edits already run.

:func:`build_context` renders toy faces (held-out seeds), resizes them to the model's size,
inverts them once (DDIM, float32), reconstructs them once, and reads everything with the probe.
Experiments then ask the context for edits (:meth:`AnalysisContext.edit`); an edit asked twice
(e.g. strength 1 by linearity and by homogeneity) runs once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..backbones.base import Backbone
from ..directions import ComposedDirection, Direction, rescale_for_steps
from ..editor import EditConfig, resolve_interval
from ..sampler import Phases, invert
from ..schedule import ddim_grid
from ..toyworld.probe import EVAL_SEED, AttributeProbe
from .factors import ProbeReading, Target, candidate_targets, read_probe, success_rate, target_for_name, target_score
from .runs import Recording, reverse

__all__ = ["AnalysisConfig", "DirectionUnderTest", "EditRun", "AnalysisContext", "build_context", "render_faces"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of an analysis run (``quick()`` and ``full()`` give the two presets).

    Args:
        n_images: toy faces edited per experiment.
        n_steps: DDIM generation steps; n_inv_steps: DDIM inversion steps.
        strengths: the linearity sweep (must contain 0 and 1).
        noise_sizes: robustness: noise norm as a fraction of |h| at each step.
        t_edit_fractions / t_boost_fractions: section 7's sweeps, as fractions of T (snapped to the grid).
        n_reference: real faces for the probe-FID reference set.
        max_directions: directions analysed (the first ones given); max_pairs: composition pairs.
        seed: images come from toy-world seed ``EVAL_SEED + seed``; every noise draw is seeded from it.
        t_edit: override every direction's t_edit (None: the direction file, else the model's
            preset, else 500, as ``hspace edit`` does).
    """

    n_images: int = 8
    n_steps: int = 10
    n_inv_steps: int = 10
    strengths: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    noise_sizes: tuple[float, ...] = (0.1, 0.3, 1.0)
    t_edit_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    t_boost_fractions: tuple[float, ...] = (0.0, 0.15, 0.3)
    n_reference: int = 128
    max_directions: int = 2
    max_pairs: int = 1
    seed: int = 0
    t_edit: int | None = None
    quick: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, int) or self.n_images < 3:
            raise ValueError(f"n_images must be an integer >= 3 (homogeneity needs a donor and others), got {self.n_images!r}")
        for name in ("n_steps", "n_inv_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
        if 0.0 not in self.strengths or 1.0 not in self.strengths or len(self.strengths) < 3:
            raise ValueError(f"strengths must contain 0 and 1 and at least one more value, got {self.strengths}")
        if not self.noise_sizes or min(self.noise_sizes) <= 0:
            raise ValueError(f"noise_sizes must be positive, got {self.noise_sizes}")
        if self.n_reference < 2 or self.max_directions < 1 or self.max_pairs < 0 or self.seed < 0:
            raise ValueError("need n_reference >= 2, max_directions >= 1, max_pairs >= 0, seed >= 0")

    @classmethod
    def quick_preset(cls, **overrides: Any) -> "AnalysisConfig":
        """CI-sized: 8 images, 10 steps, 5 strengths, 3 noise sizes, 2 directions, 1 pair."""
        return cls(**{"quick": True, **overrides})

    @classmethod
    def full_preset(cls, **overrides: Any) -> "AnalysisConfig":
        """Fuller: 12 images, 20 steps, 7 strengths, 4 noise sizes, up to 5 directions and 4 pairs."""
        base = dict(
            n_images=12, n_steps=20, n_inv_steps=20, strengths=(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0),
            noise_sizes=(0.1, 0.3, 0.6, 1.0), t_edit_fractions=(0.2, 0.4, 0.6, 0.8),
            t_boost_fractions=(0.0, 0.15, 0.3), n_reference=512, max_directions=5, max_pairs=4, quick=False,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DirectionUnderTest:
    """One direction of the run: its name, the object, the unit strength, its target and interval."""

    name: str
    direction: Direction
    strength: float
    target: Target | None
    t_edit: int
    t_edit_source: str
    path: str | None = None

    def describe(self) -> dict[str, Any]:
        m = self.direction.meta
        return {
            "name": self.name, "path": self.path, "kind": m.kind, "strength": self.strength,
            "source_text": m.source_text, "target_text": m.target_text,
            "target": None if self.target is None else {"factor": self.target.factor, "value": self.target.value,
                                                        "found_by": self.target.source},
            "t_edit": self.t_edit, "t_edit_source": self.t_edit_source,
        }


@dataclass
class EditRun:
    """An edited batch and what the probe reads on it."""

    images: torch.Tensor
    reading: ProbeReading
    features: torch.Tensor
    record: Recording | None = None


def render_faces(n: int, seed: int, size: int, start: int = 0) -> torch.Tensor:
    """``n`` toy faces of dataset ``seed`` (items ``start..start+n-1``) ``[n, 3, size, size]`` in [-1, 1].

    Rendered at 64x64 (the toy world's size) and resized when ``size`` differs.
    """
    from ..toyworld.dataset import image_to_tensor
    from ..toyworld.faces import factors_for, render_array

    x = torch.stack([image_to_tensor(render_array(factors_for(seed, start + i), 64)) for i in range(n)])
    if size != 64:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class AnalysisContext:
    """Shared state of one analysis run (see the module docstring).

    Attributes:
        backbone, probe, config, directions.
        images: input faces ``[N, 3, S, S]``; latents: their inversion; recon: their DDIM reconstruction.
        recon_reading / recon_features: the probe on ``recon`` (the reference "before edit" state).
        reference_features: probe features of ``n_reference`` other real faces (probe-FID reference).
        on_run: called after every reverse run (progress bars).
    """

    def __init__(self, backbone: Backbone, probe: AttributeProbe, config: AnalysisConfig,
                 directions: list[DirectionUnderTest], on_run: Callable[[str], None] | None = None):
        self.backbone, self.probe, self.config, self.directions = backbone, probe, config, directions
        self.on_run = on_run or (lambda what: None)
        self._memo: dict[Any, EditRun] = {}
        s = backbone.image_size
        seed = EVAL_SEED + config.seed
        self.images = render_faces(config.n_images, seed, s)
        self.input_reading, self.input_features = read_probe(probe, self.images)
        ref = render_faces(config.n_reference, seed, s, start=config.n_images)
        self.reference_reading, self.reference_features = read_probe(probe, ref)
        dev = backbone.device
        self.latents = invert(backbone, self.images.to(dev), config.n_inv_steps).latents
        self.on_run("inversion")
        self.recon_run = self._measure(self._reverse(Phases()))
        self.on_run("reconstruction")

    # ------------------------------------------------------------------ helpers

    @property
    def recon(self) -> torch.Tensor:
        return self.recon_run.images

    @property
    def recon_reading(self) -> ProbeReading:
        return self.recon_run.reading

    def grid(self) -> list[int]:
        """The generation grid's timesteps, ascending."""
        return ddim_grid(self.config.n_steps, self.backbone.alphas_cumprod.shape[0] - 1)

    def generators(self) -> list[torch.Generator]:
        """One boosting-noise generator per image (``seed + i``, as the Editor does)."""
        return [torch.Generator().manual_seed(self.config.seed + i) for i in range(self.config.n_images)]

    def _reverse(self, phases: Phases, **kw: Any) -> torch.Tensor:
        gens = self.generators() if phases.t_boost > 0 else None
        return reverse(self.backbone, self.latents, self.config.n_steps, phases=phases, generators=gens, **kw).cpu()

    def _measure(self, images: torch.Tensor, record: Recording | None = None) -> EditRun:
        reading, feats = read_probe(self.probe, images)
        return EditRun(images=images, reading=reading, features=feats, record=record)

    def applied(self, members: Sequence[tuple[DirectionUnderTest, float]]) -> Direction:
        """The delta an edit applies: ``sum_i strength_i * unit_i * dh_i`` (no 1/sqrt(N): the plain sum),
        rescaled for the step count as ``hspace edit`` does."""
        comp = ComposedDirection([(d.direction, s * d.strength) for d, s in members], normalize=False)
        return rescale_for_steps(comp, self.config.n_steps)

    @staticmethod
    def as_shift(direction: Callable) -> Callable:
        return lambda h, t, temb, i: direction(h, t, temb)

    # ------------------------------------------------------------------ runs

    def run(self, key: Any, what: str, *, phases: Phases, record: bool = False, **kw: Any) -> EditRun:
        """A memoised reverse run (``key`` names it; ``kw`` go to :func:`~hspace.analysis.runs.reverse`)."""
        hit = self._memo.get(key)
        if hit is not None and (hit.record is not None or not record):
            return hit
        rec = Recording() if record else None
        out = self._measure(self._reverse(phases, record=rec, **kw), rec)
        self._memo[key] = out
        self.on_run(what)
        return out

    def edit(self, members: Sequence[tuple[DirectionUnderTest, float]], *, record: bool = False,
             t_edit: int | None = None, t_boost: int = 0, mode: str = "asymmetric") -> EditRun:
        """Edit the latents with ``[(direction, strength), ...]`` summed (strength x the direction's unit).

        t_edit defaults to the smallest member t_edit (the longest interval, as for composition).
        """
        t_e = min(d.t_edit for d, _ in members) if t_edit is None else t_edit
        key = ("edit", tuple((d.name, float(s)) for d, s in members), t_e, t_boost, mode)
        delta = self.applied(members)
        return self.run(key, "edit " + " + ".join(f"{d.name}@{s:g}" for d, s in members),
                        phases=Phases(t_edit=t_e, t_boost=t_boost), record=record,
                        h_shift=self.as_shift(delta), mode=mode)

    def success(self, run: EditRun, target: Target, strength: float = 1.0, subset: slice = slice(None)) -> float | None:
        """Success rate of ``run`` against the reconstruction (:func:`~hspace.analysis.factors.success_rate`)."""
        return success_rate(self.probe, self.recon[subset], run.images[subset], target, strength)

    def score_change(self, run: EditRun, target: Target) -> torch.Tensor:
        """``[N]`` target score of ``run`` minus that of the reconstruction."""
        return target_score(run.reading, target) - target_score(self.recon_reading, target)

    def change(self, run: EditRun) -> torch.Tensor:
        """``[N]`` mean absolute pixel difference to the reconstruction (images clipped to [-1, 1])."""
        a, b = run.images.clamp(-1, 1), self.recon.clamp(-1, 1)
        return (a - b).abs().flatten(1).mean(dim=1)


def _infer_target(ctx: AnalysisContext, d: DirectionUnderTest) -> Target:
    run = ctx.edit([(d, 1.0)], record=True)
    best, best_gain = candidate_targets()[0], -math.inf
    for cand in candidate_targets():
        # mean change in units of the score's spread over real faces (logits and smile values differ in scale)
        spread = float(target_score(ctx.reference_reading, cand).std()) + 1e-6
        gain = float(ctx.score_change(run, cand).mean()) / spread
        if gain > best_gain:
            best, best_gain = cand, gain
    return Target(best.factor, best.value, "inferred: the target its strength-1 edit raised most (in units of its spread over real faces)")


def build_context(
    backbone: Backbone,
    probe: AttributeProbe,
    config: AnalysisConfig,
    directions: Sequence[tuple[str, Direction, float, str | None]],
    on_run: Callable[[str], None] | None = None,
) -> AnalysisContext:
    """Prepare a run: resolve each direction's target and t_edit, render, invert, reconstruct.

    Args:
        directions: ``(name, direction, unit strength, file path or None)``; only the first
            ``config.max_directions`` are kept.

    Raises:
        ValueError: no directions.
    """
    if not directions:
        raise ValueError("no directions to analyse: pass at least one direction")
    tests = []
    for name, direction, strength, path in list(directions)[: config.max_directions]:
        t_edit, _, src = resolve_interval(EditConfig(t_edit=config.t_edit), direction, backbone.backbone_id)
        target = target_for_name(name, direction.meta.target_text)
        tests.append(DirectionUnderTest(name, direction, float(strength), target, int(t_edit), src["t_edit"], path))
    ctx = AnalysisContext(backbone, probe, config, tests, on_run)
    for d in tests:
        if d.target is None:
            d.target = _infer_target(ctx, d)
            log.info("direction %s: no known target in its name or texts; %s", d.name, d.target.label())
    return ctx
