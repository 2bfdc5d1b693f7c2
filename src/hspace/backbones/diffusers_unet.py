"""Backbone adapter for diffusers ``UNet2DModel`` (every block type diffusers offers).

``decode(encode(x, t))`` performs exactly the operations of ``UNet2DModel.forward``, in the
same order, so the result is bit-identical in float32. h is the output of ``unet.mid_block``.
A model whose scheduler config says ``prediction_type: v_prediction`` (or ``sample``) has its
output turned into eps, as diffusers' schedulers do, so everything above sees eps.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from ..schedule import alphas_cumprod_from_betas, default_alphas_cumprod, linear_betas
from .base import Encoded

__all__ = ["DiffusersUNetBackbone", "alphas_cumprod_from_scheduler_config", "describe_schedule"]


def alphas_cumprod_from_scheduler_config(config: dict | None) -> torch.Tensor:
    """abar_t from a diffusers scheduler config; the paper's linear default when there is none.

    The 'linear' schedule is computed in float64 and cast (as the reference code does);
    other schedules are taken from diffusers' own ``DDPMScheduler``.
    """
    if not config:
        return default_alphas_cumprod()
    schedule = config.get("beta_schedule", "linear")
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is None and schedule == "linear":
        return alphas_cumprod_from_betas(
            linear_betas(float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)), n)
        )
    from diffusers import DDPMScheduler

    keep = {k: v for k, v in config.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(keep).alphas_cumprod.float().clone()


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

_SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type", "clip_sample")


def describe_schedule(config: dict | None, num_steps: int) -> dict:
    """The schedule fields worth recording (the paper's default when there is no config)."""
    if not config:
        return {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": num_steps}
    return {k: config[k] for k in _SCHEDULE_KEYS if k in config}


class DiffusersUNetBackbone(torch.nn.Module):
    """A frozen diffusers ``UNet2DModel`` split at its middle block.

    Args:
        unet: the model. Class-conditional models are not supported.
        alphas_cumprod: ``[T]`` schedule; default: computed from ``schedule_config``.
        backbone_id: a stable name (hub id, folder, or built-in name) recorded in direction files.
        schedule_config: the model's diffusers scheduler config (None: the paper's linear
            default); recorded in direction files as the training schedule.
    """

    def __init__(
        self,
        unet: UNet2DModel,
        alphas_cumprod: torch.Tensor | None = None,
        backbone_id: str = "unnamed",
        schedule_config: dict | None = None,
    ):
        super().__init__()
        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"expected a diffusers UNet2DModel, got {type(unet).__name__}")
        if unet.class_embedding is not None:
            raise ValueError(
                f"{backbone_id}: class-conditional UNet2DModel (class_embed_type="
                f"{unet.config.class_embed_type!r}, num_class_embeds={unet.config.num_class_embeds}) is not supported"
            )
        self.unet = unet.eval().requires_grad_(False)
        self.backbone_id = backbone_id
        if alphas_cumprod is None:
            alphas_cumprod = alphas_cumprod_from_scheduler_config(schedule_config)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.schedule_config = describe_schedule(schedule_config, int(alphas_cumprod.shape[0]))
        self.prediction_type = str((schedule_config or {}).get("prediction_type", "epsilon"))
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"{backbone_id}: prediction_type {self.prediction_type!r} in its scheduler config is not "
                             f"supported (one of {', '.join(PREDICTION_TYPES)})")
        cfg = unet.config
        self.in_channels = int(cfg.in_channels)
        self.out_channels = int(cfg.out_channels)
        size = cfg.sample_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        n_down = sum(1 for b in unet.down_blocks if getattr(b, "downsamplers", None) is not None)
        side = self.image_size // (2**n_down)
        self.h_shape = (int(cfg.block_out_channels[-1]), side, side)
        self.temb_dim = int(unet.time_embedding.linear_2.out_features)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def _timesteps(self, t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t[None]
        return t * torch.ones(batch, dtype=t.dtype, device=device)

    def encode(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> Encoded:
        """Down path and middle block. ``x_t`` ``[B, C, S, S]``; ``t`` ``[B]`` or a scalar."""
        unet = self.unet
        sample = x_t
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = self._timesteps(t, sample.shape[0], sample.device)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
        skip_sample = sample
        sample = unet.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            if hasattr(block, "skip_conv"):
                sample, res, skip_sample = block(hidden_states=sample, temb=emb, skip_sample=skip_sample)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        if unet.mid_block is not None:
            sample = unet.mid_block(sample, emb)
        keep = x_t if self.prediction_type != "epsilon" else None
        return Encoded(h=sample, skips=skips, temb=emb, t=timesteps, x_t=keep)

    def decode(self, enc: Encoded, h: torch.Tensor | None = None) -> torch.Tensor:
        """Up path from ``h`` (default ``enc.h``); returns eps with learned-variance channels dropped."""
        unet = self.unet
        sample = enc.h if h is None else h
        skips = enc.skips
        if sample.shape[0] != skips[0].shape[0]:
            raise ValueError(f"h has batch {sample.shape[0]} but the encoding has batch {skips[0].shape[0]}")
        skip_sample = None
        for block in unet.up_blocks:
            res = skips[-len(block.resnets) :]
            skips = skips[: -len(block.resnets)]
            if hasattr(block, "skip_conv"):
                sample, skip_sample = block(sample, res, enc.temb, skip_sample)
            else:
                sample = block(sample, res, enc.temb)
        sample = unet.conv_norm_out(sample)
        sample = unet.conv_act(sample)
        sample = unet.conv_out(sample)
        if skip_sample is not None:
            sample += skip_sample
        if unet.config.time_embedding_type == "fourier":
            sample = sample / enc.t.reshape((sample.shape[0], *([1] * (sample.dim() - 1))))
        sample = sample[:, : self.in_channels] if self.out_channels > self.in_channels else sample
        return sample if self.prediction_type == "epsilon" else self._to_eps(sample, enc)

    def _to_eps(self, out: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """eps from a v or x0 prediction (diffusers' conversions), in the output's dtype."""
        if enc.x_t is None:
            raise ValueError(f"{self.backbone_id} predicts {self.prediction_type}: decode needs the Encoded of its own encode")
        a = self.alphas_cumprod[enc.t.round().long()].view(-1, 1, 1, 1)
        x_t = enc.x_t.float()
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
            eps = a.sqrt() * out.float() + (1 - a).sqrt() * x_t
        else:  # sample: x0 itself
            eps = (x_t - a.sqrt() * out.float()) / (1 - a).sqrt()
        return eps.to(out.dtype)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """Plain noise prediction ``[B, C, S, S]``."""
        return self.decode(self.encode(x_t, t))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        return self.eps(x_t, t)
