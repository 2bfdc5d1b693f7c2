"""The implicit function f_t (the paper's "implicit neural direction", DeltaBlock in the reference).

f_t is a small network on h and the backbone's own time embedding temb (DESIGN.md 1.4).
Two layouts exist, matching the two backbone families of the reference; their parameter
names are exactly the official ones, so official state dicts load strictly:

- ``"ddpm"`` (DDPM 'simple' backbones): ``y = conv1(h) + temb_proj(swish(temb))`` (broadcast
  over H, W); ``y = swish(norm2(y))`` with GroupNorm(32, eps 1e-6); ``dh = conv2(y)``.
  Keys ``conv1``, ``temb_proj``, ``norm2``, ``conv2``; 788,992 parameters at C = E = 512.
- ``"adm"`` (iDDPM / guided-diffusion / P2 backbones): ``y = in_layers(h)`` = 1x1 conv of
  SiLU(GN32(h)); ``y = y + emb_layers(temb)`` = Linear(SiLU(temb)); ``dh = out_layers(y)`` =
  1x1 conv of SiLU(GN32(y)). Group norms run in float32 with eps 1e-5. Keys ``in_layers.0``,
  ``in_layers.2``, ``emb_layers.1``, ``out_layers.0``, ``out_layers.3``.

Both use PyTorch's default initialisation (nothing is zeroed).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import DirectionMeta, check_h

__all__ = ["DDPMDeltaBlock", "ADMDeltaBlock", "ImplicitDirection", "VARIANTS"]

VARIANTS: tuple[str, ...] = ("ddpm", "adm")
NUM_GROUPS = 32


class DDPMDeltaBlock(nn.Module):
    """f_t in the DDPM layout (keys ``conv1``, ``temb_proj``, ``norm2``, ``conv2``).

    Args:
        channels: C, the channel count of h.
        temb_dim: E, the width of the backbone's time embedding.
        dropout: dropout rate before ``conv2`` (0 in every shipped checkpoint).
    """

    def __init__(self, channels: int, temb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1)
        self.temb_proj = nn.Linear(temb_dim, channels)
        self.norm2 = nn.GroupNorm(NUM_GROUPS, channels, eps=1e-6, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """``[B, C, H, W]``, ``[B, E]`` or None -> dh ``[B, C, H, W]``."""
        y = self.conv1(h)
        if temb is not None:
            y = y + self.temb_proj(F.silu(temb))[:, :, None, None]
        y = F.silu(self.norm2(y))
        return self.conv2(self.dropout(y))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (as guided-diffusion does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ADMDeltaBlock(nn.Module):
    """f_t in the ADM layout (keys ``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``).

    Args:
        channels: C, the channel count of h.
        temb_dim: E, the width of the backbone's time embedding.
        dropout: dropout rate before the last conv (0 in every shipped checkpoint).
    """

    def __init__(self, channels: int, temb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(NUM_GROUPS, channels, eps=1e-5),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(NUM_GROUPS, channels, eps=1e-5),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, kernel_size=1),
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """``[B, C, H, W]``, ``[B, E]`` or None -> dh ``[B, C, H, W]``."""
        y = self.in_layers(h)
        if temb is not None:
            y = y + self.emb_layers(temb).type(y.dtype)[:, :, None, None]
        return self.out_layers(y)


_BLOCKS: dict[str, type[nn.Module]] = {"ddpm": DDPMDeltaBlock, "adm": ADMDeltaBlock}


class ImplicitDirection(nn.Module):
    """The paper's implicit direction: dh = f_t(h, temb), with official parameter names.

    The network lives in ``self.block``, whose ``state_dict()`` keys are exactly those of the
    official checkpoints' ``"0"`` entry; :meth:`load_official_state_dict` loads one strictly.

    Args:
        variant: ``"ddpm"`` or ``"adm"`` (see the module docstring).
        channels: C, the channel count of h (a multiple of 32, for GroupNorm32).
        temb_dim: E, the width of the backbone's time embedding.
        ignore_timestep: if True the time term is always skipped (the reference's
            ``ignore_timestep`` option); otherwise it is skipped only when ``temb`` is None.
        dropout: dropout rate inside the block (the reference uses 0).
        meta: description of the direction. Defaults to one with ``h_shape=(channels,)``;
            its ``kind`` is always set to ``"implicit-<variant>"``.

    Raises:
        ValueError: unknown variant, channels not a positive multiple of 32, or a ``meta``
            whose h_shape/temb_dim disagree with ``channels``/``temb_dim``.

    Example:
        >>> f = ImplicitDirection("ddpm", channels=64, temb_dim=128)
        >>> f(torch.randn(2, 64, 8, 8), torch.tensor([999, 500]), torch.randn(2, 128)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        variant: Literal["ddpm", "adm"],
        channels: int,
        temb_dim: int,
        *,
        ignore_timestep: bool = False,
        dropout: float = 0.0,
        meta: DirectionMeta | None = None,
    ):
        super().__init__()
        if variant not in _BLOCKS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        for name, value in (("channels", channels), ("temb_dim", temb_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if channels % NUM_GROUPS:
            raise ValueError(
                f"channels must be a multiple of {NUM_GROUPS} (f_t normalises with GroupNorm{NUM_GROUPS}), got {channels}"
            )
        kind = f"implicit-{variant}"
        if meta is None:
            meta = DirectionMeta(kind=kind, h_shape=(channels,), temb_dim=temb_dim)
        else:
            if meta.h_shape[0] != channels:
                raise ValueError(f"meta.h_shape {meta.h_shape} has {meta.h_shape[0]} channels, but channels={channels}")
            if meta.temb_dim not in (None, temb_dim):
                raise ValueError(f"meta.temb_dim={meta.temb_dim} disagrees with temb_dim={temb_dim}")
            meta = meta.replace(kind=kind, temb_dim=temb_dim)
        self.variant = variant
        self.channels = channels
        self.temb_dim = temb_dim
        self.ignore_timestep = bool(ignore_timestep)
        self.dropout = float(dropout)
        self.meta = meta
        self.block = _BLOCKS[variant](channels, temb_dim, dropout)

    @classmethod
    def for_backbone(cls, backbone: Any, variant: Literal["ddpm", "adm"], **kwargs: Any) -> "ImplicitDirection":
        """A freshly initialised f_t sized for ``backbone``, its id and h shape recorded in ``meta``.

        Args:
            backbone: a :class:`~hspace.backbones.Backbone`.
            variant: ``"ddpm"`` or ``"adm"``.
            **kwargs: ``ignore_timestep``, ``dropout``, and any :class:`DirectionMeta` field
                (``source_text``, ``t_edit``, ...).
        """
        own = {k: kwargs.pop(k) for k in ("ignore_timestep", "dropout") if k in kwargs}
        meta = DirectionMeta(
            kind=f"implicit-{variant}",
            h_shape=tuple(backbone.h_shape),
            backbone_id=backbone.backbone_id,
            temb_dim=backbone.temb_dim,
            **kwargs,
        )
        return cls(variant, backbone.h_shape[0], backbone.temb_dim, meta=meta, **own)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (without meta), as stored in a direction file."""
        return {
            "variant": self.variant,
            "channels": self.channels,
            "temb_dim": self.temb_dim,
            "ignore_timestep": self.ignore_timestep,
            "dropout": self.dropout,
        }

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load an official DeltaBlock state dict (the ``"0"`` entry of a checkpoint), strictly.

        Raises:
            ValueError: missing, unexpected or mis-shaped keys (all of them are listed).
        """
        try:
            self.block.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"cannot load state dict into the {self.variant!r} f_t (C={self.channels}, E={self.temb_dim}): {err}"
            ) from err

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        """dh = f_t(h, temb); ``t`` is accepted for the :class:`Direction` protocol and unused.

        Args:
            h: ``[B, C, H, W]``.
            t: timesteps ``[B]`` (unused: f_t sees time only through temb).
            temb: ``[B, E]`` time embedding before activation, or None to skip the time term.

        Returns:
            dh ``[B, C, H, W]``.
        """
        check_h(h, self.channels, "ImplicitDirection")
        if self.ignore_timestep:
            temb = None
        if temb is not None and (temb.dim() != 2 or temb.shape[0] != h.shape[0] or temb.shape[1] != self.temb_dim):
            raise ValueError(
                f"ImplicitDirection: temb has shape {list(temb.shape)}, expected [{h.shape[0]}, {self.temb_dim}] "
                "(one row per batch element of h, the backbone's time-embedding width)"
            )
        return self.block(h, temb)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, channels={self.channels}, temb_dim={self.temb_dim}, ignore_timestep={self.ignore_timestep}"
