"""Attribute probe: a small CNN that predicts every toy-world factor from a 64x64 image.

Used for evaluation only: did an edit change the target factor, what else did it change,
and 128-d features for a Frechet distance between two image sets ("probe FID",
:func:`probe_fid`). It never sees edited images during training: it learns from procedural
renders (:class:`~hspace.toyworld.dataset.ToyFaceStream`, seed :data:`TRAIN_SEED`) and is
scored on held-out seeds (:data:`EVAL_SEED`).

Architecture (:class:`ProbeConfig`): stem conv at 64x64, four stages (stride-2 conv + conv,
BatchNorm + SiLU) down to 4x4, flatten, a linear feature layer (``features(x)``), then one head
per factor: a logit for each binary factor (eyes_open, glasses, hat, beard), a softmax for each
categorical one (hair_color, hair_style, skin_tone, face_shape, background) and a regression for
each continuous one (smile, dx, dy, scale, tilt; predicted in [-1, 1] over the factor's range).

Training (:func:`train_probe`): AdamW, cosine schedule with warm-up, bf16 autocast +
channels_last on CPU, batches of consecutive dataset items (batch ``k`` is items
``[k*B, (k+1)*B)`` of the training seed, so a resumed run sees exactly the data an
uninterrupted one would). Checkpoints are one safetensors file (model, optimizer state and a
JSON record in the metadata), written atomically; no pickle anywhere.

Shipped model: ``src/hspace/data/models/toy-probe/`` (``model.safetensors`` in fp16 +
``config.json``), loaded by :func:`load_probe`. Train it with ``hspace toyworld train-probe``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .faces import FACTOR_NAMES, FACTORS
from .loop import StepClock

__all__ = [
    "AttributeProbe",
    "ProbeConfig",
    "ModelNotTrainedError",
    "PROBE_DIR",
    "TRAIN_SEED",
    "EVAL_SEED",
    "BINARY",
    "CATEGORICAL",
    "CONTINUOUS",
    "PROBE_BARS",
    "probe_loss",
    "train_probe",
    "evaluate_probe",
    "export_probe",
    "load_probe",
    "frechet_distance",
    "probe_fid",
    "save_training_checkpoint",
    "load_training_checkpoint",
]

#: Where the shipped models live (inside the package, so they install with it).
MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
PROBE_DIR = MODELS_DIR / "toy-probe"
TRAIN_SEED = 0
EVAL_SEED = 1_000_003  # held out: never used for training

BINARY: tuple[str, ...] = tuple(n for n in FACTOR_NAMES if FACTORS[n]["type"] == "binary")
CATEGORICAL: dict[str, int] = {n: len(FACTORS[n]["values"]) for n in FACTOR_NAMES if FACTORS[n]["type"] == "categorical"}
CONTINUOUS: dict[str, tuple[float, float]] = {
    n: (float(FACTORS[n]["range"][0]), float(FACTORS[n]["range"][1]))
    for n in FACTOR_NAMES if FACTORS[n]["type"] == "continuous"
}
_INDEX = {n: i for i, n in enumerate(FACTOR_NAMES)}  # position in the compact label vector

#: Quality bars of the shipped probe on held-out images (accuracy, or R^2 for continuous factors).
PROBE_BARS: dict[str, float] = {"eyes_open": 0.98, "glasses": 0.98, "hat": 0.98, "beard": 0.98,
                                "hair_color": 0.98, "smile": 0.95}

TRAIN_COMMAND = "hspace toyworld train-probe"


class ModelNotTrainedError(FileNotFoundError):
    """A built-in toy-world model has no weights yet (the message names the command that trains it)."""


# --------------------------------------------------------------------------- model


@dataclass
class ProbeConfig:
    """Architecture of :class:`AttributeProbe`."""

    image_size: int = 64
    stem: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 128)
    feature_dim: int = 128

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProbeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "channels" in kw:
            kw["channels"] = tuple(int(c) for c in kw["channels"])
        return cls(**kw)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class AttributeProbe(nn.Module):
    """Predicts every toy-world factor from ``[B, 3, 64, 64]`` images in ``[-1, 1]``.

    ``forward(x)`` returns the raw head outputs (dict: binary ``[B]`` logits, categorical
    ``[B, K]`` logits, continuous ``[B]`` values in [-1, 1] over the factor's range);
    :meth:`features` the ``[B, feature_dim]`` feature vector; :meth:`predict` decoded factors.
    """

    def __init__(self, config: Optional[ProbeConfig] = None):
        super().__init__()
        self.config = config = config or ProbeConfig()
        layers: list[nn.Module] = [_conv(3, config.stem, 1)]
        cin = config.stem
        for c in config.channels:
            layers += [_conv(cin, c, 2), _conv(c, c, 1)]
            cin = c
        self.trunk = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, config.feature_dim), nn.SiLU())
        self.heads = nn.ModuleDict()
        for n in BINARY:
            self.heads[n] = nn.Linear(config.feature_dim, 1)
        for n, k in CATEGORICAL.items():
            self.heads[n] = nn.Linear(config.feature_dim, k)
        for n in CONTINUOUS:
            self.heads[n] = nn.Linear(config.feature_dim, 1)

    def _check(self, x: torch.Tensor) -> None:
        s = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"expected images [B, 3, {s}, {s}] in [-1, 1], got shape {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, feature_dim]`` features (for probe FID)."""
        self._check(x)
        return self.feature(self.trunk(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        out: dict[str, torch.Tensor] = {}
        for n, head in self.heads.items():
            y = head(h)
            out[n] = y if n in CATEGORICAL else y.squeeze(-1)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Decoded factors: binary -> bool ``[B]``, categorical -> class index ``[B]`` (into
        ``FACTORS[name]["values"]``), continuous -> float ``[B]`` in the factor's own units.
        Also ``"<name>_prob"`` for binary factors (probability of True)."""
        was = self.training
        self.eval()
        try:
            outs = [self(x[i:i + batch_size].float()) for i in range(0, len(x), batch_size)]
        finally:
            self.train(was)
        raw = {k: torch.cat([o[k] for o in outs]).float() for k in outs[0]}
        return decode(raw)

    def predict_factors(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """One dict per image with every factor decoded to its value (names for categories)."""
        p = self.predict(x)
        rows = []
        for i in range(len(x)):
            row: dict[str, Any] = {}
            for n in FACTOR_NAMES:
                v = p[n][i].item()
                row[n] = FACTORS[n]["values"][int(v)] if n in CATEGORICAL else v
            rows.append(row)
        return rows


def decode(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw head outputs -> decoded factors (see :meth:`AttributeProbe.predict`)."""
    out: dict[str, torch.Tensor] = {}
    for n in FACTOR_NAMES:
        y = raw[n]
        if n in BINARY:
            out[n] = y > 0
            out[n + "_prob"] = torch.sigmoid(y)
        elif n in CATEGORICAL:
            out[n] = y.argmax(-1)
        else:
            lo, hi = CONTINUOUS[n]
            out[n] = lo + (y.clamp(-1, 1) + 1) * 0.5 * (hi - lo)
    return out


def targets_from_labels(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Compact label vectors ``[B, 14]`` (:func:`~hspace.toyworld.faces.factors_to_vector`) ->
    per-head targets (binary float 0/1, categorical long, continuous in [-1, 1])."""
    t: dict[str, torch.Tensor] = {}
    for n in FACTOR_NAMES:
        v = labels[:, _INDEX[n]]
        if n in BINARY:
            t[n] = v.float()
        elif n in CATEGORICAL:
            t[n] = v.round().long()
        else:
            lo, hi = CONTINUOUS[n]
            t[n] = (2.0 * (v - lo) / (hi - lo) - 1.0).float()
    return t


REGRESSION_WEIGHT = 4.0


def probe_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor,
               per_head: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """Sum over heads: BCE (binary), cross-entropy (categorical), ``REGRESSION_WEIGHT`` x MSE
    (continuous, on the [-1, 1] scale)."""
    t = targets_from_labels(labels)
    parts: dict[str, torch.Tensor] = {}
    for n in FACTOR_NAMES:
        y = outputs[n].float()
        if n in BINARY:
            parts[n] = F.binary_cross_entropy_with_logits(y, t[n])
        elif n in CATEGORICAL:
            parts[n] = F.cross_entropy(y, t[n])
        else:
            parts[n] = REGRESSION_WEIGHT * F.mse_loss(y, t[n])
    total = torch.stack(list(parts.values())).sum()
    if per_head:
        return total, {k: float(v.detach()) for k, v in parts.items()}
    return total


# --------------------------------------------------------------------------- checkpoints (shared with clip_train)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; shipped files must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_training_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             record: dict[str, Any], extra: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """One safetensors file: ``model.*`` (state dict), ``optim.<i>.<key>`` (optimizer state) and
    ``extra.*`` tensors; ``record`` (JSON-able: step, settings, ...) and the optimizer's param
    groups go into the metadata. Written to a temporary file and renamed (atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors["model." + k] = v.detach().contiguous().clone()
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if not isinstance(v, torch.Tensor):
                v = torch.tensor(v)
            tensors[f"optim.{idx}.{k}"] = v.detach().contiguous().clone()
    for k, v in (extra or {}).items():
        tensors["extra." + k] = v.detach().contiguous().clone()
    meta = {"record": json.dumps(record, sort_keys=True), "param_groups": json.dumps(opt["param_groups"]),
            "format": "hspace-training-checkpoint-1"}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    write_json_atomic(record, path.with_suffix(".json"))  # human-readable copy; the metadata is authoritative
    return path


def load_training_checkpoint(path: str | Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None
                             ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load what :func:`save_training_checkpoint` wrote into ``model`` (and ``optimizer``).
    Returns ``(record, extra_tensors)``."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != "hspace-training-checkpoint-1":
        raise ValueError(f"{path} is not an hspace training checkpoint")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return json.loads(meta["record"]), extra


def resume_counters(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, settings: Any,
                    resume: bool, log: Callable[[str], None], also_match: Optional[dict[str, Any]] = None
                    ) -> tuple[int, int, float]:
    """``(step, examples, seconds)`` a training run starts from: zeros for a new run; else the
    checkpoint's, after loading it into ``model`` and ``optimizer``. An existing checkpoint
    without ``resume`` is an error (nothing is overwritten by accident), and so is one whose
    ``settings._MUST_MATCH`` fields (or the ``also_match`` entries) differ from this run's."""
    if checkpoint.exists() and not resume:
        raise FileExistsError(f"{checkpoint} exists; continue it with --resume, or choose another checkpoint path")
    if not checkpoint.exists():
        return 0, 0, 0.0
    rec, _ = load_training_checkpoint(checkpoint, model, optimizer)
    old = rec.get("settings", {})
    # a field added after the checkpoint was written counts as its default (the run had none)
    defaults = {f.name: f.default for f in dataclasses.fields(settings)} if dataclasses.is_dataclass(settings) else {}
    bad = [k for k in settings._MUST_MATCH if old.get(k, defaults.get(k)) != getattr(settings, k)]
    bad += [k for k, v in (also_match or {}).items() if old.get(k) != v]
    if bad:
        raise ValueError(f"{checkpoint} was trained with different settings ({', '.join(bad)}); "
                         "resume with the same settings or use another checkpoint path")
    step = int(rec["step"])
    log(f"resumed {checkpoint} at step {step}/{settings.steps}")
    return step, int(rec["examples"]), float(rec["seconds"])


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")


# --------------------------------------------------------------------------- data


def _batches(seed: int, batch_size: int, start_batch: int, supersample: int, workers: int,
             stop_batch: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Batches ``start_batch, start_batch + 1, ...`` of consecutive items of ``seed`` (identical for
    any number of workers)."""
    from torch.utils.data import DataLoader

    from .dataset import ToyFaceStream

    stream = ToyFaceStream(seed=seed, supersample=supersample, captions=False, start=start_batch * batch_size,
                           stop=None if stop_batch is None else stop_batch * batch_size, batch_size=batch_size)
    if workers <= 0:
        yield from stream
    else:
        yield from DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4,
                              persistent_workers=False)


# --------------------------------------------------------------------------- training


@dataclass
class ProbeTrainSettings:
    """Settings of :func:`train_probe` (those marked * must match when resuming)."""

    steps: int = 2000  # * planned length (the schedule); --max-minutes may stop earlier
    batch_size: int = 64  # *
    lr: float = 2e-3  # *
    weight_decay: float = 1e-4  # *
    warmup: int = 100  # *
    seed: int = TRAIN_SEED  # * data seed (training items)
    init_seed: int = 0  # * weight init
    supersample: int = 3  # * rendering (3 is ~1.6x faster than 4 and looks the same at 64x64)
    augment: bool = True  # * mild noise / blur, so generated (not perfectly crisp) images are read too
    precision: str = "bf16"
    workers: int = 1
    checkpoint_every: int = 250
    log_every: int = 50
    config: ProbeConfig = field(default_factory=ProbeConfig)

    _MUST_MATCH = ("steps", "batch_size", "lr", "weight_decay", "warmup", "seed", "init_seed", "supersample",
                   "augment")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"}
        d["config"] = self.config.to_dict()
        return d


def augment(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Mild, label-preserving degradations (deterministic in ``seed``): per image, a blur of random
    strength (3x3 box, mixed in with weight U(0, 1)) for half of the images, and Gaussian noise with
    sigma U(0, 0.06) (on the [-1, 1] scale)."""
    g = torch.Generator().manual_seed(int(seed))
    b = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = torch.rand(b, 1, 1, 1, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) < 0.5)
    sigma = torch.rand(b, 1, 1, 1, generator=g) * 0.06
    return x + w * (blurred - x) + sigma * torch.randn(x.shape, generator=g)


def _make_optimizer(model: nn.Module, s: ProbeTrainSettings) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.99))


def train_probe(settings: ProbeTrainSettings, checkpoint: str | Path, *, max_minutes: Optional[float] = None,
                stop_after: Optional[int] = None, resume: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) the probe; the checkpoint at ``checkpoint`` is resumed when it exists
    (with ``resume=False`` an existing checkpoint is an error).

    Stops at ``settings.steps``, after ``max_minutes`` of wall time, or after ``stop_after`` steps
    of THIS call, whichever comes first; a checkpoint is written every ``checkpoint_every`` steps
    and at the end. Returns a summary (steps done, examples/s, last losses, finished flag).
    """
    s = settings
    checkpoint = Path(checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.init_seed)
        model = AttributeProbe(s.config)
    model = model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(model, s)
    step, examples, seconds = resume_counters(checkpoint, model, opt, s, resume, log,
                                              also_match={"config": s.config.to_dict()})
    model.train()
    clock = StepClock(s.steps, s.log_every, s.checkpoint_every, max_minutes, stop_after)
    seconds_before = seconds

    def save() -> None:
        rec = {"kind": "toy-probe", "step": step, "examples": examples,
               "seconds": seconds_before + time.perf_counter() - clock.t_start,
               "settings": s.to_dict(), "finished": step >= s.steps}
        save_training_checkpoint(checkpoint, model, opt, rec)

    last: dict[str, float] = {}
    if step < s.steps:
        for batch in _batches(s.seed, s.batch_size, step, s.supersample, s.workers, stop_batch=s.steps):
            x = batch["image"]
            if s.augment:
                x = augment(x, seed=s.init_seed * 1_000_003 + step)
            x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s.steps, s.lr, s.warmup)
            with autocast(s.precision):
                out = model(x)
            loss, parts = probe_loss(out, batch["labels"], per_head=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            examples += len(x)
            last = {"loss": float(loss.detach()), **parts}
            rate, save_now, stop = clock.after_step(step, len(x))
            if rate is not None:
                log(f"step {step}/{s.steps}  loss {last['loss']:.4f}  {rate:.0f} examples/s")
            if save_now:
                save()
            if stop:
                break
    return {"step": step, "steps": s.steps, "finished": step >= s.steps, "examples": examples,
            "examples_per_s_this_run": clock.per_second(s.batch_size), "last": last,
            "checkpoint": str(checkpoint)}


# --------------------------------------------------------------------------- evaluation


def render_eval_set(n: int, seed: int = EVAL_SEED, supersample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out images ``[n, 3, 64, 64]`` and their compact labels ``[n, 14]``."""
    from .dataset import render_faces
    from .faces import factors_for, factors_to_vector

    fs = [factors_for(seed, i) for i in range(n)]
    x = render_faces(fs, 64, supersample)
    y = torch.from_numpy(np.stack([factors_to_vector(f) for f in fs]))
    return x, y


def factor_metrics(pred: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per factor: ``accuracy`` (binary / categorical) or ``r2`` and ``mae`` (continuous)."""
    out: dict[str, dict[str, float]] = {}
    for n in FACTOR_NAMES:
        truth = labels[:, _INDEX[n]]
        if n in BINARY:
            out[n] = {"accuracy": float((pred[n].float() == truth.round()).float().mean())}
        elif n in CATEGORICAL:
            out[n] = {"accuracy": float((pred[n] == truth.round().long()).float().mean())}
        else:
            p = pred[n].float()
            ss_res = float(((p - truth) ** 2).sum())
            ss_tot = float(((truth - truth.mean()) ** 2).sum())
            out[n] = {"r2": 1.0 - ss_res / max(ss_tot, 1e-12), "mae": float((p - truth).abs().mean())}
    return out


def evaluate_probe(model: AttributeProbe, n: int = 2000, seed: int = EVAL_SEED,
                   images: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> dict[str, Any]:
    """Score ``model`` on ``n`` held-out procedural images: per-factor accuracy / R^2, and whether
    each quality bar (:data:`PROBE_BARS`) is met."""
    x, y = images if images is not None else render_eval_set(n, seed)
    metrics = factor_metrics(model.predict(x), y)
    bars = {}
    for name, bar in PROBE_BARS.items():
        value = metrics[name].get("accuracy", metrics[name].get("r2"))
        bars[name] = {"bar": bar, "value": value, "passed": bool(value >= bar)}
    return {"n": int(len(x)), "seed": int(seed), "factors": metrics, "bars": bars,
            "passed": all(b["passed"] for b in bars.values())}


# --------------------------------------------------------------------------- export / load


def export_probe(model: AttributeProbe, folder: str | Path = PROBE_DIR, info: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model.safetensors`` (fp16 floats) + ``config.json`` (architecture, head layout,
    ``info`` such as evaluation results and training record) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
          for k, v in model.state_dict().items()}
    _atomic_write(folder / "model.safetensors", lambda tmp: save_file(sd, tmp, metadata={"format": "pt"}))
    config = {"model_type": "hspace-toy-attribute-probe", "config": model.config.to_dict(),
              "heads": {"binary": list(BINARY), "categorical": {n: FACTORS[n]["values"] for n in CATEGORICAL},
                        "continuous": {n: list(r) for n, r in CONTINUOUS.items()}},
              "input": "[B, 3, 64, 64] RGB in [-1, 1]", **(info or {})}
    write_json_atomic(config, folder / "config.json")
    return folder


def load_probe(folder: str | Path = PROBE_DIR, device: torch.device | str = "cpu") -> AttributeProbe:
    """The shipped (or a given) probe in eval mode, float32.

    Raises:
        ModelNotTrainedError: no weights there yet; the message names the command that trains them.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise ModelNotTrainedError(
            f"the toy-world attribute probe is not trained yet (no model.safetensors + config.json in {folder}). "
            f"Train it with `{TRAIN_COMMAND}` (about 15-20 minutes on 2 CPU cores); it writes {PROBE_DIR}.")
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = AttributeProbe(ProbeConfig.from_dict(meta["config"]))
    sd = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(device).eval()


# --------------------------------------------------------------------------- probe FID


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. The one implementation is
    :func:`hspace.evaluation.realism.frechet_distance` (torchmetrics, float64); this name stays for
    existing callers."""
    from ..evaluation.realism import frechet_distance as _frechet_distance

    return _frechet_distance(a, b)


@torch.no_grad()
def probe_fid(probe: AttributeProbe, images_a: torch.Tensor, images_b: torch.Tensor, batch_size: int = 256) -> float:
    """Frechet distance between probe features of two image sets ``[N, 3, 64, 64]`` in [-1, 1]."""
    probe.eval()

    def feats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([probe.features(x[i:i + batch_size].float()) for i in range(0, len(x), batch_size)])

    return frechet_distance(feats(images_a), feats(images_b))
