"""Training a direction (DESIGN.md 1.5): walk the grid from the top down to t_edit, one
optimiser step per timestep, the loss on the edited prediction P_t(e~).

What does not depend on the direction is computed once per image and cached: the
inverted latent, the unedited trajectory's P_t at every training step, and the
objective's source-side state (e.g. the source image's CLIP embedding).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import __version__
from .backbones.base import Backbone
from .directions import Direction, GlobalDirection, ImplicitDirection, PerStepDirection
from .objectives.base import Objective
from .precision import Precision, check_precision, network_autocast, prepare_backbone_for, to_memory_format
from .sampler import direction_term, generate, model_clips_x0, predict_x0
from .schedule import abar_at, ddim_grid, ddim_train_grid, generation_pairs

__all__ = ["TrainConfig", "TrainOutput", "Trainer", "TrainingData", "DIRECTION_KINDS"]

log = logging.getLogger(__name__)

DIRECTION_KINDS = ("implicit-ddpm", "implicit-adm", "per-step", "global")
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (defaults are the paper's).

    Args:
        t_edit: train where t >= t_edit (the editing interval).
        t_boost: recorded in the direction file for editing; training does not use it.
        n_train_steps: DDIM grid size of the training trajectory.
        n_inv_steps: inversion steps for real images.
        direction_kind: one of ``DIRECTION_KINDS``.
        lr: SGD learning rate (no momentum).
        epochs: passes over the training images.
        batch_size: images per optimiser step; each uses its own source embedding.
        precision: "bf16" runs the U-Net under bf16 autocast in the training steps.
        seed: initialisation and noise seed.
        source_text, target_text: recorded in the direction file.
        t_edit_max: train only where t <= t_edit_max too (hspace's editing band, beyond the paper;
            recorded in the file, so editing uses the same band). None: up to the top.
    """

    t_edit: int = 500
    t_boost: int | None = None
    n_train_steps: int = 40
    n_inv_steps: int = 40
    direction_kind: str = "implicit-ddpm"
    lr: float = 0.5
    epochs: int = 1
    batch_size: int = 1
    precision: Precision = "fp32"
    seed: int = 0
    source_text: str | None = None
    target_text: str | None = None
    progress: bool = True
    t_edit_max: int | None = None

    def __post_init__(self) -> None:
        if self.direction_kind not in DIRECTION_KINDS:
            raise ValueError(f"direction_kind must be one of {DIRECTION_KINDS}, got {self.direction_kind!r}")
        for name in ("n_train_steps", "n_inv_steps", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.t_edit, int) or not 0 <= self.t_edit <= 999:
            raise ValueError(f"t_edit must be an integer timestep in 0..999, got {self.t_edit!r}")
        if self.t_edit_max is not None and (isinstance(self.t_edit_max, bool) or not isinstance(self.t_edit_max, int)
                                            or not self.t_edit <= self.t_edit_max <= 999):
            raise ValueError(f"t_edit_max must be None or an integer timestep in t_edit..999 "
                             f"({self.t_edit}..999), got {self.t_edit_max!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        check_precision(self.precision)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint."""
        d = asdict(self)
        d.pop("progress")
        if d["t_edit_max"] is None:
            d.pop("t_edit_max")  # checkpoints made before the band existed stay resumable
        return d


@dataclass
class TrainingData:
    """Per-image tensors that never change during training (computed once).

    Attributes:
        latents: x_T ``[N, 3, S, S]``.
        sources: the images the edit starts from ``[N, 3, S, S]`` (inputs, or the unedited samples).
        x0_src: ``{t: P_t}`` of the unedited trajectory, each ``[N, 3, S, S]``.
        x_top: the unedited trajectory's x_t at the top of a training band that stops short of
            the grid's top (``TrainConfig.t_edit_max``); None: training starts at ``latents``.
        clip_x0: step with P_t clamped to [-1, 1], as sampling from noise does where the
            model's config asks (:func:`hspace.sampler.model_clips_x0`); never for inverted images.
    """

    latents: torch.Tensor
    sources: torch.Tensor
    x0_src: dict[int, torch.Tensor]
    clip_x0: bool = False
    x_top: torch.Tensor | None = None


@dataclass
class TrainOutput:
    """Result of :meth:`Trainer.train`."""

    direction: Direction
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    resumed_from_step: int = 0


class Trainer:
    """Trains one direction on one backbone with a pluggable objective.

    Args:
        backbone: frozen model.
        objective: e.g. :func:`hspace.objectives.make_clip_objective`; any
            :class:`~hspace.objectives.base.Objective`.
        config: run settings.
        direction: start from this direction instead of a fresh one.
    """

    def __init__(self, backbone: Backbone, objective: Objective, config: TrainConfig, direction: Direction | None = None):
        self.backbone = backbone
        self.objective = objective
        self.config = config
        prepare_backbone_for(config.precision, backbone)  # channels_last weights for bf16 (once, in place)
        self.train_ts = [t for t in ddim_train_grid(config.n_train_steps, config.t_edit, backbone.alphas_cumprod.shape[0] - 1)
                         if config.t_edit_max is None or t <= config.t_edit_max]
        if not self.train_ts:
            raise ValueError(f"t_edit={config.t_edit}" + (f", t_edit_max={config.t_edit_max}" if config.t_edit_max is not None else "")
                             + f" leaves no training step on a {config.n_train_steps}-step grid")
        self.pairs = self._pairs()
        self.direction = direction if direction is not None else self._new_direction()
        if isinstance(self.direction, torch.nn.Module):
            self.direction.to(backbone.device)  # trained where the backbone runs

    def _pairs(self) -> list[tuple[int, int]]:
        """(t, t_next) for every training t, walked from the top; t_next is the grid's next point."""
        grid = ddim_grid(self.config.n_train_steps, self.backbone.alphas_cumprod.shape[0] - 1)
        train = set(self.train_ts)
        return [(t, t_next) for t, t_next in generation_pairs(grid) if t in train]

    def _new_direction(self) -> Direction:
        cfg, bb = self.config, self.backbone
        meta = dict(source_text=cfg.source_text, target_text=cfg.target_text, t_edit=cfg.t_edit,
                    t_boost=cfg.t_boost, n_train_steps=cfg.n_train_steps, t_edit_max=cfg.t_edit_max)
        torch.manual_seed(cfg.seed)
        if cfg.direction_kind.startswith("implicit-"):
            return ImplicitDirection.for_backbone(bb, cfg.direction_kind.split("-", 1)[1], **meta)
        if cfg.direction_kind == "per-step":
            return PerStepDirection.for_backbone(bb, self.train_ts, **meta)
        return GlobalDirection.for_backbone(bb, None, **meta)

    # ---- data that is computed once ------------------------------------------------------
    @torch.no_grad()
    def _unedited_walk(self, latents: torch.Tensor, clip_x0: bool = False
                       ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """P_t of the unedited DDIM trajectory at every training t (float32), clamped with
        ``clip_x0``; and its x_t at the top training t when that is below the grid's top."""
        ac = self.backbone.alphas_cumprod
        out: dict[int, torch.Tensor] = {}
        x = latents.float()
        x_top = None
        grid = ddim_grid(self.config.n_train_steps, ac.shape[0] - 1)
        for t, t_next in generation_pairs(grid):
            if t < self.train_ts[0]:
                break
            if t == self.train_ts[-1] and t != grid[-1]:
                x_top = x.clone()
            tt = torch.full((x.shape[0],), float(t), device=x.device)
            eps = self.backbone.eps(x, tt).float()
            out[t] = predict_x0(x, eps, abar_at(ac, t))
            if clip_x0:
                out[t] = out[t].clamp(-1, 1)
            x = abar_at(ac, t_next).sqrt() * out[t] + direction_term(eps, abar_at(ac, t_next))
        return out, x_top

    def data_from_latents(self, latents: torch.Tensor, sources: torch.Tensor) -> TrainingData:
        """Training data for real images already inverted (``sources`` are the images)."""
        dev = self.backbone.device
        latents, sources = latents.to(dev, torch.float32), sources.to(dev, torch.float32)
        x0s, x_top = self._unedited_walk(latents)
        return TrainingData(latents, sources, x0s, x_top=x_top)

    def data_from_noise(self, n: int) -> TrainingData:
        """Training data from x_T ~ N(0, I) (seeded); each source is its own unedited sample.

        P_t is clamped to [-1, 1] throughout where the model's config asks (``clip_sample``), as
        :meth:`hspace.editor.Editor.sample` does: without it such a model's samples can saturate.
        """
        s = self.backbone.image_size
        g = torch.Generator().manual_seed(self.config.seed)
        latents = torch.randn(n, self.backbone.in_channels, s, s, generator=g).to(self.backbone.device)
        clip = model_clips_x0(self.backbone)
        sources = torch.cat([
            generate(self.backbone, latents[i : i + self.config.batch_size], self.config.n_train_steps, clip_x0=clip)
            for i in range(0, n, self.config.batch_size)
        ])
        x0s, x_top = self._unedited_walk(latents, clip)
        return TrainingData(latents, sources, x0s, clip, x_top)

    # ---- checkpoints --------------------------------------------------------------------
    def _save_checkpoint(self, path: Path, state: dict[str, Any], opt: torch.optim.Optimizer) -> None:
        tensors = {f"direction.{k}": v.detach().cpu().contiguous() for k, v in self.direction.state_dict().items()}
        opt_sd = opt.state_dict()
        for pid, st in opt_sd["state"].items():
            for name, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optimizer.{pid}.{name}"] = v.detach().cpu().contiguous()
        header = {"format": CHECKPOINT_FORMAT, "hspace_version": __version__, "config": self.config.identity(),
                  "backbone_id": self.backbone.backbone_id, "param_groups": opt_sd["param_groups"], **state}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"hspace_checkpoint": json.dumps(header)})
        tmp.replace(path)  # never leave a half-written checkpoint behind

    def _load_checkpoint(self, path: Path, opt: torch.optim.Optimizer) -> dict[str, Any]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = json.loads((f.metadata() or {})["hspace_checkpoint"])
        except Exception as err:
            raise ValueError(f"{path}: not an hspace training checkpoint ({err}); delete it or pass another path") from err
        if header.get("config") != self.config.identity() or header.get("backbone_id") != self.backbone.backbone_id:
            raise ValueError(
                f"{path}: checkpoint was made with other settings ({header.get('config')}, backbone "
                f"{header.get('backbone_id')}); resume with the same settings or choose a new checkpoint path"
            )
        tensors = load_file(str(path))
        self.direction.load_state_dict({k[len("direction."):]: v for k, v in tensors.items() if k.startswith("direction.")})
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, pid, name = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        opt.load_state_dict({"state": opt_state, "param_groups": header["param_groups"]})
        return header

    # ---- the loop -----------------------------------------------------------------------
    def train(self, data: TrainingData, checkpoint: str | Path | None = None, resume: bool = True) -> TrainOutput:
        """Train the direction on ``data``; checkpoint after every batch when a path is given.

        A run that finds ``checkpoint`` with the same settings continues where it stopped
        (at the next batch); with ``resume=False`` an existing checkpoint is an error.
        """
        cfg, bb = self.config, self.backbone
        ac = bb.alphas_cumprod
        n = data.latents.shape[0]
        batches = [slice(i, min(i + cfg.batch_size, n)) for i in range(0, n, cfg.batch_size)]
        params = [p for p in self.direction.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the direction has no trainable parameters")
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.0)
        done, losses, start_step = 0, [], 0
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.exists():
            if not resume:
                raise FileExistsError(f"{ckpt} exists; pass resume=True (CLI: --resume) to continue it, or another path")
            header = self._load_checkpoint(ckpt, opt)
            done, losses, start_step = header["batches_done"], header["losses"], header["step"]
            log.info("resumed from %s at batch %d (step %d)", ckpt, done, start_step)
        if hasattr(self.direction, "train"):
            self.direction.train()
        states = [self.objective.prepare(data.sources[sl]) for sl in batches]  # source side once per image
        total = cfg.epochs * len(batches)
        step, t_start = start_step, time.perf_counter()
        bar = tqdm(total=total * len(self.pairs), initial=done * len(self.pairs), desc="train", unit="step",
                   disable=not cfg.progress)
        for k in range(done, total):
            sl = batches[k % len(batches)]
            x = (data.latents if data.x_top is None else data.x_top)[sl]  # the band's top
            for t, t_next in self.pairs:
                a, a_next = abar_at(ac, t), abar_at(ac, t_next)
                tt = torch.full((x.shape[0],), float(t), device=x.device)
                with network_autocast(cfg.precision, x.device):
                    with torch.no_grad():
                        enc = bb.encode(to_memory_format(x, cfg.precision), tt)
                        eps = bb.decode(enc).float()
                    dh = self.direction(enc.h, tt, enc.temb)
                    eps_edit = bb.decode(enc, enc.h + dh.to(enc.h.dtype)).float()
                p_edit = predict_x0(x, eps_edit, a)
                if data.clip_x0:
                    p_edit = p_edit.clamp(-1, 1)
                out = self.objective(p_edit, data.x0_src[t][sl], states[k % len(batches)])
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(f"loss became {out.loss.item()} at t={t}; lower the learning rate (now {cfg.lr})")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                losses.append(float(out.loss.detach()))
                x = a_next.sqrt() * p_edit.detach() + direction_term(eps, a_next)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", t=t)
            if ckpt is not None:
                self._save_checkpoint(ckpt, {"batches_done": k + 1, "losses": losses, "step": step}, opt)
        bar.close()
        seconds = time.perf_counter() - t_start
        if hasattr(self.direction, "eval"):
            self.direction.eval()
        self._record(data, step, seconds, losses)
        return TrainOutput(self.direction, losses, seconds, step, start_step)

    def _record(self, data: TrainingData, steps: int, seconds: float, losses: list[float]) -> None:
        cfg, bb = self.config, self.backbone
        schedule = dict(getattr(bb, "schedule_config", None) or {"num_train_timesteps": int(bb.alphas_cumprod.shape[0])})
        extra = {**self.direction.meta.extra, "training": {
            "optimizer_steps": steps, "images": int(data.latents.shape[0]), "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "precision": cfg.precision, "seconds": round(seconds, 2),
            "final_loss": losses[-1] if losses else None, "objective": type(self.objective).__name__,
            "train_timesteps": self.train_ts,
        }}
        self.direction.meta = self.direction.meta.replace(
            backbone_id=bb.backbone_id, h_shape=tuple(bb.h_shape), source_text=cfg.source_text,
            target_text=cfg.target_text, t_edit=cfg.t_edit, t_boost=cfg.t_boost,
            n_train_steps=cfg.n_train_steps, schedule=schedule, extra=extra,
        )
