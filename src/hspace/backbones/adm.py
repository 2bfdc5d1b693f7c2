"""Backbone adapter for the guided-diffusion ``UNetModel`` family (ADM, iDDPM, P2-weighting).

This is our own implementation of the U-Net of "Diffusion Models Beat GANs" (ADM) and
"Improved DDPM", whose ``state_dict`` keys and shapes match the published checkpoints
exactly (``time_embed.{0,2}``, ``input_blocks.N.M.*``, ``middle_block.{0,1,2}``,
``output_blocks.N.M.*``, ``out.{0,2}``, optional ``label_emb``), so they load strictly.

Conventions reproduced (see the golden README, "Conventions that are easy to get wrong"):

* sinusoidal time embedding ``[cos, sin]`` with frequencies ``exp(-ln(10000) k / half)``;
* GroupNorm with 32 groups and eps 1e-5, computed in float32 and cast back;
* ResBlocks with optional scale-shift norm (``h = norm(h) * (1 + scale) + shift``) and
  optional up/down-sampling inside the block (``resblock_updown``);
* attention with the *legacy* QKV layout: heads are split before q/k/v, and q and k are
  each scaled by ``ch ** -0.25``. The newer layout (``use_new_attention_order=True``:
  q/k/v split first, then heads) is implemented too but has no golden data;
* learned variance: ``out_channels = 2 * in_channels``; :class:`ADMBackbone` returns the
  first ``in_channels`` channels as eps (the rest is the variance output).

h is the output of ``middle_block``; the skips are the outputs of every input block, in
order; temb is the output of ``time_embed`` (what every ResBlock and the Asyrp DeltaBlock
receive). Class-conditional checkpoints (``num_classes``) load their ``label_emb`` but
always run unconditionally (no label is added), as the Asyrp code does with the ImageNet
unconditional model.

Example:
    >>> cfg = ADMConfig(image_size=32, model_channels=32, num_res_blocks=1,
    ...                 attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=16)
    >>> bb = ADMBackbone(ADMUNet(cfg), cfg, backbone_id="toy")
    >>> bb.h_shape
    (64, 16, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Encoded
from .weights import key_listing, read_state_dict

__all__ = [
    "ADMConfig",
    "ADMUNet",
    "ADMBackbone",
    "timestep_embedding",
    "build_adm_unet",
    "load_adm_checkpoint",
    "read_state_dict",
    "check_state_dict",
    "count_parameters",
]

NUM_GROUPS = 32


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ADMConfig:
    """Constructor arguments of the guided-diffusion ``UNetModel`` (2-D only).

    Attributes:
        image_size: native image side in pixels.
        in_channels: image channels.
        model_channels: base width; the time embedding is ``4 * model_channels`` wide.
        out_channels: output channels (``2 * in_channels`` with learned variance).
        num_res_blocks: ResBlocks per level.
        attention_resolutions: downsampling factors (ds = 1, 2, 4, ...) at which attention
            is used (the official ``"16"`` at 256 px becomes ds 16).
        dropout: dropout rate in the ResBlocks (inactive in eval mode).
        channel_mult: width multiplier per level.
        conv_resample: learned 3x3 conv in plain Upsample/Downsample layers.
        num_classes: number of classes for ``label_emb`` (None: unconditional).
        num_heads: attention heads when ``num_head_channels`` is -1.
        num_head_channels: fixed width per head (-1: use ``num_heads``).
        num_heads_upsample: heads in the decoder (-1: same as ``num_heads``).
        use_scale_shift_norm: FiLM-like time conditioning in the ResBlocks.
        resblock_updown: resample with ResBlocks instead of Upsample/Downsample layers.
        use_new_attention_order: split q/k/v before the heads (False: the legacy order).
    """

    image_size: int
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int = 6
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    conv_resample: bool = True
    num_classes: int | None = None
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_resolutions", tuple(int(a) for a in self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        for name in ("image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ADMConfig.{name} must be a positive int, got {value!r}")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ValueError(f"ADMConfig.channel_mult must be non-empty positive ints, got {self.channel_mult}")
        if self.num_head_channels == -1 and self.num_heads <= 0:
            raise ValueError("ADMConfig: num_heads must be positive when num_head_channels is -1")
        side = self.image_size
        for _ in range(len(self.channel_mult) - 1):
            if side % 2:
                raise ValueError(
                    f"ADMConfig: image_size {self.image_size} cannot be halved {len(self.channel_mult) - 1} times"
                )
            side //= 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ADMConfig":
        """Build from a dict of ``UNetModel`` constructor arguments (unknown 2-D-irrelevant keys ignored).

        Accepts the official resolved arguments (``unet_constructor_args``); ``dims`` must
        be 2 and ``use_fp16``/``use_checkpoint`` are ignored (they change no weights).

        Raises:
            ValueError: ``dims`` other than 2, or a key that is not a constructor argument.
        """
        d = dict(d)
        dims = d.pop("dims", 2)
        if dims != 2:
            raise ValueError(f"only 2-D ADM U-Nets are supported, got dims={dims}")
        for ignored in ("use_checkpoint", "use_fp16"):
            d.pop(ignored, None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ADMConfig arguments {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able constructor arguments (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding (``4 * model_channels``)."""
        return 4 * self.model_channels

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the middle-block output at the native image size."""
        side = self.image_size // 2 ** (len(self.channel_mult) - 1)
        return (self.model_channels * self.channel_mult[-1], side, side)


# --------------------------------------------------------------------------- layers


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM's weight-free sinusoidal embedding: ``[cos(t f), sin(t f)]``, ``f_k = exp(-ln(P) k / half)``.

    Args:
        t: ``[B]`` timesteps (float or int).
        dim: embedding width (an odd width gets a zero last column).
        max_period: P.

    Returns:
        ``[B, dim]`` float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C, eps 1e-5) computed in float32 and cast back to the input dtype."""

    def __init__(self, channels: int):
        super().__init__(NUM_GROUPS, channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type(x.dtype)


class _Upsample(nn.Module):
    """Nearest x2 upsampling, optionally followed by a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        elif out_channels != channels:
            raise ValueError("Upsample without a conv cannot change the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class _Downsample(nn.Module):
    """x2 downsampling: a stride-2 3x3 conv with padding 1 (key ``op``), or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        elif out_channels != channels:
            raise ValueError("Downsample without a conv cannot change the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) if self.use_conv else F.avg_pool2d(x, kernel_size=2, stride=2)


class _ResBlock(nn.Module):
    """Residual block with time conditioning (keys ``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = _Upsample(channels, False)
            self.x_upd: nn.Module = _Upsample(channels, False)
        elif down:
            self.h_upd = _Downsample(channels, False)
            self.x_upd = _Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        # Official layout: identity when widths agree, else a 1x1 conv (use_conv=False everywhere).
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class _AttentionBlock(nn.Module):
    """Spatial self-attention (keys ``norm``, ``qkv`` [3C, C, 1], ``proj_out`` [C, C, 1])."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, new_order: bool):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention width {channels} is not a multiple of num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"attention width {channels} is not divisible by {self.num_heads} heads")
        self.new_order = new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        b, width, length = qkv.shape
        heads = self.num_heads
        ch = width // (3 * heads)
        if self.new_order:  # q, k, v first, then heads
            q, k, v = (z.reshape(b * heads, ch, length) for z in qkv.chunk(3, dim=1))
        else:  # legacy: heads first, then q, k, v inside each head
            q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = torch.einsum("bts,bcs->bct", weight, v)
        return out.reshape(b, heads * ch, length)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self._attend(self.qkv(self.norm(flat)))
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class _Block(nn.Sequential):
    """A sequence whose ResBlocks/attention get the time embedding (``TimestepEmbedSequential``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (_ResBlock, _AttentionBlock)) else layer(x)
        return x


# --------------------------------------------------------------------------- the U-Net


class ADMUNet(nn.Module):
    """The guided-diffusion ``UNetModel`` (2-D), with the official parameter names.

    Args:
        config: the constructor arguments.

    ``forward(x, t)`` returns all ``out_channels`` channels; use :class:`ADMBackbone` for
    the h-space split.
    """

    def __init__(self, config: ADMConfig):
        super().__init__()
        self.config = cfg = config
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        new_order = bool(cfg.use_new_attention_order)

        def res(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> _ResBlock:
            return _ResBlock(ch_in, ted, cfg.dropout, ch_out, cfg.use_scale_shift_norm, up=up, down=down)

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, ted)

        ch = input_ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([_Block(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(_AttentionBlock(ch, cfg.num_heads, cfg.num_head_channels, new_order))
                self.input_blocks.append(_Block(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else _Downsample(ch, cfg.conv_resample, ch)
                self.input_blocks.append(_Block(down))
                chans.append(ch)
                ds *= 2

        self.middle_block = _Block(
            res(ch, ch), _AttentionBlock(ch, cfg.num_heads, cfg.num_head_channels, new_order), res(ch, ch)
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                skip_ch = chans.pop()
                layers = [res(ch + skip_ch, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(_AttentionBlock(ch, heads_up, cfg.num_head_channels, new_order))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else _Upsample(ch, cfg.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(_Block(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """temb = ``time_embed(timestep_embedding(t, model_channels))`` ``[B, 4 * model_channels]``."""
        return self.time_embed(timestep_embedding(t, self.config.model_channels).to(self.dtype))

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Input blocks + middle block: ``(h, skips, temb)``."""
        emb = self.time_embedding(t)
        h = x.to(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return self.middle_block(h, emb), skips, emb

    def decode(self, h: torch.Tensor, skips: Sequence[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Output blocks + ``out`` from h with the encoder's skips; all ``out_channels`` channels."""
        if len(skips) != len(self.output_blocks):
            raise ValueError(f"decode needs {len(self.output_blocks)} skip tensors, got {len(skips)}")
        for block, skip in zip(self.output_blocks, reversed(skips)):
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, skips, emb = self.encode(x, t)
        return self.decode(h, skips, emb).to(x.dtype)


def build_adm_unet(config: ADMConfig | dict[str, Any], device: torch.device | str = "cpu") -> ADMUNet:
    """Build an :class:`ADMUNet` (default init) on ``device``; ``"meta"`` allocates no memory."""
    cfg = config if isinstance(config, ADMConfig) else ADMConfig.from_dict(config)
    with torch.device(device):
        return ADMUNet(cfg)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- backbone


class ADMBackbone(nn.Module):
    """A frozen guided-diffusion U-Net split at its middle block (implements the Backbone protocol).

    Args:
        model: the U-Net (its weights are frozen and it is put in eval mode).
        config: its configuration (default: ``model.config``).
        backbone_id: a stable name recorded in direction files.
        schedule_config: diffusers-style scheduler fields of the model's training schedule;
            None means the paper's linear schedule (1e-4..0.02, T = 1000), which every
            published ADM/iDDPM/P2 256 px model used.
    """

    def __init__(
        self,
        model: ADMUNet,
        config: ADMConfig | None = None,
        backbone_id: str = "unnamed",
        schedule_config: dict | None = None,
    ):
        super().__init__()
        if not isinstance(model, ADMUNet):
            raise TypeError(f"expected an ADMUNet, got {type(model).__name__}")
        from .diffusers_unet import alphas_cumprod_from_scheduler_config, describe_schedule

        self.model = model.eval().requires_grad_(False)
        self.config = config or model.config
        self.backbone_id = backbone_id
        abar = alphas_cumprod_from_scheduler_config(schedule_config)
        self.register_buffer("alphas_cumprod", abar.float().clone(), persistent=False)
        self.schedule_config = describe_schedule(schedule_config, int(abar.shape[0]))
        self.in_channels = self.config.in_channels
        self.out_channels = self.config.out_channels
        self.image_size = self.config.image_size
        self.h_shape = self.config.h_shape
        self.temb_dim = self.config.time_embed_dim

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def to(self, *args: Any, **kwargs: Any) -> "ADMBackbone":
        """Move/cast like ``nn.Module.to``; ``alphas_cumprod`` always stays float32."""
        super().to(*args, **kwargs)
        if self.alphas_cumprod.dtype != torch.float32:
            self.alphas_cumprod = self.alphas_cumprod.float()
        return self

    def _timesteps(self, t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device, dtype=torch.float32)
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1 or t.shape[0] not in (1, batch):
            raise ValueError(f"t must be a scalar or have shape [{batch}], got {list(t.shape)}")
        return t.expand(batch).clone()

    def encode(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> Encoded:
        """Time embedding, input blocks and middle block. ``x_t`` ``[B, C, S, S]``; ``t`` ``[B]`` or a scalar."""
        timesteps = self._timesteps(t, x_t.shape[0], x_t.device)
        h, skips, emb = self.model.encode(x_t, timesteps)
        return Encoded(h=h, skips=tuple(skips), temb=emb, t=timesteps)

    def decode_raw(self, enc: Encoded, h: torch.Tensor | None = None) -> torch.Tensor:
        """Output blocks from ``h`` (default ``enc.h``): all ``out_channels`` channels (eps, then variance)."""
        h = enc.h if h is None else h
        if h.shape[0] != enc.skips[0].shape[0]:
            raise ValueError(f"h has batch {h.shape[0]} but the encoding has batch {enc.skips[0].shape[0]}")
        if h.shape[1:] != enc.h.shape[1:]:
            raise ValueError(f"h has shape {list(h.shape)}, expected [B, {', '.join(map(str, enc.h.shape[1:]))}]")
        return self.model.decode(h.to(self.dtype), enc.skips, enc.temb)

    def decode(self, enc: Encoded, h: torch.Tensor | None = None) -> torch.Tensor:
        """Up path from ``h`` (default ``enc.h``); returns eps (learned-variance channels dropped)."""
        return self.decode_raw(enc, h)[:, : self.in_channels]

    def forward_raw(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """The full network output (all ``out_channels`` channels), as the official ``model(x, t)``."""
        return self.decode_raw(self.encode(x_t, t))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """Plain noise prediction ``[B, C, S, S]``."""
        return self.decode(self.encode(x_t, t))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        return self.eps(x_t, t)


# --------------------------------------------------------------------------- loading


def check_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, ignore: Sequence[str] = ()
) -> None:
    """Raise ValueError unless ``state_dict`` has exactly ``model``'s keys and shapes.

    Args:
        model: the module (may live on the meta device).
        state_dict: the weights.
        source: where they came from (named in the message).
        ignore: key prefixes in the file to disregard (e.g. Asyrp's ``layer_`` edit layers).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items() if not k.startswith(tuple(ignore))}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {list(got[k])} (model: {list(expected[k])})" for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {key_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {key_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {key_listing(wrong, 5)}")
        raise ValueError(
            f"{source} does not match the {type(model).__name__} architecture ({len(expected)} tensors): "
            + "; ".join(parts)
        )


def load_adm_checkpoint(
    path_or_state_dict: str | Path | dict[str, torch.Tensor],
    config: ADMConfig | dict[str, Any],
    backbone_id: str,
    schedule_config: dict | None = None,
    source: str | None = None,
) -> ADMBackbone:
    """Load published guided-diffusion/iDDPM/P2 weights strictly into an :class:`ADMBackbone`.

    The model is built on the meta device and the weights are assigned, so no memory is
    spent on a random initialisation. Asyrp's ``layer_*`` edit layers, if present in the
    file, are ignored.

    Args:
        path_or_state_dict: ``.pt``/``.pth`` (read with ``weights_only=True``) or
            ``.safetensors`` file, or an already loaded state dict.
        config: the architecture.
        backbone_id: the id to record.
        schedule_config: see :class:`ADMBackbone`.
        source: how to name the weights in error messages (default: the file, or
            "state dict for <backbone_id>").

    Returns:
        The backbone on the CPU in float32 (float16 weights are cast).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or missing/unexpected/mis-shaped keys (the message
            names the file and lists the first keys of each kind with their counts).
    """
    cfg = config if isinstance(config, ADMConfig) else ADMConfig.from_dict(config)
    if isinstance(path_or_state_dict, dict):
        sd = path_or_state_dict
        source = source or f"state dict for {backbone_id}"
    else:
        sd = read_state_dict(path_or_state_dict)
        source = source or str(Path(path_or_state_dict).expanduser())
    model = build_adm_unet(cfg, device="meta")
    check_state_dict(model, sd, source, ignore=("layer_",))
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items() if not k.startswith("layer_")}
    model.load_state_dict(sd, strict=True, assign=True)
    return ADMBackbone(model, cfg, backbone_id=backbone_id, schedule_config=schedule_config)
