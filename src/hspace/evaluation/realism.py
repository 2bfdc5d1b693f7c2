"""Realism of a set of images: Frechet distance (FD) and kernel inception distance (KID) on features.

Both are torchmetrics' implementations (``FrechetInceptionDistance``, ``KernelInceptionDistance``),
fed with features we extract ourselves: the metric gets a pass-through module whose
``num_features`` says the width, so torchmetrics never probes it with a dummy image. This is the
one Frechet implementation in hspace (``hspace.toyworld.probe.frechet_distance`` / ``probe_fid``
call it).

Feature extractors (:class:`FeatureExtractor`: ``name``, ``num_features``, ``__call__(images)``):

* :class:`ProbeFeatures` -- the toy-world attribute probe's 128-d features ("probe FID"); 64x64
  toy faces only; its weights ship with hspace.
* :class:`InceptionFeatures` -- InceptionV3 pool3 (2048-d), the standard FID network, via
  torchmetrics + ``torch-fidelity``. Only when its weights file is already on disk
  (:func:`inception_status`); nothing is downloaded.
* :class:`ClipFeatures` -- the unit image embeddings of a CLIP encoder ("FD_CLIP"); as meaningful
  as the encoder.

FD compares Gaussians fitted to the two sets: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``;
it is biased upwards for small sets (it needs many more images than feature dimensions to be
stable), so compare FDs only between sets of equal size. KID is the unbiased squared MMD with the
cubic polynomial kernel ``(x.y / D + 1)^3``, averaged over random subsets (mean and std); it is
usable on small sets and can be slightly negative.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    >>> round(frechet_distance(a, a), 6)
    0.0
    >>> round(frechet_distance(a, a + torch.tensor([3.0, 0, 0, 0], dtype=torch.float64)), 6)   # |shift|^2
    9.0
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "FeatureExtractor",
    "KIDResult",
    "frechet_distance",
    "kernel_inception_distance",
    "ProbeFeatures",
    "ClipFeatures",
    "InceptionFeatures",
    "inception_status",
    "extract_features",
    "compare_feature_sets",
]

#: torch-fidelity's InceptionV3 weights (FID's network), looked up in ``<torch hub dir>/checkpoints/``.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
_INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps ``[B, 3, H, W]`` images in [-1, 1] to ``[B, num_features]`` features.

    Attributes:
        name: what runs (recorded next to every number), e.g. ``"toy-probe"``.
        num_features: the feature width D.
    """

    name: str
    num_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class _Passthrough(nn.Module):
    """What torchmetrics calls its ``inception``: returns the features it is given."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_features(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{what}: expected a feature set [N, D], got shape {tuple(t.shape)}")
    t = t.double()
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: the features contain NaN or inf")
    return t


def _pair(a, b, minimum: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_features(a, "first set"), _as_features(b, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two feature sets must have the same width D, got [N, {a.shape[1]}] and [M, {b.shape[1]}]")
    if len(a) < minimum or len(b) < minimum:
        raise ValueError(f"need at least {minimum} feature vectors in each set, got {len(a)} and {len(b)}")
    return a, b


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances, in float64,
    by torchmetrics' ``FrechetInceptionDistance`` (its ``compute``) on the given features. The true
    value is >= 0; rounding can give about -1e-15 for identical sets, so the result is clamped at 0.

    Raises:
        ValueError: not two 2-d sets of the same width with at least 2 rows each, or NaN/inf in them.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _pair(a, b)
    metric = FrechetInceptionDistance(feature=_Passthrough(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return max(0.0, float(metric.compute()))


@dataclass(frozen=True)
class KIDResult:
    """Kernel inception distance over ``subsets`` random subsets of ``subset_size`` from each set."""

    mean: float
    std: float
    subsets: int
    subset_size: int
    n_a: int
    n_b: int


def kernel_inception_distance(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    seed: int = 0,
) -> KIDResult:
    """KID (unbiased squared MMD, polynomial kernel ``(x.y / D + 1)^degree``) between two feature sets.

    torchmetrics' ``KernelInceptionDistance`` on the given features. ``subset_size`` is reduced to
    ``min(subset_size, N, M)`` so small sets work (with the whole set as the subset, every subset is
    the same and ``std`` is 0). The subsets are drawn from a generator seeded with ``seed`` (the global
    RNG is left as it was), so the result is reproducible.

    Raises:
        ValueError: fewer than 2 vectors in a set, different widths, NaN/inf, or bad ``subsets`` /
            ``subset_size`` / ``degree``.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _pair(a, b)
    for name, v in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    size = max(2, min(subset_size, len(a), len(b)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = KernelInceptionDistance(feature=_Passthrough(a.shape[1]), subsets=subsets, subset_size=size, degree=degree)
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return KIDResult(mean=float(mean), std=float(std), subsets=subsets, subset_size=size, n_a=len(a), n_b=len(b))


# --------------------------------------------------------------------------- feature extractors


class ProbeFeatures:
    """The toy-world attribute probe's features (``[B, 128]``; 64x64 toy faces in [-1, 1]).

    Args:
        probe: an :class:`~hspace.toyworld.probe.AttributeProbe`; default: the shipped one
            (:func:`~hspace.toyworld.probe.load_probe`, which raises ``ModelNotTrainedError`` if absent).
    """

    name = "toy-probe"

    def __init__(self, probe: Any = None):
        if probe is None:
            from ..toyworld.probe import load_probe

            probe = load_probe()
        self.probe = probe.eval()
        self.num_features = int(probe.config.feature_dim)
        self.image_size = int(probe.config.image_size)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.probe.eval()
        return self.probe.features(images.float())


class ClipFeatures:
    """Unit-length CLIP image embeddings of any :class:`~hspace.encoders.ImageTextEncoder` ("FD_CLIP")."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.name = f"clip:{getattr(encoder, 'name', type(encoder).__name__)}"
        with torch.no_grad():
            self.num_features = int(encoder.encode_image(torch.zeros(1, 3, 32, 32)).shape[-1])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.encoder.encode_image(images.float()).float(), dim=-1)


def _inception_path(weights: str | os.PathLike | None) -> Path:
    if weights is not None:
        return Path(weights).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def inception_status(weights: str | os.PathLike | None = None) -> tuple[bool, list[str]]:
    """Whether :class:`InceptionFeatures` can run here, without downloading anything.

    Checks that ``torch-fidelity`` is installed (torchmetrics' InceptionV3 needs it) and that the
    weights file exists (``weights``, or ``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``).

    Returns:
        ``(usable, problems)``: each missing piece and how to get it (empty if usable).
    """
    problems: list[str] = []
    if importlib.util.find_spec("torch_fidelity") is None:
        problems.append("the 'torch-fidelity' package is not installed "
                        "(pip install torch-fidelity; it needs a torchvision built for your torch)")
    path = _inception_path(weights)
    if not path.is_file():
        problems.append(
            f"no weights at {path} (download {_INCEPTION_URL} on a machine with network access and put it there, "
            "or pass its path)"
        )
    return (not problems, problems)


class InceptionFeatures(nn.Module):
    """InceptionV3 pool3 features (2048-d, FID's standard network) from local weights only.

    Images in [-1, 1] are quantised to uint8 (as saved images would be) and resized to 299x299
    inside the network, as torchmetrics / torch-fidelity do.

    Args:
        weights: the torch-fidelity weights file; default: the torch hub cache file.

    Raises:
        FileNotFoundError: the weights or ``torch-fidelity`` are missing (the message says how to get them).
    """

    name = "inception-v3-pool3"
    num_features = 2048

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        usable, problems = inception_status(weights)
        if not usable:
            raise FileNotFoundError("Inception features are not available: " + "; ".join(problems))
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=str(_inception_path(weights)))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        u8 = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(u8).reshape(len(images), -1).double()


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 64, progress: bool = False, desc: str = "features"
) -> torch.Tensor:
    """``extractor`` over ``images`` in batches (tqdm bar if ``progress``): ``[B, D]`` float64."""
    from .batching import map_batches

    parts = map_batches(lambda x: extractor(x).detach().double().reshape(len(x), -1), images, batch_size, progress, desc)
    return torch.cat(parts) if parts else torch.zeros(0, int(extractor.num_features), dtype=torch.float64)


def compare_feature_sets(
    a: torch.Tensor,
    b: torch.Tensor,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    paired: bool = False,
) -> dict[str, Any]:
    """FD and KID between two feature sets, as a JSON-ready dict
    ``{"fd", "kid_mean", "kid_std", "kid_subsets", "kid_subset_size", "n_a", "n_b"}``;
    ``{"skipped": reason}`` when a set has fewer than 2 vectors.

    With ``paired=True`` (row ``i`` of ``a`` is derived from row ``i`` of ``b``, e.g. an edit and its
    source) KID is not computed (``kid_mean`` None, ``kid_note`` says why): its cross term assumes
    independent sets and would pair each image with its own edit, biasing it downwards.
    """
    if len(a) < 2 or len(b) < 2:
        return {"skipped": f"FD and KID need at least 2 images in each set, got {len(a)} and {len(b)}",
                "n_a": int(len(a)), "n_b": int(len(b))}
    out: dict[str, Any] = {"fd": frechet_distance(a, b), "n_a": int(len(a)), "n_b": int(len(b))}
    if paired:
        out.update(kid_mean=None, kid_std=None,
                   kid_note="not computed for paired sets (each edit with its own source): KID assumes independent sets")
        return out
    kid = kernel_inception_distance(a, b, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    out.update(kid_mean=kid.mean, kid_std=kid.std, kid_subsets=kid.subsets, kid_subset_size=kid.subset_size)
    return out
