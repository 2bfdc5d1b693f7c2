"""One evaluation of an edit: every metric on (source, edited) pairs, as a JSON-ready dict and a table.

:func:`evaluate_edit` runs, each where it can:

* ``image_metrics`` -- PSNR, SSIM and the perceptual distance per pair (:mod:`.image_metrics`);
* ``clip`` -- directional CLIP similarity and CLIP score with the given encoder (:mod:`.clip_metrics`);
* ``realism`` -- FD and KID per feature extractor (toy probe for 64x64 images, InceptionV3 when its
  weights are on disk, the CLIP encoder's embeddings), edited vs source, and edited / source vs a
  reference set of real images when one is given (``real="toy"`` renders held-out toy faces);
* ``toy_factors`` -- the toy-world factor table for a target (:mod:`.factors`).

A section that cannot run says why (``{"skipped": reason}``, or ``"available": false`` with the
reason for a feature extractor) instead of failing the whole evaluation.
"""

from __future__ import annotations

import math
from importlib import metadata
from typing import Any

import torch

from .clip_metrics import clip_edit_metrics
from .factors import ToyTarget, evaluate_toy_edit, resolve_toy_target
from .image_metrics import pixel_metrics
from .realism import ClipFeatures, InceptionFeatures, ProbeFeatures, compare_feature_sets, extract_features, inception_status

__all__ = ["TOY_IMAGE_SIZE", "REAL_SEED", "toy_reference_images", "evaluate_edit", "format_report"]

TOY_IMAGE_SIZE = 64
#: Seed of the held-out toy faces used as the "real" set (neither the probe's training nor its eval seed).
REAL_SEED = 2_000_003


def toy_reference_images(n: int, seed: int = REAL_SEED, progress: bool = False) -> torch.Tensor:
    """``n`` procedural toy faces ``[n, 3, 64, 64]`` in [-1, 1] (items 0..n-1 of ``seed``)."""
    from tqdm.auto import tqdm

    from ..toyworld import factors_for, image_to_tensor, render_array

    if n < 2:
        raise ValueError(f"the reference set needs at least 2 images, got n={n}")
    return torch.stack([image_to_tensor(render_array(factors_for(seed, i)))
                        for i in tqdm(range(n), desc="toy reference faces", unit="img", disable=not progress, leave=False)])


def _realism(
    extractors: list[tuple[str, Any]],
    unavailable: dict[str, str],
    source: torch.Tensor,
    edited: torch.Tensor,
    real: torch.Tensor | None,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, ex in extractors:
        f_src = extract_features(ex, source, batch_size, progress, desc=f"{key} source")
        f_edt = extract_features(ex, edited, batch_size, progress, desc=f"{key} edited")
        entry: dict[str, Any] = {"available": True, "name": ex.name, "num_features": int(ex.num_features),
                                 "edited_vs_source": compare_feature_sets(f_edt, f_src, kid_subsets, kid_subset_size, seed,
                                                                         paired=True)}
        need = getattr(ex, "image_size", None)
        if real is not None and need is not None and tuple(real.shape[-2:]) != (need, need):
            why = f"the reference images are {real.shape[-2]}x{real.shape[-1]}; {ex.name} reads {need}x{need}"
            entry["edited_vs_real"] = entry["source_vs_real"] = {"skipped": why}
        elif real is not None:
            f_real = extract_features(ex, real, batch_size, progress, desc=f"{key} real")
            entry["edited_vs_real"] = compare_feature_sets(f_edt, f_real, kid_subsets, kid_subset_size, seed)
            entry["source_vs_real"] = compare_feature_sets(f_src, f_real, kid_subsets, kid_subset_size, seed)
        if len(edited) < 2 * int(ex.num_features):
            entry["note"] = (f"{len(edited)} images for {ex.num_features}-d features: FD is biased upwards at this size; "
                             "compare FDs only between sets of the same size (KID is unbiased)")
        out[key] = entry
    for key, reason in unavailable.items():
        out[key] = {"available": False, "reason": reason}
    return out


def evaluate_edit(
    source: torch.Tensor,
    edited: torch.Tensor,
    *,
    names: list[str] | None = None,
    source_text: str | None = None,
    target_text: str | None = None,
    encoder: Any = None,
    distance: Any = "auto",
    probe: Any = None,
    toy_target: str | ToyTarget | tuple[str, Any] | None = None,
    strength: float = 1.0,
    real: torch.Tensor | str | None = None,
    n_real: int = 200,
    inception_weights: str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate an edit on ``N`` (source, edited) pairs.

    Args:
        source, edited: ``[N, 3, S, S]`` in [-1, 1], paired by index.
        names: one name per pair (default ``"0"``, ``"1"``, ...).
        source_text, target_text: the edit's texts (S_dir needs both, CLIP score the target).
        encoder: an :class:`~hspace.encoders.ImageTextEncoder`, or None to skip the CLIP section.
        distance: the perceptual distance (see :func:`~hspace.evaluation.image_metrics.resolve_distance`).
        probe: the toy attribute probe (``load_probe()``), or None to skip the toy sections. Used only
            for 64x64 images.
        toy_target: a ``TOY_TARGETS`` name / ``(factor, value)`` / :class:`ToyTarget` for the factor
            table; None skips it. strength: the edit's strength; a negative one reverses the target.
        real: reference images ``[M, 3, S', S']`` in [-1, 1], ``"toy"`` (render ``n_real`` held-out toy
            faces; 64x64 images only) or None (FD/KID only edited vs source).
        inception_weights: torch-fidelity InceptionV3 weights file (default: the torch hub cache file).
        kid_subsets, kid_subset_size: KID subsets (the size shrinks to the smaller set).
        batch_size: images per network call. seed: KID subset sampling. progress: tqdm bars.

    Returns:
        A JSON-ready dict with the sections ``summary``, ``per_image``, ``image_metrics``, ``clip``,
        ``realism``, ``toy_factors`` (README, "Evaluate edits", shows the layout).

    Raises:
        ValueError: batches that are not paired ``[N, 3, S, S]`` images, a bad target or setting.
    """
    if not isinstance(source, torch.Tensor) or not isinstance(edited, torch.Tensor) or source.shape != edited.shape \
            or source.dim() != 4 or source.shape[1] != 3 or len(source) == 0:
        raise ValueError("source and edited must be non-empty image batches of the same shape [N, 3, S, S], got "
                         f"{tuple(getattr(source, 'shape', ()))} and {tuple(getattr(edited, 'shape', ()))}")
    n = len(source)
    names = [str(i) for i in range(n)] if names is None else [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"names must have one entry per pair ({n}), got {len(names)}")
    side = tuple(source.shape[-2:])
    is_toy_size = side == (TOY_IMAGE_SIZE, TOY_IMAGE_SIZE)
    target = resolve_toy_target(toy_target, strength) if toy_target is not None else None

    report: dict[str, Any] = {"n": n, "image_size": list(side), "texts": {"source": source_text, "target": target_text},
                              "strength": strength}
    pix = pixel_metrics(source, edited, distance, batch_size)
    report["image_metrics"] = pix

    if encoder is None:
        report["clip"] = {"skipped": "no CLIP encoder given"}
    else:
        report["clip"] = clip_edit_metrics(encoder, source, edited, source_text, target_text, batch_size, progress)

    # realism: which extractors run, and the reference set
    extractors: list[tuple[str, Any]] = []
    unavailable: dict[str, str] = {}
    if not is_toy_size:
        unavailable["probe"] = f"the probe reads 64x64 toy faces; these images are {side[0]}x{side[1]}"
    elif probe is None:
        unavailable["probe"] = "no toy attribute probe given"
    else:
        extractors.append(("probe", ProbeFeatures(probe)))
    usable, problems = inception_status(inception_weights)
    if usable:
        extractors.append(("inception", InceptionFeatures(inception_weights)))
    else:
        unavailable["inception"] = "not available (no weights: " + "; ".join(problems) + ")"
    if encoder is not None:
        extractors.append(("clip", ClipFeatures(encoder)))
    else:
        unavailable["clip"] = "no CLIP encoder given"
    real_info: dict[str, Any] = {"kind": None, "n": 0}
    real_images: torch.Tensor | None = None
    if isinstance(real, str):
        if real != "toy":
            raise ValueError(f"real must be an image batch, 'toy' or None, got {real!r}")
        if is_toy_size:
            real_images = toy_reference_images(n_real, progress=progress)
            real_info = {"kind": "toy held-out renders", "seed": REAL_SEED, "n": n_real}
        else:
            real_info = {"kind": None, "n": 0, "note": f"no toy reference for {side[0]}x{side[1]} images"}
    elif real is not None:
        if real.dim() != 4 or real.shape[1] != 3 or len(real) < 2:
            raise ValueError(f"real must be a batch [M >= 2, 3, H, W] in [-1, 1], got shape {tuple(real.shape)}")
        real_images = real
        real_info = {"kind": "given", "n": int(len(real))}
    report["realism"] = {
        "reference": real_info,
        "implementation": f"torchmetrics {_version('torchmetrics')} (FrechetInceptionDistance / KernelInceptionDistance on our features)",
        "extractors": _realism(extractors, unavailable, source, edited, real_images, kid_subsets, kid_subset_size,
                               seed, batch_size, progress),
    }

    if not is_toy_size:
        report["toy_factors"] = {"skipped": f"the probe reads 64x64 toy faces; these images are {side[0]}x{side[1]}"}
    elif target is None:
        report["toy_factors"] = {"skipped": "no toy target (pass one of TOY_TARGETS, e.g. toy_target='smiling')"}
    elif probe is None:
        report["toy_factors"] = {"skipped": "no toy attribute probe given"}
    else:
        report["toy_factors"] = evaluate_toy_edit(probe, source, edited, target)

    report["per_image"] = _per_image(names, report)
    report["summary"] = _summary(report)
    return report


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _per_image(names: list[str], r: dict[str, Any]) -> list[dict[str, Any]]:
    pix = r["image_metrics"]
    lp = pix["perceptual_distance"]["is_lpips"]
    clip = r["clip"]
    rows = []
    for i, name in enumerate(names):
        d = pix["per_image"]["perceptual"][i]
        row: dict[str, Any] = {"name": name, "psnr": pix["per_image"]["psnr"][i], "ssim": pix["per_image"]["ssim"][i],
                               "lpips": d if lp else None, "perceptual_distance": d}
        if clip.get("directional_similarity"):
            row["s_dir"] = clip["directional_similarity"]["per_image"][i]
        if clip.get("clip_score"):
            row["clip_score_source"] = clip["clip_score"]["per_image_source"][i]
            row["clip_score_edited"] = clip["clip_score"]["per_image_edited"][i]
        rows.append(row)
    return rows


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    pix = r["image_metrics"]
    s: dict[str, Any] = {
        "n": r["n"], "psnr": pix["mean"]["psnr"], "ssim": pix["mean"]["ssim"], "lpips": pix["lpips"],
        "perceptual_distance": pix["mean"]["perceptual"], "perceptual_distance_name": pix["perceptual_distance"]["name"],
    }
    clip = r["clip"]
    if "skipped" not in clip:
        s["clip_encoder"] = clip["encoder"]
        s["clip_meaningful"] = clip["meaningful"]
        s["s_dir"] = clip["directional_similarity"]["mean"] if clip["directional_similarity"] else None
        s["clip_score_edited"] = clip["clip_score"]["edited"] if clip["clip_score"] else None
        s["clip_score_source"] = clip["clip_score"]["source"] if clip["clip_score"] else None
    for key, e in r["realism"]["extractors"].items():
        if not e.get("available"):
            continue
        for cmp in ("edited_vs_real", "edited_vs_source"):
            if cmp in e and "fd" in e[cmp]:
                s[f"fd_{key}_{cmp}"] = e[cmp]["fd"]
                if e[cmp].get("kid_mean") is not None:
                    s[f"kid_{key}_{cmp}"] = e[cmp]["kid_mean"]
    tf = r["toy_factors"]
    if "skipped" not in tf:
        s["toy_target"] = tf["target"]["describe"]
        s["toy_success_rate"] = tf["success"]["rate"]
        s["toy_passes"] = tf["passes"]
    return s


# --------------------------------------------------------------------------- table


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]


def format_report(report: dict[str, Any]) -> str:
    """A plain aligned text table of :func:`evaluate_edit`'s result (what ``hspace eval`` prints)."""
    rows: list[tuple[str, str, str]] = []
    pix = report["image_metrics"]
    rows.append(("PSNR, dB (mean)", _f(pix["mean"]["psnr"], 2),
                 f"{pix['n_identical']} identical pair(s) excluded (inf)" if pix["n_identical"] else ""))
    rows.append(("SSIM (mean)", _f(pix["mean"]["ssim"]), ""))
    pd = pix["perceptual_distance"]
    rows.append(("LPIPS (mean)" if pd["is_lpips"] else "perceptual distance (mean)", _f(pix["mean"]["perceptual"]),
                 pd["name"] if pd["is_lpips"] else f"{pd['name']}, NOT LPIPS"))
    clip = report["clip"]
    if "skipped" in clip:
        rows.append(("CLIP", "skipped", clip["skipped"]))
    else:
        tag = clip["encoder"] + ("" if clip["meaningful"] else ", RANDOM weights: meaningless")
        if clip["directional_similarity"]:
            rows.append(("S_dir (mean)", _f(clip["directional_similarity"]["mean"]), tag))
        else:
            rows.append(("S_dir", "n/a", "needs --source-text and --target-text"))
        if clip["clip_score"]:
            cs = clip["clip_score"]
            rows.append(("CLIP score edited / source", f"{_f(cs['edited'])} / {_f(cs['source'])}", f"cos to {clip['target_text']!r}"))
        rows.append(("CLIP image similarity", _f(clip["image_similarity"]["mean"]), "cos(source, edited)"))
    rea = report["realism"]
    for key, e in rea["extractors"].items():
        if not e.get("available"):
            rows.append((f"FD/KID {key}", "-", e["reason"]))
            continue
        for cmp in ("edited_vs_real", "source_vs_real", "edited_vs_source"):
            c = e.get(cmp)
            if c is None:
                continue
            label = f"FD / KID {key}, {cmp.replace('_vs_', ' vs ')}"
            if "skipped" in c:
                rows.append((label, "-", c["skipped"]))
            else:
                kid_note = f"KID std {_f(c['kid_std'], 4)}" if c["kid_mean"] is not None else "no KID: paired sets"
                rows.append((label, f"{_f(c['fd'])} / {_f(c['kid_mean'], 4)}", f"n {c['n_a']} vs {c['n_b']}, {kid_note}"))
    lines = [f"evaluated {report['n']} pair(s), {report['image_size'][0]}x{report['image_size'][1]}"]
    lines += _table(rows)
    tf = report["toy_factors"]
    if "skipped" in tf:
        lines.append(f"toy factors: skipped ({tf['skipped']})")
    else:
        s = tf["success"]
        verdict = {True: "PASS", False: "FAIL", None: "cannot tell"}[tf["passes"]]
        lines.append(f"toy factors, target {tf['target']['name']} ({tf['target']['describe']}): success "
                     f"{_pct(s['rate'])} ({s['n_success']}/{s['n_eligible']} eligible; {s['n_already']} already had it) -> {verdict}")
        prow = [(f, _pct(p["rate"]), p["rule"]) for f, p in tf["preservation"].items()]
        prow += [(f, _f(v, 4), "pose, mean |delta| (not scored)") for f, v in tf["pose_mean_abs_delta"].items()]
        lines += ["  kept:"] + ["  " + line for line in _table(prow)]
        if tf["failing"]:
            lines.append("  failing: " + "; ".join(tf["failing"]))
    return "\n".join(lines)
