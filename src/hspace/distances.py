"""Pluggable perceptual distances between image batches (for editing-interval curves and evaluation).

The paper measures the editing interval with LPIPS (DESIGN.md 1.6). LPIPS needs an ImageNet-trained
trunk (AlexNet/VGG/SqueezeNet from torchvision) that is often absent offline, so the distance is a
:class:`Distance` protocol with two implementations:

* :class:`LPIPSDistance` -- real LPIPS from the ``lpips`` package. Usable only when the package imports
  (it needs ``torchvision``), its own linear-layer weights are present (they ship inside the package)
  **and** the trunk's ImageNet weights are already on disk. Nothing is ever downloaded: the trunk is
  built randomly initialised and its weights are loaded from the local file.
* :class:`FallbackDistance` -- a deterministic, weight-free stand-in (``name = "fallback-msgrad-v1"``).
  Its values are **not LPIPS**. It imitates LPIPS's shape (unit-normalised feature vectors, squared
  difference, spatial mean, averaged over scales) with fixed gradient filters, and a saturating map
  fitted so that its response to added Gaussian noise roughly follows the official LPIPS
  quality-deficiency table (0 .. 1.4).
  The paper's thresholds 0.33 (t_edit) and 1.2 (t_boost) are calibrated for LPIPS, so intervals chosen
  with the fallback are approximate.

:func:`get_distance` picks one; the returned object's ``name`` always says which one runs.

Example:
    >>> import torch
    >>> d = get_distance("fallback")
    >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> d(x, x).tolist()
    [0.0, 0.0]
    >>> d.name
    'fallback-msgrad-v1'
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = [
    "Distance",
    "DistanceUnavailableError",
    "FallbackDistance",
    "LPIPSDistance",
    "LPIPS_TRUNK_FILES",
    "lpips_status",
    "get_distance",
]

logger = logging.getLogger(__name__)

#: torchvision checkpoint file names of the LPIPS trunks (looked up in ``<torch hub dir>/checkpoints/``).
LPIPS_TRUNK_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TRUNK_URL = "https://download.pytorch.org/models/{}"


class DistanceUnavailableError(RuntimeError):
    """A requested distance cannot run here (missing package or weights); the message says what to install."""


@runtime_checkable
class Distance(Protocol):
    """A perceptual distance between two image batches.

    Attributes:
        name: what runs, e.g. ``"lpips-alex"`` or ``"fallback-msgrad-v1"``; recorded next to every result.
    """

    name: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image: ``x``, ``y`` ``[B, 3, H, W]`` (nominally in [-1, 1]) -> ``[B]``."""
        ...


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"expected two tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"the two image batches must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


# --------------------------------------------------------------------------------------------------
# Fallback: multi-scale normalised-gradient distance (no weights)
# --------------------------------------------------------------------------------------------------

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


class FallbackDistance:
    """Weight-free, deterministic stand-in for LPIPS. **Its values are not LPIPS.**

    For each scale s of an average-pooling pyramid (full size, /2, /4, ... while the short side is
    >= ``min_size``, at most ``n_scales`` levels):

    1. convert RGB to opponent channels (luminance, red-green, yellow-blue);
    2. features = Sobel x/y gradients of the three channels (6 channels), plus the opponent colours
       themselves at the coarsest scale, plus a constant channel ``contrast_floor`` (so that flat
       regions map to the same vector and tiny differences there count little);
    3. normalise the feature vector at each pixel to unit length (as LPIPS does per layer);
    4. d_s = spatial mean of the squared difference of the unit vectors (0..4).

    With r = mean_s d_s, the result is ``saturation * (1 - exp(-r / knee))``: 0 for identical images,
    symmetric, differentiable, monotone in r and bounded by ``saturation`` (1.4, where LPIPS-alex
    saturates in the official Asyrp tables). ``knee`` (0.19) was fitted so that, on smooth synthetic
    256x256 images, the distance between x0 and the forward-noised x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) z
    follows the official CelebA-HQ *quality-deficiency* table (t = 50 / 100 / 200 / 300 / 999:
    about 0.57 / 0.98 / 1.26 / 1.35 / 1.40 against LPIPS 0.60 / 0.98 / 1.25 / 1.32 / 1.39). Only that noise
    response is calibrated: blur (the *editing-strength* curve compares x0 with a blurry P_t) reads
    higher than LPIPS, and smaller images read higher too. Thresholds tuned for LPIPS (0.33, 1.2) therefore
    give approximate intervals with this distance.

    Args:
        n_scales: most pyramid levels (default 5).
        min_size: smallest short side of a level, in pixels (default 8).
        contrast_floor: value of the constant channel (default 0.05, in units of [-1, 1] per pixel).
        saturation: the upper bound (default 1.4).
        knee: the raw mean squared unit-vector difference at which 63% of ``saturation`` is reached
            (default 0.19).

    Example:
        >>> import torch
        >>> d = FallbackDistance()
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        >>> bool(d(x, x + 0.5 * torch.randn(1, 3, 32, 32, generator=g)) > 0)
        True
    """

    name = "fallback-msgrad-v1"
    higher_is_better = False

    def __init__(
        self, n_scales: int = 5, min_size: int = 8, contrast_floor: float = 0.05, saturation: float = 1.4, knee: float = 0.19
    ) -> None:
        if not isinstance(n_scales, int) or n_scales < 1:
            raise ValueError(f"n_scales must be an integer >= 1, got {n_scales!r}")
        if not isinstance(min_size, int) or min_size < 3:
            raise ValueError(f"min_size must be an integer >= 3, got {min_size!r}")
        if contrast_floor <= 0:
            raise ValueError(f"contrast_floor must be > 0, got {contrast_floor!r}")
        if saturation <= 0 or knee <= 0:
            raise ValueError(f"saturation and knee must be > 0, got {saturation!r} and {knee!r}")
        self.n_scales = n_scales
        self.min_size = min_size
        self.contrast_floor = float(contrast_floor)
        self.saturation = float(saturation)
        self.knee = float(knee)

    def __repr__(self) -> str:
        return (
            f"FallbackDistance(n_scales={self.n_scales}, min_size={self.min_size}, "
            f"contrast_floor={self.contrast_floor}, saturation={self.saturation}, knee={self.knee})"
        )

    @staticmethod
    def _opponent(x: torch.Tensor) -> torch.Tensor:
        r, g, b = x.unbind(1)
        return torch.stack([(r + g + b) / 3.0, r - g, (r + g) / 2.0 - b], dim=1)

    def _features(self, x: torch.Tensor, coarsest: bool) -> torch.Tensor:
        c = x.shape[1]
        kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
        kernel = torch.stack([kx, kx.t()]).unsqueeze(1).repeat(c, 1, 1, 1)  # [2c, 1, 3, 3]
        grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
        parts = [grads]
        if coarsest:
            parts.append(x)
        parts.append(torch.full_like(x[:, :1], self.contrast_floor))
        f = torch.cat(parts, dim=1)
        return f / f.norm(dim=1, keepdim=True)  # never 0: the constant channel is > 0

    def _levels(self, h: int, w: int) -> int:
        n = 1
        while n < self.n_scales and min(h, w) // 2 ** n >= self.min_size:
            n += 1
        return n

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image, ``[B]``; inputs ``[B, 3, H, W]`` of equal shape (not clipped)."""
        _check_pair(x, y)
        dtype = torch.promote_types(x.dtype, torch.float32)
        a, b = self._opponent(x.to(dtype)), self._opponent(y.to(dtype))
        n = self._levels(a.shape[-2], a.shape[-1])
        total = torch.zeros(a.shape[0], dtype=dtype, device=a.device)
        for level in range(n):
            if level > 0:
                a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
            last = level == n - 1
            fa, fb = self._features(a, last), self._features(b, last)
            total = total + ((fa - fb) ** 2).sum(dim=1).mean(dim=(1, 2))
        return self.saturation * -torch.expm1(-(total / n) / self.knee)


# --------------------------------------------------------------------------------------------------
# LPIPS (optional, never downloads)
# --------------------------------------------------------------------------------------------------


def _trunk_path(net: str, trunk_weights: str | os.PathLike | None) -> Path:
    if trunk_weights is not None:
        return Path(trunk_weights).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_TRUNK_FILES[net]


def _check_net(net: str) -> None:
    if net not in LPIPS_TRUNK_FILES:
        raise ValueError(f"net must be one of {tuple(LPIPS_TRUNK_FILES)}, got {net!r}")


def lpips_status(net: str = "alex", trunk_weights: str | os.PathLike | None = None) -> tuple[bool, list[str]]:
    """Whether :class:`LPIPSDistance` can run here, without downloading anything.

    Checks, in order: the ``lpips`` package is installed, its linear-layer weights
    ``lpips/weights/v0.1/<net>.pth`` exist, the trunk's ImageNet weights exist (``trunk_weights``, or
    ``<torch hub dir>/checkpoints/<file>`` as torchvision would cache them), and ``import lpips``
    succeeds (it needs ``torchvision``).

    Returns:
        ``(usable, problems)``: ``problems`` lists each missing piece and how to get it (empty if usable).
    """
    _check_net(net)
    problems: list[str] = []
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        problems.append("the 'lpips' package is not installed (pip install lpips; it needs a torchvision build matching your torch)")
    else:
        lin = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
        if not lin.is_file():
            problems.append(f"the LPIPS linear-layer weights {lin} are missing (reinstall lpips: pip install --force-reinstall lpips)")
    trunk = _trunk_path(net, trunk_weights)
    if not trunk.is_file():
        fname = LPIPS_TRUNK_FILES[net]
        problems.append(
            f"the ImageNet trunk weights for net={net!r} are not at {trunk} (download {_TRUNK_URL.format(fname)} "
            f"on a machine with network access and put it there, or pass trunk_weights=<path to {fname}>)"
        )
    if not problems:
        try:
            importlib.import_module("lpips")
        except Exception as err:  # e.g. torchvision missing or built for another torch
            problems.append(f"'import lpips' failed ({type(err).__name__}: {err}); install a torchvision that matches your torch")
    return (not problems, problems)


class LPIPSDistance:
    """LPIPS (Zhang et al. 2018) through the ``lpips`` package, built without any download.

    The trunk is constructed randomly initialised (``pnet_rand=True``) and its ImageNet weights are
    loaded from ``trunk_weights`` (default: torchvision's cache file in ``<torch hub dir>/checkpoints/``);
    the linear layers come from the package itself. The network is frozen and stays in eval mode.

    Args:
        net: trunk, one of ``"alex"`` (the paper's choice), ``"vgg"``, ``"squeeze"``.
        trunk_weights: path of the torchvision checkpoint of the trunk; default: the hub cache file.
        device: where to run (default: CPU; moved to the input's device on first use).

    Raises:
        DistanceUnavailableError: the package, its weights or the trunk weights are missing; the message
            lists each missing piece and how to get it.
    """

    higher_is_better = False

    def __init__(self, net: Literal["alex", "vgg", "squeeze"] = "alex", trunk_weights: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> None:
        _check_net(net)
        usable, problems = lpips_status(net, trunk_weights)
        if not usable:
            raise DistanceUnavailableError(f"LPIPS (net={net!r}) is not usable here: " + "; ".join(problems))
        import lpips  # noqa: PLC0415 -- optional dependency, checked above

        self.net = net
        self.name = f"lpips-{net}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation warning about `pretrained`
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(_trunk_path(net, trunk_weights), map_location="cpu", weights_only=True)
        _load_trunk(model.net, state, _trunk_path(net, trunk_weights))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model.to(device)

    def __repr__(self) -> str:
        return f"LPIPSDistance(net={self.net!r})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS per image, ``[B]``; inputs ``[B, 3, H, W]`` in [-1, 1] (passed as they are)."""
        _check_pair(x, y)
        p = next(self._model.parameters())
        if p.device != x.device:
            self._model = self._model.to(x.device)
        self._model.eval()
        out = self._model(x.to(p.dtype), y.to(p.dtype))
        return out.reshape(x.shape[0])


def _load_trunk(trunk: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load torchvision ``features.<i>.*`` weights into lpips' ``slice<k>.<i>.*`` modules, strictly."""
    target = trunk.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key in target:
        _, idx, param = key.split(".", 2)  # slice<k>.<i>.<param>
        src = f"features.{idx}.{param}"
        if src not in state:
            raise DistanceUnavailableError(f"{path} has no tensor {src!r} needed for the LPIPS trunk; is it the right torchvision checkpoint?")
        if state[src].shape != target[key].shape:
            raise DistanceUnavailableError(
                f"{path}: {src!r} has shape {tuple(state[src].shape)}, the LPIPS trunk expects {tuple(target[key].shape)}"
            )
        mapped[key] = state[src]
    trunk.load_state_dict(mapped, strict=True)


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------

_NAMES = ("auto", "lpips", "fallback")


def get_distance(name: str = "auto", net: str = "alex", trunk_weights: str | os.PathLike | None = None) -> Distance:
    """Build a distance by name.

    Args:
        name: ``"lpips"`` (raise if unusable), ``"fallback"`` (:class:`FallbackDistance`), or ``"auto"``:
            LPIPS when :func:`lpips_status` says it is usable, else the fallback with a ``UserWarning``
            (and a log line) that states which one runs and why. ``"lpips-alex"`` etc. also work.
        net: LPIPS trunk for ``"lpips"``/``"auto"``.
        trunk_weights: explicit path of the trunk weights (see :class:`LPIPSDistance`).

    Returns:
        A :class:`Distance`; its ``name`` says which implementation runs.

    Raises:
        ValueError: unknown ``name``.
        DistanceUnavailableError: ``name="lpips"`` and LPIPS cannot run here.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if isinstance(key, str) and key.startswith("lpips-"):
        key, net = "lpips", key.split("-", 1)[1]
    if key == "fallback-msgrad-v1":
        key = "fallback"
    if key not in _NAMES:
        raise ValueError(f"distance must be one of {_NAMES} (or 'lpips-<net>'), got {name!r}")
    if key == "fallback":
        return FallbackDistance()
    if key == "lpips":
        return LPIPSDistance(net=net, trunk_weights=trunk_weights)
    usable, problems = lpips_status(net, trunk_weights)
    if usable:
        try:
            d = LPIPSDistance(net=net, trunk_weights=trunk_weights)
            logger.info("distance: using %s", d.name)
            return d
        except Exception as err:  # a broken checkpoint etc.: fall back, but say so
            problems = [f"building LPIPS failed ({type(err).__name__}: {err})"]
    msg = (
        f"LPIPS is not available ({'; '.join(problems)}). Using {FallbackDistance.name!r} instead: its values "
        "are NOT LPIPS, and the paper's thresholds (0.33, 1.2) are calibrated for LPIPS."
    )
    warnings.warn(msg, UserWarning, stacklevel=2)
    logger.warning(msg)
    return FallbackDistance()
