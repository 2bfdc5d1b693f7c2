"""Evaluation of edits, beside the pipeline: pure functions per metric, and one report.

    from hspace.evaluation import evaluate_edit, evaluate_toy_edit, directional_similarity, frechet_distance

Modules (one job each): :mod:`.image_metrics` (PSNR, SSIM, LPIPS or a stated fallback),
:mod:`.clip_metrics` (directional CLIP similarity, CLIP score), :mod:`.realism` (FD and KID on
probe / Inception / CLIP features, via torchmetrics), :mod:`.factors` (toy-world target success and
factor preservation), :mod:`.pairs` (pairing source and edited files), :mod:`.report`
(:func:`evaluate_edit` and the printed table). ``hspace eval`` is the command line on top.
torchmetrics and transformers are imported only when a metric needs them.
"""

from __future__ import annotations

from ..metrics import psnr
from .clip_metrics import clip_edit_metrics, clip_score, directional_similarity, encode_images, encoder_is_meaningful
from .factors import TOY_TARGETS, ToyTarget, evaluate_toy_edit, match_toy_target, resolve_toy_target
from .image_metrics import pixel_metrics, resolve_distance, ssim
from .pairs import EvalPairs, pairs_from_folders, pairs_from_run
from .realism import (
    ClipFeatures,
    FeatureExtractor,
    InceptionFeatures,
    KIDResult,
    ProbeFeatures,
    compare_feature_sets,
    extract_features,
    frechet_distance,
    inception_status,
    kernel_inception_distance,
)
from .report import evaluate_edit, format_report, toy_reference_images

__all__ = [
    "psnr", "ssim", "pixel_metrics", "resolve_distance",
    "directional_similarity", "clip_score", "clip_edit_metrics", "encode_images", "encoder_is_meaningful",
    "frechet_distance", "kernel_inception_distance", "KIDResult", "compare_feature_sets", "extract_features",
    "FeatureExtractor", "ProbeFeatures", "ClipFeatures", "InceptionFeatures", "inception_status",
    "TOY_TARGETS", "ToyTarget", "resolve_toy_target", "match_toy_target", "evaluate_toy_edit",
    "EvalPairs", "pairs_from_folders", "pairs_from_run",
    "evaluate_edit", "format_report", "toy_reference_images",
]
