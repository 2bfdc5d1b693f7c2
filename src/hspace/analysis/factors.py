"""Reading toy-world factors off images with the attribute probe, for the analysis experiments.

Every experiment measures an edit through three numbers per image:

* the **target score**: one real number oriented so that the edit's target raises it
  (smile up: the smile value in [-1, 1]; a binary target: the probe's logit for the target
  value, e.g. ``-logit(eyes_open)`` for "eyes closed"; a hair colour: the log-odds of that
  class). Logits, not probabilities, so that a linear response is not bent by saturation;
* **success rate**: :func:`hspace.evaluation.evaluate_toy_edit`'s rule (the edited image shows the
  target, over the images whose source did not; negative strengths reverse the target), through
  :func:`success_rate`. Without the evaluation package a simpler stated rule runs
  (:func:`target_reached`: over all images; smile moved by at least :data:`SMILE_STEP`);
* **preservation**: the share of the other discrete factors that the edit left unchanged.

Targets are ``(factor, value)`` pairs named like the shipped directions (:data:`TARGETS`),
e.g. ``"smiling" -> ("smile", "up")``, ``"glasses" -> ("glasses", True)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.factors import SMILE_STEP as EVAL_SMILE_STEP
from ..evaluation.factors import TOY_TARGETS
from ..toyworld.faces import FACTORS
from ..toyworld.probe import BINARY, CATEGORICAL, CONTINUOUS, AttributeProbe, decode, frechet_distance

__all__ = [
    "TARGETS",
    "SMILE_STEP",
    "Target",
    "target_for_name",
    "candidate_targets",
    "ProbeReading",
    "read_probe",
    "to_probe_size",
    "target_score",
    "target_reached",
    "success_rate",
    "SUCCESS_RULE",
    "preservation",
    "probe_fd",
    "mean_std",
]

#: Edit names -> (factor, target value). "up"/"down" for the continuous smile.
TARGETS: dict[str, tuple[str, Any]] = {
    **TOY_TARGETS,  # the shipped directions' targets: hspace.evaluation's table is the one source
    # aliases and reversed edits the analysis also recognises by name
    "smile": ("smile", "up"),
    "frowning": ("smile", "down"),
    "no_glasses": ("glasses", False),
    "no_hat": ("hat", False),
    "no_beard": ("beard", False),
    "eyes_open": ("eyes_open", True),
    **{c: ("hair_color", c) for c in FACTORS["hair_color"]["values"]},
}

#: A smile edit succeeds when the smile value moved this much the right way (range is [-1, 1]);
#: the same step as :func:`hspace.evaluation.evaluate_toy_edit`.
SMILE_STEP = EVAL_SMILE_STEP


@dataclass(frozen=True)
class Target:
    """What a direction is meant to change: ``factor`` towards ``value``; ``source`` says how it was found."""

    factor: str
    value: Any
    source: str = "name"

    def label(self) -> str:
        return f"{self.factor} {self.value}" if self.factor in CONTINUOUS else f"{self.factor}={self.value}"


def target_for_name(*names: str | None) -> Target | None:
    """The target of the first name (a file stem, a target text) that names one of :data:`TARGETS`.

    Uses :func:`hspace.evaluation.match_toy_target` when available; otherwise (and for the extra
    names here such as hair colours) a key matches when it appears as whole ``_``-separated words
    of the normalised name (lower case; spaces, ``-`` and ``.`` -> ``_``), the longest key first:
    ``"an_glasses"`` -> glasses, ``"eyes_closed_v2"`` -> eyes closed, ``"smiling face"`` -> smiling.
    None when nothing matches.
    """
    try:
        from ..evaluation.factors import TOY_TARGETS, match_toy_target
    except Exception:  # noqa: BLE001 - optional
        match_toy_target = None
    for name in names:  # an exact name first ("no_glasses" is not "glasses")
        exact = re.sub(r"[^a-z0-9]+", "_", (name or "").strip().lower()).strip("_")
        if exact in TARGETS:
            return Target(*TARGETS[exact], source=f"name {name!r}")
    if match_toy_target is not None:
        hit = match_toy_target(*names)
        if hit is not None:
            return Target(*TOY_TARGETS[hit], source=f"name match {hit!r}")
    for name in names:
        if not name:
            continue
        key = "_" + re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_") + "_"
        for k in sorted(TARGETS, key=len, reverse=True):
            if f"_{k}_" in key:
                return Target(*TARGETS[k], source=f"{k!r} in {name!r}")
    return None


def candidate_targets() -> list[Target]:
    """Every target a direction could have (used to infer an unknown direction's target)."""
    out = [Target("smile", "up", "inferred"), Target("smile", "down", "inferred")]
    out += [Target(b, v, "inferred") for b in BINARY for v in (True, False)]
    out += [Target(c, v, "inferred") for c in CATEGORICAL for v in FACTORS[c]["values"]]
    return out


@dataclass
class ProbeReading:
    """The probe's raw head outputs and decoded factors for a batch of images."""

    raw: dict[str, torch.Tensor]
    decoded: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(next(iter(self.decoded.values())).shape[0])


def to_probe_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[B, 3, S, S]`` clipped to [-1, 1] and resized (bilinear, antialiased) to ``size``."""
    x = x.detach().float().clamp(-1, 1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def read_probe(probe: AttributeProbe, images: torch.Tensor, batch_size: int = 64) -> tuple[ProbeReading, torch.Tensor]:
    """Run the probe once: (reading, features ``[B, D]``). Images of any size are resized to the probe's."""
    probe.eval()
    x = to_probe_size(images, probe.config.image_size)
    raws, feats = [], []
    for i in range(0, len(x), batch_size):
        f = probe.features(x[i:i + batch_size])
        feats.append(f)
        out = {}
        for n, head in probe.heads.items():
            y = head(f)
            out[n] = y if n in CATEGORICAL else y.squeeze(-1)
        raws.append(out)
    raw = {k: torch.cat([r[k] for r in raws]).float() for k in raws[0]}
    return ProbeReading(raw=raw, decoded=decode(raw)), torch.cat(feats).float()


def _value_index(factor: str, value: Any) -> int:
    values = list(FACTORS[factor]["values"])
    if value not in values:
        raise ValueError(f"{factor} has values {values}, got {value!r}")
    return values.index(value)


def target_score(reading: ProbeReading, target: Target) -> torch.Tensor:
    """``[B]`` score that the target raises (see the module docstring)."""
    f, v = target.factor, target.value
    if f in CONTINUOUS:
        if v not in ("up", "down"):
            raise ValueError(f"continuous factor {f} takes 'up' or 'down', got {v!r}")
        s = reading.decoded[f]
        return s if v == "up" else -s
    if f in BINARY:
        logit = reading.raw[f]
        return logit if bool(v) else -logit
    if f in CATEGORICAL:
        logits = reading.raw[f]
        k = _value_index(f, v)
        others = torch.cat([logits[:, :k], logits[:, k + 1:]], dim=1)
        return logits[:, k] - torch.logsumexp(others, dim=1)
    raise ValueError(f"unknown factor {f!r}")


def target_reached(source: ProbeReading, edited: ProbeReading, target: Target) -> torch.Tensor:
    """``[B]`` bool: the edited image shows the target (smile: moved by >= :data:`SMILE_STEP`)."""
    f, v = target.factor, target.value
    if f in CONTINUOUS:
        d = edited.decoded[f] - source.decoded[f]
        return d >= SMILE_STEP if v == "up" else d <= -SMILE_STEP
    if f in BINARY:
        return edited.decoded[f] == bool(v)
    return edited.decoded[f] == _value_index(f, v)


def _evaluate_toy_edit():
    try:
        from ..evaluation.factors import evaluate_toy_edit
    except Exception:  # noqa: BLE001 - the evaluation package is optional here
        return None
    return evaluate_toy_edit


#: Which success rule :func:`success_rate` uses in this installation.
SUCCESS_RULE = (
    "hspace.evaluation.evaluate_toy_edit (over images whose source lacks the target)"
    if _evaluate_toy_edit() is not None
    else f"fallback: edited image shows the target, over all images (smile: moved >= {SMILE_STEP})"
)


def success_rate(probe: AttributeProbe, source: torch.Tensor, edited: torch.Tensor, target: Target,
                 strength: float = 1.0) -> float | None:
    """Share of images where the edit reached ``target`` (reversed when ``strength < 0``); None when
    no image was eligible (every source already had the target). See :data:`SUCCESS_RULE`."""
    size = probe.config.image_size
    src, edt = to_probe_size(source, size), to_probe_size(edited, size)
    evaluate = _evaluate_toy_edit()
    if evaluate is not None:
        return evaluate(probe, src, edt, (target.factor, target.value), strength=strength)["success"]["rate"]
    t = target
    if strength < 0:
        if t.factor in CONTINUOUS:
            t = Target(t.factor, "down" if t.value == "up" else "up", t.source)
        elif t.factor in BINARY:
            t = Target(t.factor, not t.value, t.source)
        else:  # "not this category": no single value to reach; count leaving it
            a, _ = read_probe(probe, src)
            b, _ = read_probe(probe, edt)
            k = _value_index(t.factor, t.value)
            return float((b.decoded[t.factor] != k).float().mean())
    a, _ = read_probe(probe, src)
    b, _ = read_probe(probe, edt)
    return float(target_reached(a, b, t).float().mean())


def preservation(source: ProbeReading, edited: ProbeReading, exclude: str | None = None) -> torch.Tensor:
    """``[B]`` share of the discrete factors (binary + categorical, except ``exclude``) left unchanged."""
    names = [n for n in (*BINARY, *CATEGORICAL) if n != exclude]
    same = torch.stack([(source.decoded[n] == edited.decoded[n]).float() for n in names], dim=1)
    return same.mean(dim=1)


def probe_fd(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance of two probe-feature sets ("probe FID"); NaN when a set has < 2 rows."""
    if len(features_a) < 2 or len(features_b) < 2:
        return float("nan")
    return float(frechet_distance(features_a, features_b))


def mean_std(values: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(mean, std) of a 1-D set as floats (std 0 for one value)."""
    a = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
