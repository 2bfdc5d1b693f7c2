"""Resolve a ``--model`` string to a backbone: a built-in name, a local folder, or a hub id.

Accepted forms:

* a built-in name (see :func:`list_models`), e.g. ``"tiny-random"``;
* a named real checkpoint such as ``"adm:p2-celebahq-256"`` or ``"ddpm:celebahq-256"``
  (see :mod:`.checkpoints`), optionally with its weights file: ``"adm:p2-celebahq-256=/data/celebahq_p2.pt"``;
* a local folder in diffusers layout: a ``UNet2DModel`` folder (``config.json`` +
  ``diffusion_pytorch_model.safetensors``, optionally ``scheduler_config.json``), or a
  pipeline folder (``model_index.json`` with ``unet/`` and ``scheduler/`` sub-folders);
* a Hugging Face hub id such as ``"google/ddpm-ema-celebahq-256"``, read from the local
  hub cache (``HF_HOME``), or downloaded when the hub is reachable and ``HF_HUB_OFFLINE``
  is not set.

The backbone id recorded in direction files is the built-in name, the hub id, or the
folder's absolute path.

Example:
    >>> from hspace.backbones.registry import load_backbone
    >>> load_backbone("tiny-random").h_shape
    (64, 8, 8)
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import UNet2DModel

from .base import Backbone
from .diffusers_unet import DiffusersUNetBackbone

__all__ = [
    "BUILTIN_MODELS",
    "ModelNotAvailableError",
    "register_builtin",
    "list_models",
    "load_backbone",
    "resolve_device",
    "load_diffusers_folder",
    "tiny_random_unet",
]

logger = logging.getLogger(__name__)

#: Built-in models: name -> (one-line description, factory). A factory takes no arguments
#: and returns a :class:`~hspace.backbones.base.Backbone` on the CPU in float32.
BUILTIN_MODELS: dict[str, tuple[str, Callable[[], Backbone]]] = {}

#: Modules imported on first look-up that register more built-in models (e.g. the trained
#: toy models). Add a module path here when it calls :func:`register_builtin` at import.
_PROVIDER_MODULES: tuple[str, ...] = ("hspace.toyworld.models",)
_providers_loaded = False

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")

#: The files a hub repository must provide (flat UNet layout), in the words users see.
HUB_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json")

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class ModelNotAvailableError(RuntimeError):
    """A hub model is neither in the local cache nor downloadable; the message says how to get it."""


def register_builtin(
    name: str, description: str, factory: Callable[[], Backbone], *, replace: bool = False
) -> None:
    """Register a built-in model under ``name``.

    Args:
        name: what users pass to ``--model``; no ``/`` (that would read as a hub id or path).
        description: one line for ``hspace info`` and error messages; say plainly if the
            weights are random.
        factory: builds the backbone (CPU, float32); :func:`load_backbone` sets its
            ``backbone_id`` to ``name`` and moves it to the requested device/dtype.
        replace: allow re-registering an existing name.

    Raises:
        ValueError: bad name, or the name is taken and ``replace`` is False.
    """
    if not name or "/" in name or "\\" in name or name != name.strip():
        raise ValueError(f"built-in model name must be non-empty without slashes or spaces at the ends, got {name!r}")
    if name in BUILTIN_MODELS and not replace:
        raise ValueError(f"built-in model {name!r} is already registered; pass replace=True to replace it")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    BUILTIN_MODELS[name] = (description, factory)


def _load_providers() -> None:
    global _providers_loaded
    if _providers_loaded:
        return
    _providers_loaded = True
    import importlib

    for module in _PROVIDER_MODULES:
        importlib.import_module(module)


def list_models() -> dict[str, str]:
    """Built-in and named real models (``adm:*``, ``ddpm:*``, see :mod:`.checkpoints`) with one-line descriptions."""
    _load_providers()
    from .checkpoints import list_named

    return {**{name: desc for name, (desc, _) in BUILTIN_MODELS.items()}, **list_named()}


#: Prefixes of the named real models of :mod:`.checkpoints` (``NAME`` or ``NAME=PATH``).
_NAMED_PREFIXES = ("adm:", "ddpm:")


# --------------------------------------------------------------------------- built-ins

TINY_RANDOM_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    attention_head_dim=16,
)


def tiny_random_unet(seed: int = 0) -> UNet2DModel:
    """The 'tiny-random' UNet2DModel: 32x32, widths 32/64/64, random weights from ``seed``.

    Weights are drawn from a ``torch.Generator`` (not the global RNG, whose state is left
    untouched), so the model is identical on every call and machine: matrices and kernels
    ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases N(0, 0.05^2).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(**TINY_RANDOM_CONFIG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    return unet.eval()


def _tiny_random() -> Backbone:
    return DiffusersUNetBackbone(tiny_random_unet(0), alphas_cumprod=None, backbone_id="tiny-random")


register_builtin(
    "tiny-random",
    "32x32 diffusers UNet2DModel with RANDOM weights (seed 0), h [64, 8, 8]; outputs noise, "
    "for tests and smoke runs only",
    _tiny_random,
)


# --------------------------------------------------------------------------- local folders


def _listing(folder: Path, limit: int = 8) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "unreadable"
    if not names:
        return "it is empty"
    return "found " + ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


_EXPECTED_LAYOUT = (
    "expected a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, "
    "optionally scheduler_config.json) or a pipeline folder (model_index.json with unet/ and scheduler/)"
)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _scheduler_config(folder: Path, unet_dir: Path) -> tuple[dict | None, Path | None]:
    candidates = [
        folder / "scheduler" / "scheduler_config.json",
        folder / "scheduler_config.json",
        unet_dir / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
    ]
    for c in candidates:
        if c.is_file():
            return _read_json(c), c
    return None, None


def load_diffusers_folder(folder: Path | str, backbone_id: str | None = None) -> DiffusersUNetBackbone:
    """Load a local diffusers ``UNet2DModel`` folder (UNet or pipeline layout) on the CPU in float32.

    Args:
        folder: the folder (see the module docstring for the layouts).
        backbone_id: id to record; defaults to the folder's absolute path.

    Returns:
        The backbone, with ``alphas_cumprod`` from the folder's scheduler config (the
        paper's linear schedule, with a logged warning, when there is none).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder is not a diffusers UNet2DModel (the message names the folder,
            what was expected and what was found).
        RuntimeError: diffusers failed to load the weights (message names the folder and why).
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"model path {folder} is a file; {_EXPECTED_LAYOUT}")
    folder = folder.resolve()
    if (folder / "unet" / "config.json").is_file():
        unet_dir = folder / "unet"
    elif (folder / "config.json").is_file():
        unet_dir = folder
    else:
        hint = ""
        if any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            hint = " (.pt/.pth checkpoints such as guided-diffusion ones are not diffusers folders)"
        raise ValueError(f"{folder} is not a diffusers UNet2DModel: {_EXPECTED_LAYOUT}; {_listing(folder)}{hint}")
    config = _read_json(unet_dir / "config.json")
    class_name = config.get("_class_name")
    if class_name is None and not {"block_out_channels", "down_block_types"} <= set(config):
        raise ValueError(
            f"{unet_dir / 'config.json'} does not describe a UNet2DModel (no _class_name, "
            f"keys {sorted(config)[:8]}); {_EXPECTED_LAYOUT}"
        )
    if class_name is not None and class_name != "UNet2DModel":
        raise ValueError(
            f"{unet_dir} holds a diffusers {class_name}, but hspace needs an unconditional pixel-space "
            f"UNet2DModel; {_EXPECTED_LAYOUT}"
        )
    weights = [n for n in _WEIGHT_NAMES if (unet_dir / n).is_file()]
    if not weights:
        raise ValueError(
            f"{unet_dir} has config.json but no weights: expected {' or '.join(_WEIGHT_NAMES)}; {_listing(unet_dir)}"
        )
    use_safetensors = weights[0].endswith(".safetensors")
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=use_safetensors, local_files_only=True,
                                           low_cpu_mem_usage=False)  # small U-Nets; avoids the accelerate warning
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise RuntimeError(f"could not load the UNet2DModel in {unet_dir}: {type(e).__name__}: {e}") from e
    if unet.dtype != torch.float32:  # e.g. weights saved in float16: compute the adapter's default in float32
        unet = unet.to(torch.float32)
    sched, _ = _scheduler_config(folder, unet_dir)
    if sched is None:
        logger.warning(
            "%s: no scheduler_config.json found; using the paper's linear beta schedule (1e-4..0.02, T=1000)", folder
        )
    return DiffusersUNetBackbone(
        unet.eval(),
        backbone_id=backbone_id or str(folder),
        schedule_config=sched,
    )


# --------------------------------------------------------------------------- hub


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir() -> Path:
    """The hub cache, read from the environment at call time (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def _hub_patterns(weights: str) -> list[str]:
    return [
        "config.json",
        "model_index.json",
        "scheduler_config.json",
        weights,
        "unet/config.json",
        f"unet/{weights}",
        "scheduler/scheduler_config.json",
    ]


def _not_available(repo_id: str, why: str) -> ModelNotAvailableError:
    home = os.environ.get("HF_HOME") or str(_hub_cache_dir().parent)
    local = Path(repo_id)
    also = f" (no local folder {repo_id} exists either)" if not local.exists() else ""
    return ModelNotAvailableError(
        f"model {repo_id!r} is not available: {why}{also}.\n"
        f"Needed files: {', '.join(HUB_FILES)}.\n"
        f"Either run `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) on a machine with "
        f"internet and copy its Hugging Face cache to HF_HOME here ({home}),\n"
        f"or download the repository folder and pass its local path: --model /path/to/folder"
    )


def _short(e: BaseException) -> str:
    """``Type: first line`` of the innermost cause (e.g. the ConnectError under the hub's wrapper)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def _has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() or (folder / "unet" / n).is_file() for n in _WEIGHT_NAMES)


def _load_hub(repo_id: str) -> DiffusersUNetBackbone:
    from huggingface_hub import snapshot_download

    cache = _hub_cache_dir()
    patterns = _hub_patterns("diffusion_pytorch_model.safetensors") + _hub_patterns("diffusion_pytorch_model.bin")
    folder: Path | None = None
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - any cache miss just means "not cached"
        logger.debug("%s not in the hub cache %s: %s", repo_id, cache, _short(e))
    if folder is None or not _has_weights(folder):
        if _hub_offline():
            raise _not_available(repo_id, f"it is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")
        for weights in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            try:
                folder = Path(
                    snapshot_download(repo_id, cache_dir=cache, allow_patterns=_hub_patterns(weights), etag_timeout=10)
                )
            except Exception as e:  # noqa: BLE001 - network and hub errors all mean "could not download"
                from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

                if isinstance(e, (RepositoryNotFoundError, GatedRepoError)):
                    raise _not_available(
                        repo_id, "the hub has no such repository, or it is private/gated (log in with `hf auth login`)"
                    ) from e
                raise _not_available(
                    repo_id, f"it is not in the Hugging Face cache ({cache}) and the download failed ({_short(e)})"
                ) from e
            if _has_weights(folder):
                break
        if folder is None or not _has_weights(folder):
            raise _not_available(repo_id, "the repository has no diffusion_pytorch_model weights for a UNet2DModel")
    return load_diffusers_folder(folder, backbone_id=repo_id)


# --------------------------------------------------------------------------- entry point


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype.lower() not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        dtype = names[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a :class:`torch.device` that is available here.

    Raises:
        ValueError: a malformed name, or CUDA / MPS asked for where there is none.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be like 'cpu', 'cuda', 'cuda:1' or 'mps', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here; use 'cpu'")
    return dev


def _accepted_forms() -> str:
    names = ", ".join(list_models()) or "none"
    return (
        f"--model accepts a built-in or named model ({names}; a named one may add =/path/to/weights); a local folder with a diffusers UNet2DModel "
        "(config.json + diffusion_pytorch_model.safetensors) or pipeline (model_index.json, unet/, scheduler/); "
        "or a Hugging Face hub id such as google/ddpm-ema-celebahq-256"
    )


def load_backbone(
    model: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32
) -> Backbone:
    """Load the backbone named by ``model`` (a built-in name, a local folder, or a hub id).

    Args:
        model: see the module docstring for the accepted forms. An existing local folder
            wins over a hub id of the same spelling.
        device: where to put the model.
        dtype: the U-Net's parameter dtype (``alphas_cumprod`` stays float32). float32 is
            the default; prefer bf16 autocast over bf16 weights for speed.

    Returns:
        The backbone (a :class:`DiffusersUNetBackbone` for every form so far), in eval mode
        with gradients off.

    Raises:
        ValueError: unknown name / malformed string (the message lists the built-in names and
            accepted forms), a folder that is not a diffusers UNet2DModel, or a bad
            ``device``/``dtype``.
        FileNotFoundError: an explicit path (absolute, or starting with ``.`` or ``~``) does
            not exist.
        ModelNotAvailableError: a hub id that is neither cached nor downloadable.
            Also a named real model (``adm:*``, ``ddpm:*``) whose weights file is not found
            (the message says which file, where to get it and where to put it).
    """
    dtype = _resolve_dtype(dtype)
    dev = resolve_device(device)
    name = str(model).strip() if not isinstance(model, Path) else str(model)
    if not name:
        raise ValueError(f"model is empty; {_accepted_forms()}")
    _load_providers()
    if not isinstance(model, Path) and name in BUILTIN_MODELS:
        backbone = BUILTIN_MODELS[name][1]()
        backbone.backbone_id = name
    elif not isinstance(model, Path) and name.lower().startswith(_NAMED_PREFIXES):
        from .checkpoints import load_named

        backbone = load_named(name)  # "NAME" or "NAME=/path/to/weights"
    else:
        path = Path(name).expanduser()
        if path.exists():
            backbone = load_diffusers_folder(path)
        elif isinstance(model, Path) or name.startswith((".", "/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
            raise FileNotFoundError(f"model folder not found: {name}")
        elif _HUB_ID.match(name):
            backbone = _load_hub(name)
        else:
            raise ValueError(f"unknown model {name!r}; {_accepted_forms()}")
    if isinstance(backbone, DiffusersUNetBackbone):
        if backbone.unet.dtype != dtype:  # the schedule buffer stays float32
            backbone.unet.to(dtype=dtype)
        backbone.to(dev)
    else:
        backbone.to(dev)
        if dtype != torch.float32:
            backbone.to(dtype=dtype)
    return backbone
