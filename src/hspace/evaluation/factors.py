"""Toy-world edit scores: did the target factor change, and did every other factor stay?

The attribute probe (:func:`hspace.toyworld.probe.load_probe`) reads every factor of a 64x64 toy
face. :func:`evaluate_toy_edit` reads the sources and the edited images and compares them image by
image. Both sides are the probe's readings (not ground truth), so probe errors count against the
edit; the shipped probe is 100 % accurate on held-out renders for every binary factor and hair
colour (smile R^2 0.988).

Rules (constants below):

* **Targets** are defined in one place, :data:`TOY_TARGETS` (direction name -> (factor, value)).
  A negative strength reverses the target: ``glasses`` becomes "no glasses", ``smiling`` becomes
  "down", ``blond`` becomes "not blond".
* **Success, binary or categorical target** ``factor = value``: the edited image has ``value``
  (negated: does not have it), counted over the images whose source did NOT already have it
  (negated: did have it); that count is ``n_eligible``. The other images are reported as
  ``n_already`` with the fraction that still meet the target after the edit (``already_kept``).
* **Success, smile up** (``smiling``): edited smile >= source smile + :data:`SMILE_STEP` (0.3) or
  edited smile >= :data:`SMILE_BAND` (0.5, "smiling"), over the images whose source smile < 0.5.
  **Smile down** (negative strength) mirrors it: edited <= source - 0.3 or edited <= -0.5, over the
  images whose source smile > -0.5.
* **Preservation** of every other factor, over all images: binary and categorical factors keep their
  value (a source -> edited count table is given for each); smile keeps ``|delta| <= 0.3``. The pose
  factors (dx, dy, scale, tilt) are excluded: they are reported as mean ``|delta|`` only.
* **Passing**: success rate >= :data:`PASS_RATE` (90 %) and every other factor preserved on >= 90 %
  of the images. With no eligible image the success rate is None and ``passes`` is None (cannot tell).

Example:
    >>> from hspace.toyworld import factors_for, render_array, with_factor, image_to_tensor
    >>> from hspace.toyworld.probe import load_probe
    >>> import torch
    >>> fs = [with_factor(factors_for(0, i), glasses=False) for i in range(4)]
    >>> src = torch.stack([image_to_tensor(render_array(f)) for f in fs])
    >>> edt = torch.stack([image_to_tensor(render_array(with_factor(f, glasses=True))) for f in fs])
    >>> r = evaluate_toy_edit(load_probe(), src, edt, "glasses")
    >>> r["success"]["rate"], r["passes"]
    (1.0, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from ..toyworld.faces import FACTOR_NAMES, FACTORS

__all__ = [
    "TOY_TARGETS",
    "TOY_TARGET_WORDS",
    "SMILE_STEP",
    "SMILE_BAND",
    "PASS_RATE",
    "POSE_FACTORS",
    "ToyTarget",
    "resolve_toy_target",
    "match_toy_target",
    "evaluate_toy_edit",
]

#: The toy world's edit directions: name -> (factor, target value). The one definition.
TOY_TARGETS: dict[str, tuple[str, Any]] = {
    "smiling": ("smile", "up"),
    "glasses": ("glasses", True),
    "blond": ("hair_color", "blond"),
    "eyes_closed": ("eyes_open", False),
    "hat": ("hat", True),
    "beard": ("beard", True),
}
#: Words that name each target in a direction's target text or file name (matched as whole words).
TOY_TARGET_WORDS: dict[str, tuple[str, ...]] = {
    "smiling": ("smiling", "smile", "smiles", "smiley"),
    "glasses": ("glasses", "eyeglasses", "spectacles"),
    "blond": ("blond", "blonde"),
    "eyes_closed": ("eyes closed", "closed eyes", "eyes_closed", "closed"),
    "hat": ("hat",),
    "beard": ("beard", "bearded"),
}
SMILE_STEP = 0.3  # a smile edit must move the smile by at least this much ...
SMILE_BAND = 0.5  # ... or land at/above this ("smiling"); also the eligibility bound
PASS_RATE = 0.9
POSE_FACTORS: tuple[str, ...] = ("dx", "dy", "scale", "tilt")


@dataclass(frozen=True)
class ToyTarget:
    """A resolved toy-world edit target.

    Attributes:
        name: the :data:`TOY_TARGETS` key (or ``"factor=value"`` for a custom one).
        factor: the factor the edit should change.
        value: the target value (``"up"``/``"down"`` for smile, a bool, or a category).
        negated: categorical targets only: the edit should REMOVE ``value`` (negative strength).
    """

    name: str
    factor: str
    value: Any
    negated: bool = False

    def describe(self) -> str:
        """E.g. ``"glasses = True"``, ``"smile down"``, ``"hair_color != blond"``."""
        if self.factor == "smile":
            return f"smile {self.value}"
        return f"{self.factor} {'!=' if self.negated else '='} {self.value}"


def resolve_toy_target(target: str | ToyTarget | tuple[str, Any], strength: float = 1.0) -> ToyTarget:
    """A target from a :data:`TOY_TARGETS` name, a ``(factor, value)`` pair or a :class:`ToyTarget`,
    reversed when ``strength < 0`` (see the module docstring).

    Raises:
        ValueError: an unknown name, factor or value (the message lists the allowed ones), or a pose
            factor (pose edits are not scored).
    """
    if isinstance(target, ToyTarget):
        base = target
    elif isinstance(target, str):
        key = target.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in TOY_TARGETS:
            raise ValueError(f"unknown toy target {target!r}; known: {', '.join(TOY_TARGETS)}")
        base = ToyTarget(key, *TOY_TARGETS[key])
    elif isinstance(target, tuple) and len(target) == 2:
        factor, value = target
        base = ToyTarget(f"{factor}={value}", factor, value)
    else:
        raise TypeError(f"target must be a TOY_TARGETS name, a (factor, value) pair or a ToyTarget, got {target!r}")
    spec = FACTORS.get(base.factor)
    if spec is None or base.factor in POSE_FACTORS:
        scored = [n for n in FACTOR_NAMES if n not in POSE_FACTORS]
        raise ValueError(f"target factor must be one of {scored}, got {base.factor!r}")
    if base.factor == "smile":
        if base.value not in ("up", "down"):
            raise ValueError(f"the smile target must be 'up' or 'down', got {base.value!r}")
    elif spec["type"] == "binary":
        if not isinstance(base.value, bool):
            raise ValueError(f"{base.factor} is binary: its target must be True or False, got {base.value!r}")
    elif base.value not in spec["values"]:
        raise ValueError(f"{base.factor} must be one of {spec['values']}, got {base.value!r}")
    if strength >= 0:
        return base
    if base.factor == "smile":
        return ToyTarget(base.name, "smile", "down" if base.value == "up" else "up")
    if spec["type"] == "binary":
        return ToyTarget(base.name, base.factor, not base.value)
    return ToyTarget(base.name, base.factor, base.value, negated=not base.negated)


def match_toy_target(*texts: str | None) -> str | None:
    """The :data:`TOY_TARGETS` name that the first informative text names, e.g. ``"smiling face"``
    -> ``"smiling"``, ``"glasses.safetensors"`` -> ``"glasses"``. Texts are tried in order; a text
    naming no target or several is skipped. None if none matches."""
    for text in texts:
        if not text:
            continue
        t = re.sub(r"[_\-.]+", " ", str(text).lower())
        hits = {k for k, words in TOY_TARGET_WORDS.items()
                for w in words if re.search(rf"\b{re.escape(w.replace('_', ' '))}\b", t)}
        if len(hits) == 1:
            return hits.pop()
    return None


def _label(factor: str, v: Any) -> str:
    """The readable value of a decoded probe output (category names, True/False, smile number)."""
    spec = FACTORS[factor]
    if spec["type"] == "categorical":
        return str(spec["values"][int(v)])
    if spec["type"] == "binary":
        return str(bool(v))
    return f"{float(v):.3f}"


def _confusion(factor: str, src: torch.Tensor, edt: torch.Tensor) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for a, b in zip(src.tolist(), edt.tolist()):
        row = table.setdefault(_label(factor, a), {})
        key = _label(factor, b)
        row[key] = row.get(key, 0) + 1
    return table


def _meets(t: ToyTarget, src: torch.Tensor, edt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(eligible mask, success mask, rule text) for target ``t`` on decoded values."""
    if t.factor == "smile":
        if t.value == "up":
            return (src < SMILE_BAND, (edt >= src + SMILE_STEP) | (edt >= SMILE_BAND),
                    f"edited smile >= source + {SMILE_STEP} or >= {SMILE_BAND}, over sources with smile < {SMILE_BAND}")
        return (src > -SMILE_BAND, (edt <= src - SMILE_STEP) | (edt <= -SMILE_BAND),
                f"edited smile <= source - {SMILE_STEP} or <= -{SMILE_BAND}, over sources with smile > -{SMILE_BAND}")
    spec = FACTORS[t.factor]
    if spec["type"] == "binary":
        v = bool(t.value)
        return src.bool() != v, edt.bool() == v, f"edited {t.factor} = {v}, over sources with {t.factor} = {not v}"
    idx = spec["values"].index(t.value)
    if t.negated:
        return src == idx, edt != idx, f"edited {t.factor} != {t.value}, over sources with {t.factor} = {t.value}"
    return src != idx, edt == idx, f"edited {t.factor} = {t.value}, over sources with {t.factor} != {t.value}"


def _rate(mask: torch.Tensor) -> float | None:
    return float(mask.float().mean()) if mask.numel() else None


@torch.no_grad()
def evaluate_toy_edit(
    probe: Any,
    source: torch.Tensor,
    edited: torch.Tensor,
    target: str | ToyTarget | tuple[str, Any],
    strength: float = 1.0,
) -> dict[str, Any]:
    """Score a toy-world edit with the attribute probe (rules in the module docstring).

    Args:
        probe: an :class:`~hspace.toyworld.probe.AttributeProbe` (e.g. ``load_probe()``).
        source, edited: ``[N, 3, 64, 64]`` in [-1, 1], paired by index.
        target: a :data:`TOY_TARGETS` name, a ``(factor, value)`` pair or a :class:`ToyTarget`.
        strength: the edit's strength; only its sign matters (negative reverses the target).

    Returns:
        ``{"target": {"name", "factor", "value", "negated", "describe", "rule"}, "n",
        "success": {"rate", "n_eligible", "n_success", "n_already", "already_kept"},
        "target_confusion": {source value: {edited value: count}} (binary/categorical targets),
        "target_mean_delta": float (smile target), "preservation": {factor: {"rate", "rule",
        "confusion" | "mean_abs_delta"}}, "pose_mean_abs_delta": {dx, dy, scale, tilt},
        "passes": bool | None, "failing": [reasons], "pass_rate": 0.9}``.

    Raises:
        ValueError: images that are not ``[N, 3, 64, 64]`` pairs, or a bad target.
    """
    t = resolve_toy_target(target, strength)
    if source.shape != edited.shape:
        raise ValueError(f"source and edited must have the same shape, got {tuple(source.shape)} and {tuple(edited.shape)}")
    if len(source) == 0:
        raise ValueError("no images to evaluate")
    ps, pe = probe.predict(source.float()), probe.predict(edited.float())
    eligible, success, rule = _meets(t, ps[t.factor], pe[t.factor])
    already = ~eligible
    n_el = int(eligible.sum())
    rate = _rate(success[eligible])
    out: dict[str, Any] = {
        "target": {"name": t.name, "factor": t.factor, "value": t.value, "negated": t.negated,
                   "describe": t.describe(), "rule": rule},
        "n": int(len(source)),
        "success": {"rate": rate, "n_eligible": n_el, "n_success": int(success[eligible].sum()),
                    "n_already": int(already.sum()), "already_kept": _rate(success[already])},
    }
    if t.factor == "smile":
        out["target_mean_delta"] = float((pe["smile"] - ps["smile"]).mean())
    else:
        out["target_confusion"] = _confusion(t.factor, ps[t.factor], pe[t.factor])
    preservation: dict[str, Any] = {}
    for f in FACTOR_NAMES:
        if f == t.factor or f in POSE_FACTORS:
            continue
        a, b = ps[f], pe[f]
        if f == "smile":
            delta = (b - a).abs()
            preservation[f] = {"rate": _rate(delta <= SMILE_STEP), "rule": f"|delta| <= {SMILE_STEP}",
                               "mean_abs_delta": float(delta.mean())}
        else:
            preservation[f] = {"rate": _rate(a == b), "rule": "equal", "confusion": _confusion(f, a, b)}
    out["preservation"] = preservation
    out["pose_mean_abs_delta"] = {f: float((pe[f] - ps[f]).abs().mean()) for f in POSE_FACTORS}
    failing: list[str] = []
    if rate is None:
        failing.append(f"no eligible image: every source already meets {t.describe()}")
    elif rate < PASS_RATE:
        failing.append(f"success {rate:.0%} < {PASS_RATE:.0%}")
    failing += [f"{f} kept on {p['rate']:.0%} < {PASS_RATE:.0%}" for f, p in preservation.items() if p["rate"] < PASS_RATE]
    out["passes"] = None if rate is None else not failing
    out["failing"] = failing
    out["pass_rate"] = PASS_RATE
    return out
