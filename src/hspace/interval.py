"""Editing interval [t_edit, T] and quality-boosting start t_boost (DESIGN.md 1.6).

Two curves, each a mean over images measured along a deterministic DDIM inversion x0 -> x_T:

* editing strength  S(t) = distance(P_t, x0)   (P_t: the predicted clean image at step t)
* quality deficiency Q(t) = distance(x_t, x0)

Lookup rule (the one the official code's tables reproduce exactly, checked in the tests):

* ``t_edit``  = the smallest t of the curve's timesteps with ``S(t) >= 0.33 * cos_txt``;
* ``t_boost`` = the smallest t with ``Q(t) >= 1.2``.

"Smallest t with value >= threshold" is not the same as "first crossing" when a curve is not monotone
(several official strength tables wiggle by ~1e-3); on the ten official tables at cos_txt = 1 both give
the same numbers, and the smallest-t rule is the one implemented. The result is always one of the
curve's timesteps (every t in 1..999 except 998 for the official tables; the DDIM grid points for
measured curves). When no t reaches the threshold, the **largest** t is returned, ``reached`` is False
in :class:`IntervalChoice`, and an :class:`IntervalWarning` is issued (for t_edit this means "edit along
the whole trajectory"; for t_boost "boost everywhere below t_edit").

The official tables ship with the package (``hspace/data/lpips_tables``, MIT, from
kwonminki/Asyrp_official) and are available as presets: celeba, church, bedroom, afhq, metface.

Example:
    >>> c = choose_interval("celeba")
    >>> (c.t_edit, c.t_boost, c.source)
    (538, 167, 'preset:celeba')
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .backbones.base import Backbone
from .cache import cache_root, weights_digest
from .distances import Distance, get_distance
from .sampler import invert, predict_x0
from .schedule import abar_at

__all__ = [
    "EDIT_THRESHOLD",
    "BOOST_THRESHOLD",
    "PRESETS",
    "Preset",
    "IntervalWarning",
    "EditingCurves",
    "IntervalChoice",
    "load_lpips_table",
    "resolve_preset",
    "preset_curves",
    "pick_t_edit",
    "pick_t_boost",
    "measure_curves",
    "cache_dir",
    "curves_cache_path",
    "get_or_measure_curves",
    "choose_interval",
]

logger = logging.getLogger(__name__)

EDIT_THRESHOLD = 0.33
BOOST_THRESHOLD = 1.2
CURVES_FORMAT_VERSION = 1


class IntervalWarning(UserWarning):
    """A curve never reached its threshold; the largest timestep was used instead."""


# --------------------------------------------------------------------------------------------------
# Official tables and presets
# --------------------------------------------------------------------------------------------------


def load_lpips_table(path: str | os.PathLike) -> dict[int, float]:
    """Parse an official ``*_LPIPS_distance_*.tsv`` table: lines ``t<TAB>value``.

    The row index is not assumed to be t - 1 (the official tables have no t = 998).

    Returns:
        ``{t: value}`` in ascending t.

    Raises:
        ValueError: a malformed line, a duplicate t or an empty file (the message names the line).
    """
    table: dict[int, float] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                t, v = int(parts[0]), float(parts[1])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 't<TAB>value', got {line!r}") from None
            if t in table:
                raise ValueError(f"{path}:{lineno}: timestep {t} appears twice")
            table[t] = v
    if not table:
        raise ValueError(f"{path}: no 't<TAB>value' lines found")
    return dict(sorted(table.items()))


@dataclass(frozen=True)
class Preset:
    """A dataset of the paper with its two official LPIPS tables (file names in ``hspace/data/lpips_tables``)."""

    name: str
    strength_table: str
    deficiency_table: str
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("celeba", "celeba_LPIPS_distance_x0_t.tsv", "celeba_LPIPS_distance_x.tsv", "CelebA-HQ 256 (DDPM)"),
        Preset("church", "church_LPIPS_distance_x0_t.tsv", "church_LPIPS_distance_x.tsv", "LSUN church 256 (DDPM)"),
        Preset("bedroom", "bedroom_LPIPS_distance_x0_t.tsv", "bedroom_LPIPS_distance_x.tsv", "LSUN bedroom 256 (DDPM)"),
        Preset("afhq", "afhq_LPIPS_distance_x0_t.tsv", "afhq_LPIPS_distance_x.tsv", "AFHQ-dog 256 (iDDPM)"),
        Preset("metface", "metface_LPIPS_distance_x0_t.tsv", "metface_LPIPS_distance_x.tsv", "MetFaces 256 (ADM)"),
    )
}
_ALIASES = {
    "celeba_hq": "celeba",
    "celebahq": "celeba",
    "lsun_church": "church",
    "lsun_bedroom": "bedroom",
    "afhq_dog": "afhq",
    "metfaces": "metface",
}


def resolve_preset(name: str) -> str:
    """Canonical preset name for ``name`` or an alias (case-insensitive, ``-`` same as ``_``).

    Raises:
        ValueError: unknown name; the message lists the presets and aliases.
    """
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown interval preset {name!r}; presets: {sorted(PRESETS)}, aliases: {sorted(_ALIASES)}")
    return key


def _table_file(filename: str):
    return resources.files("hspace").joinpath("data", "lpips_tables", filename)


def preset_curves(name: str) -> "EditingCurves":
    """The official curves of a preset as :class:`EditingCurves` (998 timesteps, t = 998 absent)."""
    key = resolve_preset(name)
    p = PRESETS[key]
    with resources.as_file(_table_file(p.strength_table)) as f:
        strength = load_lpips_table(f)
    with resources.as_file(_table_file(p.deficiency_table)) as f:
        deficiency = load_lpips_table(f)
    if strength.keys() != deficiency.keys():
        raise ValueError(f"preset {key!r}: the two tables cover different timesteps")
    ts = list(strength)
    return EditingCurves(
        timesteps=ts,
        strength=[strength[t] for t in ts],
        deficiency=[deficiency[t] for t in ts],
        distance_name="lpips (official Asyrp table)",
        n_images=None,
        backbone_id=f"asyrp-official:{key}",
        n_steps=None,
        preset=key,
    )


# --------------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------------


@dataclass
class EditingCurves:
    """Mean editing strength and quality deficiency per timestep.

    Attributes:
        timesteps: ascending timesteps on the model's 0..T-1 scale.
        strength: mean distance(P_t, x0) per timestep.
        deficiency: mean distance(x_t, x0) per timestep.
        distance_name: the distance that produced them (e.g. ``"lpips-alex"``, ``"fallback-msgrad-v1"``).
        n_images: images averaged over (None: unknown, as for the official tables).
        backbone_id: the model measured.
        n_steps: DDIM grid size of the inversion (None: unknown / not a DDIM grid).
        preset: the preset name when these are official tables, else None.
    """

    timesteps: list[int]
    strength: list[float]
    deficiency: list[float]
    distance_name: str
    n_images: int | None
    backbone_id: str
    n_steps: int | None
    preset: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.timesteps)
        if n == 0:
            raise ValueError("EditingCurves needs at least one timestep")
        if len(self.strength) != n or len(self.deficiency) != n:
            raise ValueError(
                f"timesteps, strength and deficiency must have the same length, got {n}, {len(self.strength)}, {len(self.deficiency)}"
            )
        self.timesteps = [int(t) for t in self.timesteps]
        if any(b <= a for a, b in zip(self.timesteps, self.timesteps[1:])):
            raise ValueError("timesteps must be strictly ascending")
        self.strength = [float(v) for v in self.strength]
        self.deficiency = [float(v) for v in self.deficiency]

    def to_dict(self) -> dict:
        from . import __version__

        return {"format_version": CURVES_FORMAT_VERSION, "kind": "editing_curves", "hspace_version": __version__, **asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the curves as JSON (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EditingCurves":
        """Read curves written by :meth:`save`.

        Raises:
            ValueError: not an editing-curves file, or a newer format version.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("kind") != "editing_curves":
            raise ValueError(f"{path} is not an hspace editing-curves file (kind={data.get('kind') if isinstance(data, dict) else None!r})")
        if data.get("format_version", 0) > CURVES_FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {data['format_version']}; this hspace reads up to {CURVES_FORMAT_VERSION}")
        for k in ("format_version", "kind", "hspace_version"):
            data.pop(k, None)
        return cls(**data)


def _first_at_least(curves: EditingCurves, values: list[float], level: float) -> tuple[int, bool]:
    for t, v in zip(curves.timesteps, values):
        if v >= level:
            return t, True
    return curves.timesteps[-1], False


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_cos(cos_txt: float) -> None:
    if not isinstance(cos_txt, (int, float)) or not (0 < cos_txt <= 1 + 1e-6):
        raise ValueError(f"cos_txt (cosine similarity of the source and target texts) must be in (0, 1], got {cos_txt!r}")


def _pick_edit(curves: EditingCurves, cos_txt: float, threshold: float) -> tuple[int, bool]:
    _check_cos(cos_txt)
    _check_positive("threshold", threshold)
    return _first_at_least(curves, curves.strength, threshold * min(float(cos_txt), 1.0))


def _pick_boost(curves: EditingCurves, threshold: float) -> tuple[int, bool]:
    _check_positive("threshold", threshold)
    return _first_at_least(curves, curves.deficiency, threshold)


def pick_t_edit(curves: EditingCurves, cos_txt: float = 1.0, threshold: float = EDIT_THRESHOLD) -> int:
    """Start of the editing interval: the smallest t with ``strength(t) >= threshold * cos_txt``.

    Args:
        curves: measured or preset curves.
        cos_txt: cosine similarity of source and target text embeddings, in (0, 1]; a lower
            similarity (a bigger change) gives a smaller t_edit, i.e. a longer editing interval.
        threshold: 0.33 in the paper (calibrated for LPIPS).

    Returns:
        One of ``curves.timesteps``; the largest one, with an :class:`IntervalWarning`, if no t reaches
        the threshold.
    """
    t, reached = _pick_edit(curves, cos_txt, threshold)
    if not reached:
        warnings.warn(
            f"editing strength never reaches {threshold * cos_txt:.4g} ({curves.distance_name}, max "
            f"{max(curves.strength):.4g}); using the largest timestep t_edit = {t}",
            IntervalWarning,
            stacklevel=2,
        )
    return t


def pick_t_boost(curves: EditingCurves, threshold: float = BOOST_THRESHOLD) -> int:
    """Start of quality boosting: the smallest t with ``deficiency(t) >= threshold`` (1.2 in the paper).

    Returns:
        One of ``curves.timesteps``; the largest one, with an :class:`IntervalWarning`, if no t reaches
        the threshold.
    """
    t, reached = _pick_boost(curves, threshold)
    if not reached:
        warnings.warn(
            f"quality deficiency never reaches {threshold:.4g} ({curves.distance_name}, max "
            f"{max(curves.deficiency):.4g}); using the largest timestep t_boost = {t}",
            IntervalWarning,
            stacklevel=2,
        )
    return t


@torch.no_grad()
def measure_curves(
    backbone: Backbone,
    images: torch.Tensor,
    distance: Distance | str = "auto",
    n_steps: int = 40,
    batch_size: int = 8,
    progress: bool = True,
    t0: int | None = None,
) -> EditingCurves:
    """Measure the mean editing-strength and quality-deficiency curves along DDIM inversion.

    For every image x0 and every t of ``ddim_grid(n_steps, t0)``: strength = distance(P_t, x0) and
    deficiency = distance(x_t, x0), where x_t is the inverted latent at t and P_t the clean image
    predicted from it (at t = 0, x_t = x0 exactly; at the top t, P_t is predicted from x_T with one
    extra network call). Means are taken over all images.

    Args:
        backbone: the frozen model.
        images: ``[N, 3, S, S]`` in [-1, 1] (the paper uses ~100 images of the model's domain).
        distance: a :class:`Distance` or a name for :func:`~hspace.distances.get_distance`.
        n_steps: inversion grid size (40 in the paper).
        batch_size: images per inversion batch.
        progress: show a progress bar over batches.
        t0: top timestep (default: the last of the model's schedule).

    Returns:
        :class:`EditingCurves` with ``n_steps`` timesteps.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, 3, S, S] with N >= 1, got {shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    dist = get_distance(distance) if isinstance(distance, str) else distance
    ac = backbone.alphas_cumprod
    device = backbone.device
    sums_s: dict[int, float] = {}
    sums_q: dict[int, float] = {}
    seq: list[int] = []
    n = images.shape[0]
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="interval curves", disable=not progress, total=len(starts)):
        x0 = images[start : start + batch_size].to(device=device, dtype=torch.float32)
        out = invert(backbone, x0, n_steps, t0, keep_trajectory=True)
        seq = out.seq
        preds = dict(out.x0_preds)
        top = seq[-1]
        eps_top = backbone.eps(out.latents, torch.full((x0.shape[0],), float(top), device=device)).float()
        preds[top] = predict_x0(out.latents, eps_top, abar_at(ac, top).to(device))
        for t in seq:
            s = dist(preds[t], x0).double().sum().item()
            q = dist(out.trajectory[t], x0).double().sum().item()
            sums_s[t] = sums_s.get(t, 0.0) + s
            sums_q[t] = sums_q.get(t, 0.0) + q
    return EditingCurves(
        timesteps=list(seq),
        strength=[sums_s[t] / n for t in seq],
        deficiency=[sums_q[t] / n for t in seq],
        distance_name=dist.name,
        n_images=n,
        backbone_id=backbone.backbone_id,
        n_steps=n_steps,
    )


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder (see :func:`hspace.cache.cache_root`)."""
    return cache_root()


def _slug(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "x"
    return f"{clean}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def curves_cache_path(backbone_id: str, weights: str, distance_name: str, n_steps: int) -> Path:
    """Where the curves of one (model, its weights, distance, grid size) are cached:
    ``<cache_dir()>/interval_curves/<backbone>__<weights>__<distance>__n<n_steps>.json`` (names
    slugged + hashed; ``weights`` is :func:`hspace.cache.weights_digest`, so a retrained model
    under the same id is measured afresh)."""
    name = f"{_slug(backbone_id)}__{_slug(weights)}__{_slug(distance_name)}__n{int(n_steps)}.json"
    return cache_dir() / "interval_curves" / name


def get_or_measure_curves(
    backbone: Backbone,
    images: torch.Tensor | None = None,
    distance: Distance | str = "auto",
    n_steps: int = 40,
    batch_size: int = 8,
    progress: bool = True,
    refresh: bool = False,
) -> EditingCurves:
    """Cached :func:`measure_curves`: measured once per (backbone id and weights, distance name, n_steps).

    Args:
        images: needed only when nothing is cached (or ``refresh``).
        refresh: measure again and overwrite the cache.

    Raises:
        ValueError: nothing cached and no ``images`` given (the message names the cache file).
    """
    dist = get_distance(distance) if isinstance(distance, str) else distance
    path = curves_cache_path(backbone.backbone_id, weights_digest(backbone), dist.name, n_steps)
    if path.is_file() and not refresh:
        curves = EditingCurves.load(path)
        logger.info("interval curves: loaded %s", path)
        return curves
    if images is None:
        raise ValueError(
            f"no cached interval curves for backbone {backbone.backbone_id!r}, distance {dist.name!r}, n_steps={n_steps} "
            f"(looked for {path}); pass images (~100 of the model's domain) to measure them, or use a preset"
        )
    curves = measure_curves(backbone, images, dist, n_steps=n_steps, batch_size=batch_size, progress=progress)
    curves.save(path)
    logger.info("interval curves: measured %d images, saved %s", curves.n_images, path)
    return curves


# --------------------------------------------------------------------------------------------------
# Choice
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalChoice:
    """The chosen interval and where it came from.

    Attributes:
        t_edit: edit at t >= t_edit.
        t_boost: stochastic quality boosting at t < t_boost.
        source: ``"preset:<name>"`` or ``"measured:<distance name>"``.
        distance_name: the distance of the curves used.
        note: plain-language caveats (fallback distance, thresholds not reached, t_boost > t_edit).
        cos_txt: the text similarity used.
        edit_reached / boost_reached: False when the curve never reached its threshold and the
            largest timestep was used instead.
    """

    t_edit: int
    t_boost: int
    source: str
    distance_name: str
    note: str = ""
    cos_txt: float = 1.0
    edit_threshold: float = EDIT_THRESHOLD
    boost_threshold: float = BOOST_THRESHOLD
    edit_reached: bool = True
    boost_reached: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def choose_interval(
    curves_or_preset: EditingCurves | str,
    cos_txt: float = 1.0,
    edit_threshold: float = EDIT_THRESHOLD,
    boost_threshold: float = BOOST_THRESHOLD,
) -> IntervalChoice:
    """Pick (t_edit, t_boost) from a preset name or measured curves.

    Args:
        curves_or_preset: :class:`EditingCurves`, or a preset name/alias (``"celeba"``, ``"lsun_church"``, ...).
        cos_txt: cosine similarity of source and target texts, in (0, 1].
        edit_threshold: 0.33 in the paper. boost_threshold: 1.2 in the paper.

    Returns:
        :class:`IntervalChoice`. Unreached thresholds are reported in ``note``/``*_reached`` (no warning).
    """
    curves = preset_curves(curves_or_preset) if isinstance(curves_or_preset, str) else curves_or_preset
    if not isinstance(curves, EditingCurves):
        raise TypeError(f"curves_or_preset must be EditingCurves or a preset name, got {type(curves_or_preset).__name__}")
    t_edit, edit_ok = _pick_edit(curves, cos_txt, edit_threshold)
    t_boost, boost_ok = _pick_boost(curves, boost_threshold)
    source = f"preset:{curves.preset}" if curves.preset else f"measured:{curves.distance_name}"
    notes: list[str] = []
    if not curves.distance_name.startswith("lpips"):
        notes.append(
            f"curves measured with {curves.distance_name!r}, not LPIPS; the thresholds {edit_threshold}/{boost_threshold} "
            "are calibrated for LPIPS, so this interval is approximate"
        )
    if not edit_ok:
        notes.append(f"editing strength never reached {edit_threshold * cos_txt:.4g}; t_edit set to the largest timestep {t_edit}")
    if not boost_ok:
        notes.append(f"quality deficiency never reached {boost_threshold:.4g}; t_boost set to the largest timestep {t_boost}")
    if t_boost > t_edit:
        notes.append(f"t_boost ({t_boost}) > t_edit ({t_edit}): boosting starts right where editing ends")
    return IntervalChoice(
        t_edit=t_edit,
        t_boost=t_boost,
        source=source,
        distance_name=curves.distance_name,
        note="; ".join(notes),
        cos_txt=float(cos_txt),
        edit_threshold=float(edit_threshold),
        boost_threshold=float(boost_threshold),
        edit_reached=edit_ok,
        boost_reached=boost_ok,
    )
