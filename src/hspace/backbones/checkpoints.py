"""Named real checkpoints: the pretrained 256 px models Asyrp was run on, and how to get them.

hspace never downloads these. Each entry says which file is needed, where its authors
publish it, and where to put it. :func:`load_named` then finds it in this order:

1. the ``weights`` argument (or ``NAME=PATH`` in a ``--model`` string);
2. ``$HSPACE_WEIGHTS/<file>``;
3. ``<cache root>/weights/<file>`` (``$HSPACE_CACHE/weights``, default ``~/.cache/hspace/weights``).

Two families:

* ``adm:*`` — guided-diffusion ``UNetModel`` checkpoints (P2-weighting, iDDPM, OpenAI ADM),
  loaded by :mod:`hspace.backbones.adm`;
* ``ddpm:*`` — the original DDPM 'simple' U-Net checkpoints (as converted to PyTorch and
  published by SDEdit), loaded by :mod:`hspace.backbones.ddpm_simple`.

All of them were trained with the linear beta schedule 1e-4..0.02 over T = 1000 steps.
:func:`describe_named` works without any weights (the architecture is built on PyTorch's
``meta`` device).

Example:
    >>> from hspace.backbones.checkpoints import describe_named
    >>> describe_named("adm:p2-celebahq-256")["h_shape"]
    (512, 8, 8)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .adm import ADMConfig, build_adm_unet, count_parameters, load_adm_checkpoint, read_state_dict
from .base import Backbone

__all__ = [
    "NamedModel",
    "NAMED_MODELS",
    "LINEAR_SCHEDULE",
    "list_named",
    "get_named",
    "describe_named",
    "find_weights",
    "weights_dirs",
    "load_named",
    "load_weights_file",
    "split_model_spec",
]

#: The training schedule of every model below (diffusers scheduler-config fields).
LINEAR_SCHEDULE: dict[str, Any] = {
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "num_train_timesteps": 1000,
}

_P2_ARGS = dict(
    image_size=256,
    in_channels=3,
    model_channels=128,
    out_channels=6,
    num_res_blocks=1,
    attention_resolutions=(16,),
    dropout=0.0,
    channel_mult=(1, 1, 2, 2, 4, 4),
    num_classes=None,
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=False,
)

#: P2-weighting / iDDPM 256 px faces and animals (CelebA-HQ, FFHQ, MetFaces, AFHQ-dog).
P2_256 = ADMConfig(**_P2_ARGS)

#: OpenAI's unconditional ImageNet 256 model (``256x256_diffusion_uncond.pt``).
IMAGENET_256_UNCOND = ADMConfig(
    **{
        **_P2_ARGS,
        "model_channels": 256,
        "num_res_blocks": 2,
        "attention_resolutions": (8, 16, 32),
    }
)

_P2_SOURCE = (
    "the P2-weighting release (Choi et al., CVPR 2022): https://github.com/jychoi118/P2-weighting, "
    "README section on pretrained models (Google-Drive links); also linked from the Asyrp README "
    "(https://github.com/kwonminki/Asyrp_official)"
)
_SDEDIT_BUCKET = "https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/"


@dataclass(frozen=True)
class NamedModel:
    """One named real checkpoint.

    Attributes:
        name: what users pass to ``--model`` (``family:model``).
        family: ``"adm"`` (guided-diffusion U-Net) or ``"ddpm"`` (DDPM 'simple' U-Net).
        description: one line for listings.
        config: the architecture: an :class:`~hspace.backbones.adm.ADMConfig` for ``adm``, or
            the name of a config constant in :mod:`hspace.backbones.ddpm_simple` for ``ddpm``.
        weights_file: the file name the authors publish (and hspace looks for).
        source: where users get the file (text; hspace never downloads it).
        interval_preset: the official LPIPS table for t_edit / t_boost (see
            :mod:`hspace.interval`), or None when there is none (measure it).
        schedule: the training schedule (diffusers scheduler-config fields).
        expected: documented facts (h_shape, temb_dim, image_size, num_params) used when
            the family's module is not importable, and checked by the tests.
        label_emb_optional: the architecture may carry an unused class embedding
            (``label_emb``); load it if the file has one, accept its absence otherwise.
    """

    name: str
    family: Literal["adm", "ddpm"]
    description: str
    config: Any
    weights_file: str
    source: str
    interval_preset: str | None
    schedule: dict[str, Any] = field(default_factory=lambda: dict(LINEAR_SCHEDULE))
    expected: dict[str, Any] = field(default_factory=dict)
    label_emb_optional: bool = False


_P2_EXPECTED = {"h_shape": (512, 8, 8), "temb_dim": 512, "image_size": 256, "num_params": 93_563_910}
_DDPM_EXPECTED = {"h_shape": (512, 8, 8), "temb_dim": 512, "image_size": 256, "num_params": 113_673_219}


def _p2(name: str, what: str, file: str, preset: str, source: str = _P2_SOURCE, arch: str = "P2-weighting ADM") -> NamedModel:
    return NamedModel(
        name=name,
        family="adm",
        description=f"{what} 256x256, {arch} U-Net (learned sigma), h [512, 8, 8]; needs {file}",
        config=P2_256,
        weights_file=file,
        source=source,
        interval_preset=preset,
        expected=dict(_P2_EXPECTED),
    )


def _ddpm(name: str, what: str, config_name: str, file: str, preset: str) -> NamedModel:
    return NamedModel(
        name=name,
        family="ddpm",
        description=f"{what} 256x256, original DDPM U-Net, h [512, 8, 8]; needs {file}",
        config=config_name,
        weights_file=file,
        source=(
            f"{_SDEDIT_BUCKET}{file} (the PyTorch conversion published by SDEdit, "
            "https://github.com/ermongroup/SDEdit, and used by DiffusionCLIP and Asyrp)"
        ),
        interval_preset=preset,
        expected=dict(_DDPM_EXPECTED),
    )


#: Every named model, by name.
NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        _p2("adm:p2-celebahq-256", "CelebA-HQ", "celebahq_p2.pt", "celeba"),
        _p2("adm:p2-ffhq-256", "FFHQ", "ffhq_p2.pt", "celeba"),
        _p2("adm:p2-metfaces-256", "MetFaces", "metface_p2.pt", "metface"),
        _p2("adm:iddpm-afhqdog-256", "AFHQ-dog", "afhqdog_p2.pt", "afhq", arch="iDDPM/P2-weighting"),
        _p2(
            "adm:iddpm-ffhq-256",
            "FFHQ",
            "ffhq_10m.pt",
            "celeba",
            source=(
                "the ILVR release (Choi et al., ICCV 2021): https://github.com/jychoi118/ilvr_adm (Google-Drive link "
                "in its README; also redistributed by https://github.com/DPS2022/diffusion-posterior-sampling); "
                "the FFHQ model of the Asyrp code"
            ),
            arch="iDDPM",
        ),
        NamedModel(
            name="adm:imagenet-256-uncond",
            family="adm",
            description=(
                "ImageNet 256x256 unconditional, OpenAI ADM U-Net (learned sigma), h [1024, 8, 8]; "
                "needs 256x256_diffusion_uncond.pt"
            ),
            config=IMAGENET_256_UNCOND,
            weights_file="256x256_diffusion_uncond.pt",
            source=(
                "OpenAI guided-diffusion (https://github.com/openai/guided-diffusion, README): "
                "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
            ),
            interval_preset=None,
            expected={"h_shape": (1024, 8, 8), "temb_dim": 1024, "image_size": 256, "num_params": 552_814_086},
            label_emb_optional=True,
        ),
        _ddpm("ddpm:celebahq-256", "CelebA-HQ", "DDPM_CELEBAHQ_256", "celeba_hq.ckpt", "celeba"),
        _ddpm("ddpm:church-256", "LSUN church outdoor", "DDPM_CHURCH_256", "church_outdoor.ckpt", "church"),
        _ddpm("ddpm:bedroom-256", "LSUN bedroom", "DDPM_BEDROOM_256", "bedroom.ckpt", "bedroom"),
    )
}


def list_named() -> dict[str, str]:
    """Named real models and their one-line descriptions."""
    return {name: m.description for name, m in NAMED_MODELS.items()}


def get_named(name: str) -> NamedModel:
    """The entry for ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)}")
    return NAMED_MODELS[name]


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"NAME=PATH"`` into ``(NAME, PATH)``; a bare name gives ``(NAME, None)``."""
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if sep and not path:
        raise ValueError(f"{spec!r}: nothing after '='; write NAME=/path/to/weights")
    return name, (path or None)


# --------------------------------------------------------------------------- architecture


def _ddpm_module() -> Any:
    return importlib.import_module(".ddpm_simple", __package__)


def _get(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def _ddpm_facts(config: Any) -> dict[str, Any]:
    """h shape / temb width / image size of a DDPM 'simple' config (read from its fields)."""
    h_shape, temb = _get(config, "h_shape"), _get(config, "temb_ch", "temb_dim")
    size = _get(config, "resolution", "image_size")
    if h_shape is not None and temb is not None and size is not None:
        return {"h_shape": tuple(int(v) for v in h_shape), "temb_dim": int(temb), "image_size": int(size)}
    ch = _get(config, "ch", "model_channels")
    mult = _get(config, "ch_mult", "channel_mult")
    out: dict[str, Any] = {}
    if ch and mult and size:
        side = int(size) // 2 ** (len(mult) - 1)
        out = {"h_shape": (int(ch) * int(mult[-1]), side, side), "temb_dim": 4 * int(ch), "image_size": int(size)}
    return out


def describe_named(name: str) -> dict[str, Any]:
    """Everything about a named model, computed without its weights.

    Returns:
        A JSON-able dict: ``name``, ``family``, ``description``, ``architecture`` (the
        constructor arguments), ``num_params``, ``h_shape``, ``temb_dim``, ``image_size``,
        ``weights_file``, ``source`` (how to get it), ``put_it`` (where hspace looks),
        ``found`` (the path when the weights are already there, else None),
        ``interval_preset``, ``schedule`` and ``computed`` (False when the family's module
        is unavailable and the documented values are shown instead).

    Raises:
        ValueError: unknown name.
    """
    m = get_named(name)
    info: dict[str, Any] = {"name": m.name, "family": m.family, "description": m.description}
    computed = True
    if m.family == "adm":
        cfg: ADMConfig = m.config
        model = build_adm_unet(cfg, device="meta")
        facts = {
            "architecture": cfg.to_dict(),
            "num_params": count_parameters(model),
            "h_shape": cfg.h_shape,
            "temb_dim": cfg.time_embed_dim,
            "image_size": cfg.image_size,
        }
    else:
        try:
            mod = _ddpm_module()
            cfg = getattr(mod, m.config)
            model = mod.build_ddpm_simple_unet(cfg, device="meta")
            arch = cfg.to_dict() if hasattr(cfg, "to_dict") else (dict(cfg) if isinstance(cfg, dict) else vars(cfg))
            facts = {"architecture": dict(arch), "num_params": count_parameters(model), **m.expected}
            facts.update(_ddpm_facts(cfg))
        except (ImportError, AttributeError):
            computed = False
            facts = {"architecture": m.config, **m.expected}
    info.update(facts)
    info.update(
        weights_file=m.weights_file,
        source=m.source,
        put_it=_where_to_put(m),
        found=str(p) if (p := find_weights(m)) else None,
        interval_preset=m.interval_preset,
        schedule=dict(m.schedule),
        computed=computed,
    )
    return info


# --------------------------------------------------------------------------- weights


def weights_dirs() -> list[Path]:
    """Folders searched for weights files: ``$HSPACE_WEIGHTS`` (if set), then the cache's ``weights/``."""
    from ..cache import cache_root

    dirs = []
    env = os.environ.get("HSPACE_WEIGHTS", "").strip()
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_root() / "weights")
    return dirs


def find_weights(model: NamedModel | str) -> Path | None:
    """The first existing ``<dir>/<weights_file>`` among :func:`weights_dirs`, else None."""
    m = get_named(model) if isinstance(model, str) else model
    for d in weights_dirs():
        p = d / m.weights_file
        if p.is_file():
            return p
    return None


def _where_to_put(m: NamedModel) -> str:
    from ..cache import cache_root

    return (
        f"$HSPACE_WEIGHTS/{m.weights_file} or {cache_root() / 'weights' / m.weights_file}, "
        f"or pass the path as --model {m.name}=PATH (Python: load_named(name, weights=PATH))"
    )


def load_weights_file(m: NamedModel, path: str | Path, backbone_id: str | None = None) -> Backbone:
    """Load ``m``'s architecture with the weights in ``path`` (strict key matching).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file or keys/shapes that do not match (named in the message).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {m.name} not found: {path} (expected {m.weights_file})")
    bid = backbone_id or m.name
    if m.family == "adm":
        cfg: ADMConfig = m.config
        sd = read_state_dict(path)
        if m.label_emb_optional:  # e.g. ImageNet uncond: a class embedding may or may not be stored
            w = sd.get("label_emb.weight")
            cfg = replace(cfg, num_classes=int(w.shape[0]) if w is not None and w.dim() == 2 else None)
        return load_adm_checkpoint(sd, cfg, bid, schedule_config=m.schedule, source=str(path))
    mod = _ddpm_module()
    return mod.load_ddpm_simple(str(path), getattr(mod, m.config), bid)


def load_named(name: str, weights: str | Path | None = None) -> Backbone:
    """Load a named real model (CPU, float32).

    Args:
        name: a name from :func:`list_named`, optionally ``NAME=PATH``.
        weights: the weights file; default: found by :func:`find_weights`.

    Returns:
        The backbone, with ``backbone_id`` = the name.

    Raises:
        ValueError: unknown name, or a weights file whose keys do not match.
        FileNotFoundError: an explicit ``weights`` path that does not exist.
        hspace.backbones.registry.ModelNotAvailableError: no weights given and none found;
            the message names the file, where to get it and where to put it.
    """
    name, spec_path = split_model_spec(name)
    m = get_named(name)
    path = weights if weights is not None else spec_path
    if path is None:
        path = find_weights(m)
    if path is None:
        from .registry import ModelNotAvailableError

        raise ModelNotAvailableError(
            f"{m.name} needs its weights file {m.weights_file}, which hspace does not download. "
            f"Get it from {m.source}; put it at {_where_to_put(m)}."
        )
    return load_weights_file(m, path)
