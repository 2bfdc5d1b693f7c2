"""The original DDPM 'simple' U-Net (DDIM / SDEdit / Asyrp checkpoints) as a diffusers ``UNet2DModel``.

The pixel-space DDPM of Ho et al. (the PyTorch port used by the DDIM, SDEdit and Asyrp code
for CelebA-HQ, LSUN church and LSUN bedroom, keys such as ``temb.dense.0``,
``down.N.block.M.conv1``, ``mid.attn_1``, ``up.N.upsample.conv``) is architecturally the
network that diffusers' ``UNet2DModel`` reproduces with these settings:

* sinusoidal time embedding ``[sin, cos]`` with frequency ``exp(-ln(10000) k / (half - 1))``
  (``flip_sin_to_cos=False``, ``freq_shift=1``), then Linear -> SiLU -> Linear (temb width 4 ch);
* GroupNorm with 32 groups and eps 1e-6 everywhere (ResNet blocks, attention, output norm);
* single-head attention (``attention_head_dim=None`` gives one head as wide as the block) with
  scale ``C^-1/2`` and a residual connection, at the levels whose side is in ``attn_resolutions``
  and in the middle block;
* stride-2 3x3 downsampling conv with padding 0 after padding the input by (0, 1, 0, 1)
  (``downsample_padding=0``), nearest x2 upsampling followed by a 3x3 conv;
* a 1x1 shortcut conv in every ResNet block whose input and output widths differ.

One detail is not a constructor setting: diffusers' ``Timesteps`` rounds the sinusoid
frequencies differently from the official code (up to 3e-5 apart at t = 999, 128 channels),
so :func:`build_ddpm_simple_unet` installs :class:`OfficialDDPMTimesteps`, which computes
it in the official order and matches the golden sinusoid bit for bit.

This module converts such checkpoints **exactly and strictly** (every source key consumed,
every target key produced, every shape checked) so that they run through
:class:`~hspace.backbones.diffusers_unet.DiffusersUNetBackbone`; h is then the output of
``unet.mid_block``, which is the official ``mid.block_2`` output.

Two settings of the official class cannot be expressed by ``UNet2DModel`` and are refused
with a clear error: ``ch_mult[0] != 1`` (the official ``conv_in`` then has ``ch`` channels
while diffusers' has ``ch * ch_mult[0]``) and ``resamp_with_conv=False`` (diffusers' down/up
blocks always resample with a conv). No published checkpoint uses either.

Example:
    >>> from hspace.backbones.ddpm_simple import DDPM_CELEBAHQ_256, build_ddpm_simple_unet
    >>> unet = build_ddpm_simple_unet(DDPM_CELEBAHQ_256, device="meta")
    >>> sum(p.numel() for p in unet.parameters())
    113673219
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import Timesteps

from .diffusers_unet import DiffusersUNetBackbone
from .weights import extract_state_dict, key_listing, read_state_dict

__all__ = [
    "DDPMSimpleConfig",
    "DDPM_CELEBAHQ_256",
    "DDPM_CHURCH_256",
    "DDPM_BEDROOM_256",
    "DDPM_CIFAR10_32",
    "NAMED_CONFIGS",
    "DDPM_SCHEDULE_CONFIG",
    "OfficialDDPMTimesteps",
    "config_from_official_yaml_dict",
    "infer_ddpm_config",
    "unet2d_kwargs",
    "build_ddpm_simple_unet",
    "ddpm_key_map",
    "convert_ddpm_state_dict",
    "extract_state_dict",
    "load_ddpm_state_dict",
    "load_ddpm_simple",
]

#: The schedule all DDPM 'simple' checkpoints were trained with (DDIM/SDEdit/Asyrp configs).
DDPM_SCHEDULE_CONFIG: dict[str, Any] = {
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "num_train_timesteps": 1000,
}

#: Number of GroupNorm groups and the GroupNorm eps of the DDPM 'simple' model.
_NUM_GROUPS = 32
_NORM_EPS = 1e-6


@dataclass(frozen=True)
class DDPMSimpleConfig:
    """Architecture of an official DDPM 'simple' U-Net (the ``config.model`` block of its yml).

    Attributes:
        ch: base channel count (``conv_in`` output); the time embedding is ``4 * ch`` wide.
        out_ch: output channels (3: eps only).
        ch_mult: channel multiplier per resolution level; level i has ``ch * ch_mult[i]`` channels.
        num_res_blocks: ResNet blocks per level on the down path (the up path has one more).
        attn_resolutions: feature-map sides (in pixels) that get a self-attention after each
            ResNet block, e.g. ``(16,)``.
        dropout: dropout rate inside the ResNet blocks (inactive in eval mode).
        resamp_with_conv: resample with convolutions (True in every published model).
        in_channels: image channels.
        resolution: image side (``config.data.image_size``).
    """

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    in_channels: int = 3
    resolution: int = 256
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        # Normalise lists (from JSON/YAML) to tuples so configs compare and hash cleanly.
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        for key in ("ch", "out_ch", "num_res_blocks", "in_channels", "resolution"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DDPMSimpleConfig.{key} must be a positive int, got {value!r}")
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ValueError(f"DDPMSimpleConfig.ch_mult must be a non-empty tuple of positive ints, got {self.ch_mult}")
        if self.resolution % (2 ** (len(self.ch_mult) - 1)):
            raise ValueError(
                f"DDPMSimpleConfig.resolution {self.resolution} is not divisible by 2^{len(self.ch_mult) - 1} "
                f"(one halving per level of ch_mult {self.ch_mult})"
            )

    @property
    def num_resolutions(self) -> int:
        """Number of resolution levels (``len(ch_mult)``)."""
        return len(self.ch_mult)

    @property
    def temb_ch(self) -> int:
        """Width of the time embedding (``4 * ch``)."""
        return 4 * self.ch

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        """Channels per level, ``ch * ch_mult[i]``."""
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of h (the middle-block output) at the native resolution."""
        side = self.resolution // 2 ** (self.num_resolutions - 1)
        return (self.block_out_channels[-1], side, side)

    def level_resolution(self, level: int) -> int:
        """Feature-map side at resolution level ``level`` (0 = full resolution)."""
        return self.resolution // 2**level

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields (lists instead of tuples)."""
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d


#: CelebA-HQ 256 (SDEdit / Asyrp ``celeba_hq.ckpt``; Asyrp ``configs/celeba.yml`` model block).
DDPM_CELEBAHQ_256 = DDPMSimpleConfig(name="ddpm-celebahq-256")
#: LSUN church 256 (DDPM ``ema_diffusion_lsun_church_model/model-4432000.ckpt``). Same architecture
#: as CelebA-HQ in the DDIM/SDEdit/Asyrp ``church.yml``; dropout there is 0.0 (inactive at inference anyway).
DDPM_CHURCH_256 = DDPMSimpleConfig(name="ddpm-church-256")
#: LSUN bedroom 256 (DDPM ``ema_diffusion_lsun_bedroom_model/model-2388000.ckpt``). Same architecture
#: as CelebA-HQ in the DDIM/SDEdit ``bedroom.yml`` (dropout 0.0).
DDPM_BEDROOM_256 = DDPMSimpleConfig(name="ddpm-bedroom-256")
#: CIFAR-10 32 (DDPM ``ema_diffusion_cifar10_model/model-790000.ckpt``; DDIM ``cifar10.yml``).
DDPM_CIFAR10_32 = DDPMSimpleConfig(
    ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, resolution=32,
    name="ddpm-cifar10-32",
)

#: The named configs by name.
NAMED_CONFIGS: dict[str, DDPMSimpleConfig] = {
    c.name: c for c in (DDPM_CELEBAHQ_256, DDPM_CHURCH_256, DDPM_BEDROOM_256, DDPM_CIFAR10_32)
}


def config_from_official_yaml_dict(d: Mapping[str, Any], name: str = "custom") -> DDPMSimpleConfig:
    """A :class:`DDPMSimpleConfig` from an official yml/json config (``model.*`` and ``data.image_size``).

    Accepts the parsed yml itself (top-level ``model`` and ``data`` sections, as the DDIM /
    SDEdit / Asyrp ``configs/*.yml`` have), or a dict that wraps it under ``config`` (as the
    golden ``ddpm_small/config.json`` does). Keys the architecture does not use (``var_type``,
    ``ema``, ``ema_rate``, ...) are ignored.

    Args:
        d: the parsed config.
        name: a name recorded in the config.

    Raises:
        ValueError: the ``model`` section is missing or incomplete, or ``model.type`` is not
            ``"simple"`` (e.g. ``"bedroom"``-style variants are not DDPM 'simple' models).
    """
    if "model" not in d and isinstance(d.get("config"), Mapping):
        d = d["config"]
    model = d.get("model")
    if not isinstance(model, Mapping):
        raise ValueError(
            "official DDPM config has no 'model' section; expected the yml layout "
            "{'model': {'ch': ..., 'ch_mult': [...], ...}, 'data': {'image_size': ...}}"
        )
    model_type = model.get("type", "simple")
    if model_type != "simple":
        raise ValueError(f"official config has model.type={model_type!r}; only the DDPM 'simple' model is supported here")
    data = d.get("data") or {}
    resolution = data.get("image_size", model.get("resolution"))
    required = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions")
    missing = [k for k in required if k not in model]
    if resolution is None:
        missing.append("data.image_size")
    if missing:
        raise ValueError(f"official DDPM config is missing {missing}")
    return DDPMSimpleConfig(
        ch=int(model["ch"]),
        out_ch=int(model["out_ch"]),
        ch_mult=tuple(model["ch_mult"]),
        num_res_blocks=int(model["num_res_blocks"]),
        attn_resolutions=tuple(model["attn_resolutions"]),
        dropout=float(model.get("dropout", 0.0)),
        resamp_with_conv=bool(model.get("resamp_with_conv", True)),
        in_channels=int(model.get("in_channels", data.get("channels", 3))),
        resolution=int(resolution),
        name=name,
    )


def infer_ddpm_config(sd: Mapping[str, torch.Tensor], resolution: int, name: str = "inferred") -> DDPMSimpleConfig:
    """Read the architecture off an official DDPM 'simple' state dict (only the image side is not in it).

    ``ch``, ``in_channels`` and ``out_ch`` come from ``conv_in``/``conv_out``, ``ch_mult`` from
    the first block of each down level, ``num_res_blocks`` from the block count of ``down.0``,
    and ``attn_resolutions`` from the levels that have ``down.N.attn`` keys together with
    ``resolution``. ``dropout`` cannot be read from weights and is set to 0.

    Args:
        sd: official key -> tensor (a ``module.`` prefix is ignored).
        resolution: the image side the model was trained at (``data.image_size``).
        name: a name recorded in the config.

    Raises:
        ValueError: the keys do not look like a DDPM 'simple' model.
    """
    sd = _strip_common_prefix(sd)
    try:
        ch, in_channels = int(sd["conv_in.weight"].shape[0]), int(sd["conv_in.weight"].shape[1])
        out_ch = int(sd["conv_out.weight"].shape[0])
    except KeyError as err:
        raise ValueError(f"not a DDPM 'simple' state dict: no {err.args[0]!r} key") from err
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^down\.(\d+)\.", k))})
    if not levels or levels != list(range(len(levels))):
        raise ValueError(f"not a DDPM 'simple' state dict: down levels {levels} are not 0..L-1")
    ch_mult = []
    for n in levels:
        w = sd.get(f"down.{n}.block.0.conv1.weight")
        if w is None or int(w.shape[0]) % ch:
            raise ValueError(f"not a DDPM 'simple' state dict: down.{n}.block.0.conv1.weight missing or not a multiple of ch={ch}")
        ch_mult.append(int(w.shape[0]) // ch)
    num_res_blocks = len({k.split(".")[3] for k in sd if k.startswith("down.0.block.")})
    attn_levels = sorted({int(k.split(".")[1]) for k in sd if re.match(r"^down\.\d+\.attn\.", k)})
    return DDPMSimpleConfig(
        ch=ch,
        out_ch=out_ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks,
        attn_resolutions=tuple(resolution // 2**n for n in attn_levels),
        dropout=0.0,
        resamp_with_conv=any(k.startswith("down.0.downsample.conv.") for k in sd) or len(levels) == 1,
        in_channels=in_channels,
        resolution=resolution,
        name=name,
    )


def _check_expressible(config: DDPMSimpleConfig) -> None:
    """Refuse the two official settings ``UNet2DModel`` cannot express."""
    if config.ch_mult[0] != 1:
        raise ValueError(
            f"{config.name}: ch_mult[0] = {config.ch_mult[0]} is not supported: the official conv_in has ch = "
            f"{config.ch} channels but diffusers' UNet2DModel would give it ch * ch_mult[0]; every published "
            "DDPM checkpoint has ch_mult[0] = 1"
        )
    if not config.resamp_with_conv:
        raise ValueError(
            f"{config.name}: resamp_with_conv=False (average-pool / plain nearest resampling) is not supported: "
            "UNet2DModel's down/up blocks always resample with a conv; every published DDPM checkpoint uses True"
        )


def unet2d_kwargs(config: DDPMSimpleConfig) -> dict[str, Any]:
    """``UNet2DModel`` constructor arguments that reproduce the official DDPM 'simple' model exactly.

    Args:
        config: the architecture.

    Returns:
        Keyword arguments for ``diffusers.UNet2DModel``.

    Raises:
        ValueError: the config uses a setting ``UNet2DModel`` cannot express (see module docstring).
    """
    _check_expressible(config)
    attn_levels = [config.level_resolution(i) in config.attn_resolutions for i in range(config.num_resolutions)]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn_levels))
    return dict(
        sample_size=config.resolution,
        in_channels=config.in_channels,
        out_channels=config.out_ch,
        center_input_sample=False,
        time_embedding_type="positional",
        flip_sin_to_cos=False,  # official order is [sin, cos]
        freq_shift=1,  # official frequency divisor is half - 1
        down_block_types=down,
        mid_block_type="UNetMidBlock2D",
        up_block_types=up,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=0,  # pad (0, 1, 0, 1) then stride-2 conv with padding 0
        downsample_type="conv",
        upsample_type="conv",
        dropout=float(config.dropout),
        act_fn="silu",
        attention_head_dim=None,  # one head as wide as the block (official AttnBlock is single-head)
        norm_num_groups=_NUM_GROUPS,
        attn_norm_num_groups=None,
        norm_eps=_NORM_EPS,
        resnet_time_scale_shift="default",
        add_attention=True,
        class_embed_type=None,
        num_class_embeds=None,
    )


class OfficialDDPMTimesteps(Timesteps):
    """Diffusers' ``Timesteps`` computed in the official DDPM operation order (bit-exact).

    Same result as ``Timesteps(ch, flip_sin_to_cos=False, downscale_freq_shift=1)`` up to
    float32 rounding: the official code forms the frequencies as
    ``exp(arange(half) * -(ln(10000) / (half - 1)))`` (one rounding), diffusers as
    ``exp(-ln(10000) * arange(half) / (half - 1))`` (two). At t = 999 with 128 channels the
    two differ by up to 2.9e-5, more than the golden tolerance; this module reproduces the
    official sinusoid exactly. It keeps ``Timesteps``' attributes, so the ``UNet2DModel``
    config is unchanged and ``save_pretrained`` writes a standard diffusers model (which,
    reloaded by plain diffusers, then uses diffusers' own rounding).

    Args:
        num_channels: embedding width (the official ``ch``); must be even.
    """

    def __init__(self, num_channels: int):
        if num_channels % 2 or num_channels < 4:
            raise ValueError(f"the DDPM sinusoid needs an even width >= 4, got {num_channels}")
        super().__init__(num_channels, flip_sin_to_cos=False, downscale_freq_shift=1)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``[B]`` timesteps (float or int) -> ``[B, num_channels]`` float32 ``[sin, cos]`` embedding."""
        if timesteps.dim() != 1:
            raise ValueError(f"timesteps must be 1-D [B], got shape {list(timesteps.shape)}")
        half = self.num_channels // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -step)
        args = timesteps.float()[:, None] * freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def build_ddpm_simple_unet(config: DDPMSimpleConfig, device: str | torch.device = "cpu") -> UNet2DModel:
    """A randomly initialised ``UNet2DModel`` with the DDPM 'simple' architecture, in eval mode.

    Its ``time_proj`` is an :class:`OfficialDDPMTimesteps`, which reproduces the official
    sinusoid bit for bit (diffusers' own ``Timesteps`` differs by up to 3e-5 in float32).

    Args:
        config: the architecture.
        device: where to create the parameters; ``"meta"`` allocates nothing (for shape and
            key checks of the real 256 px models without memory or init time).
    """
    with torch.device(device):
        unet = UNet2DModel(**unet2d_kwargs(config))
    unet.time_proj = OfficialDDPMTimesteps(config.ch)
    return unet.eval()


# ----------------------------------------------------------------------------------------------
# key mapping

_RESNET_LEAVES = {
    "norm1": "norm1",
    "conv1": "conv1",
    "time_emb_proj": "temb_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_ATTN_LEAVES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
#: Diffusers attention projections are Linear; the official ones are 1x1 convs.
_ATTN_LINEAR = ("to_q", "to_k", "to_v", "to_out.0")

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)$"), "resnet"),
    (re.compile(r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$"), "attn"),
    (re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)$"), "downsample"),
    (re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)$"), "upsample"),
    (re.compile(r"^mid_block\.resnets\.([01])\.(\w+)\.(weight|bias)$"), "mid_resnet"),
    (re.compile(r"^mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$"), "mid_attn"),
    (re.compile(r"^time_embedding\.linear_([12])\.(weight|bias)$"), "temb"),
    (re.compile(r"^(conv_in|conv_out|conv_norm_out)\.(weight|bias)$"), "io"),
]


def _official_name(key: str, num_levels: int) -> str:
    """The official key for one diffusers ``UNet2DModel`` key of a DDPM-simple-shaped model."""
    for pattern, kind in _PATTERNS:
        m = pattern.match(key)
        if not m:
            continue
        if kind == "resnet":
            side, i, j, leaf, wb = m.groups()
            level = int(i) if side == "down" else num_levels - 1 - int(i)
            return f"{side}.{level}.block.{j}.{_RESNET_LEAVES[leaf]}.{wb}"
        if kind == "attn":
            side, i, j, leaf, wb = m.groups()
            level = int(i) if side == "down" else num_levels - 1 - int(i)
            return f"{side}.{level}.attn.{j}.{_ATTN_LEAVES[leaf]}.{wb}"
        if kind == "downsample":
            i, wb = m.groups()
            return f"down.{i}.downsample.conv.{wb}"
        if kind == "upsample":
            i, wb = m.groups()
            return f"up.{num_levels - 1 - int(i)}.upsample.conv.{wb}"
        if kind == "mid_resnet":
            j, leaf, wb = m.groups()
            return f"mid.block_{int(j) + 1}.{_RESNET_LEAVES[leaf]}.{wb}"
        if kind == "mid_attn":
            leaf, wb = m.groups()
            return f"mid.attn_1.{_ATTN_LEAVES[leaf]}.{wb}"
        if kind == "temb":
            n, wb = m.groups()
            return f"temb.dense.{int(n) - 1}.{wb}"
        name, wb = m.groups()
        return {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}[name] + f".{wb}"
    raise RuntimeError(f"internal error: no official DDPM name for diffusers key {key!r} (diffusers layout changed?)")


def _is_attn_linear_weight(diffusers_key: str) -> bool:
    return diffusers_key.endswith(".weight") and any(f".{leaf}.weight" in diffusers_key for leaf in _ATTN_LINEAR) and (
        ".attentions." in diffusers_key
    )


def _target_shapes(config: DDPMSimpleConfig) -> dict[str, torch.Size]:
    """Diffusers key -> parameter shape, from a meta-device build (no memory, no init time)."""
    unet = build_ddpm_simple_unet(config, device="meta")
    return {k: v.shape for k, v in unet.state_dict().items()}


def ddpm_key_map(config: DDPMSimpleConfig) -> dict[str, str]:
    """Official key -> diffusers key for every parameter of the model described by ``config``.

    The official ``up`` list is indexed bottom-up (``up.0`` is the full-resolution level) and
    has ``num_res_blocks + 1`` blocks per level; diffusers' ``up_blocks`` run top-down, so
    ``up.N`` is ``up_blocks.{L-1-N}``. Attention ``norm``/``q``/``k``/``v``/``proj_out`` become
    ``group_norm``/``to_q``/``to_k``/``to_v``/``to_out.0``; ``temb_proj`` becomes
    ``time_emb_proj`` and ``nin_shortcut`` ``conv_shortcut``.
    """
    n = config.num_resolutions
    return {_official_name(k, n): k for k in _target_shapes(config)}


def _strip_common_prefix(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """Remove a ``module.`` prefix that ``DataParallel`` training adds to every key."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def convert_ddpm_state_dict(
    sd: Mapping[str, torch.Tensor], config: DDPMSimpleConfig, *, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename (and reshape) an official DDPM 'simple' state dict into diffusers ``UNet2DModel`` keys.

    Strict: every source key must be consumed, every target key produced, and every shape must
    match; attention q/k/v/proj_out 1x1 conv weights ``[C, C, 1, 1]`` become Linear weights
    ``[C, C]``. A common ``module.`` prefix (DataParallel) is removed first. Tensors are not
    copied except where reshaped (views), and keep their dtype and device.

    Args:
        sd: official key -> tensor (meta tensors are fine, for shape checks).
        config: the architecture the state dict is expected to have.
        source: what ``sd`` came from (a file name), used in error messages.

    Returns:
        diffusers key -> tensor, loadable with ``UNet2DModel.load_state_dict(..., strict=True)``.

    Raises:
        ValueError: missing keys, unexpected keys, non-tensor values or shape mismatches (the
            first 10 of each, with counts), with a hint how to fix it.
    """
    sd = _strip_common_prefix(sd)
    targets = _target_shapes(config)
    n = config.num_resolutions
    official_to_target = {_official_name(k, n): k for k in targets}

    missing = [k for k in official_to_target if k not in sd]
    unexpected = [k for k in sd if k not in official_to_target]
    bad_shape: list[str] = []
    not_tensor: list[str] = []
    out: dict[str, torch.Tensor] = {}
    for off, tgt in official_to_target.items():
        if off not in sd:
            continue
        value = sd[off]
        if not isinstance(value, torch.Tensor):
            not_tensor.append(f"{off} ({type(value).__name__})")
            continue
        want = targets[tgt]
        want_src = torch.Size([*want, 1, 1]) if _is_attn_linear_weight(tgt) else want
        if value.shape != want_src:
            bad_shape.append(f"{off}: got {list(value.shape)}, expected {list(want_src)}")
            continue
        out[tgt] = value.reshape(want) if value.shape != want else value

    if missing or unexpected or bad_shape or not_tensor:
        lines = [
            f"{source} does not fit the DDPM 'simple' model {config.name!r} (ch={config.ch}, ch_mult={list(config.ch_mult)}, "
            f"num_res_blocks={config.num_res_blocks}, attn_resolutions={list(config.attn_resolutions)}, "
            f"resolution={config.resolution}, in/out channels={config.in_channels}/{config.out_ch}):"
        ]
        if missing:
            lines.append(f"  missing keys: {key_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {key_listing(unexpected)}")
        if bad_shape:
            lines.append(f"  shape mismatches: {key_listing(bad_shape)}")
        if not_tensor:
            lines.append(f"  values that are not tensors: {key_listing(not_tensor)}")
        if any(re.match(r"^layer_\d+\.", k) for k in unexpected):
            lines.append(
                "  hint: 'layer_N.*' keys are an Asyrp DeltaBlock (the implicit direction f_t), not part of the "
                "backbone; drop them here and load them with hspace.directions.ImplicitDirection"
                "('ddpm', ...).load_official_state_dict()"
            )
        lines.append(
            "  fix: pass the config the checkpoint was trained with (the model block of its yml, via "
            "config_from_official_yaml_dict, or infer_ddpm_config(state_dict, resolution)), or check that the file "
            "is an official DDPM 'simple' state dict"
        )
        raise ValueError("\n".join(lines))
    return out


# ----------------------------------------------------------------------------------------------
# loading

def load_ddpm_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official DDPM state dict from ``.ckpt``/``.pth``/``.pt`` (safe unpickling) or ``.safetensors``.

    Pickled files are read with ``torch.load(map_location="cpu", weights_only=True)``: nothing
    but tensors and plain containers is ever unpickled.

    Raises:
        FileNotFoundError: no such file (the message says how to get the official weights).
        ValueError: unknown suffix, unreadable file, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DDPM checkpoint not found: {path}. The official weights are the DDIM/SDEdit/Asyrp files "
            "(e.g. celeba_hq.ckpt from SDEdit, ema_diffusion_lsun_church_model/model-4432000.ckpt from "
            "pesser/pytorch_diffusion); download one on a machine with network access and pass its path"
        )
    return read_state_dict(path)


def load_ddpm_simple(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    config: DDPMSimpleConfig = DDPM_CELEBAHQ_256,
    backbone_id: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusersUNetBackbone:
    """Load an official DDPM 'simple' checkpoint as a :class:`DiffusersUNetBackbone`.

    The state dict is converted strictly (:func:`convert_ddpm_state_dict`) and assigned to a
    ``UNet2DModel`` built on the meta device, so no random initialisation is spent. The schedule
    is the DDPM one: linear beta 1e-4..0.02 over 1000 steps.

    Args:
        path_or_state_dict: a ``.ckpt``/``.pth``/``.pt``/``.safetensors`` file, or the state dict.
        config: the architecture (default: the CelebA-HQ / LSUN 256 px one).
        backbone_id: recorded in direction files; default: the file's absolute path, or
            ``config.name`` for an in-memory state dict.
        device: where the weights go.
        dtype: parameter dtype (float32 unless you know better).

    Raises:
        FileNotFoundError, ValueError: see :func:`load_ddpm_state_dict` and :func:`convert_ddpm_state_dict`.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        sd = extract_state_dict(path_or_state_dict, source=source)
        default_id = config.name
    else:
        path = Path(path_or_state_dict)
        source = str(path)
        sd = load_ddpm_state_dict(path)
        default_id = str(path.resolve())
    converted = convert_ddpm_state_dict(sd, config, source=source)
    converted = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in converted.items()}
    unet = build_ddpm_simple_unet(config, device="meta")
    unet.load_state_dict(converted, strict=True, assign=True)
    leftover = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if leftover:  # pragma: no cover - only if diffusers adds state outside the state dict
        raise RuntimeError(f"internal error: parameters left on the meta device after loading: {leftover[:10]}")
    return DiffusersUNetBackbone(
        unet.eval(), backbone_id=backbone_id or default_id, schedule_config=dict(DDPM_SCHEDULE_CONFIG)
    )
