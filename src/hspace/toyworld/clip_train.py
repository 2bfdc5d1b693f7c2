"""Small CLIP for the toy world: a real ``transformers`` ``CLIPModel`` trained contrastively on
procedural faces and their captions, with its own shipped tokenizer.

Because it is an ordinary ``CLIPModel`` + ``CLIPTokenizer`` saved with ``save_pretrained``, it
sits behind the same :class:`~hspace.encoders.TransformersCLIP` interface as OpenAI's CLIP
(``TransformersCLIP("src/hspace/data/models/toy-clip")`` or :func:`load_toy_clip`), so
``hspace train --source 'face' --target 'smiling face'`` works with it unchanged.

* Tokenizer (:func:`write_tokenizer_files`): CLIP's byte-level BPE format (``vocab.json`` +
  ``merges.txt``) with a vocabulary made from the caption vocabulary of
  :mod:`hspace.toyworld.captions`: BPE merges are learned over the caption words until every
  word is one token (``smiling</w>``), and the 512 byte tokens (with and without ``</w>``) stay
  as fall-backs, so any text tokenizes without unknowns.
* Model (:class:`ClipSettings`): ViT 64x64 input, 8x8 patches (64 + 1 tokens), width 128,
  4 layers; text transformer width 128, 4 layers, 48 positions; projection 128.
* Data (:class:`ClipPairs`): batch ``k`` of seed ``S`` is a pure function of ``(S, k)``: a share of
  the items are *twins*, a face and the same face with ONE factor changed
  (:func:`~hspace.toyworld.faces.with_factor`), both captioned with wording that mentions that
  factor: hard negatives that teach the exact distinctions the zero-shot test asks for.
* Loss: CLIP's symmetric InfoNCE with the learnable temperature (``logit_scale``, clamped to 100),
  plus ``aux_weight`` x an auxiliary factor loss: small linear heads, shared by both towers, read
  each face's known factors from its image embedding and the factors its caption states from the
  text embedding (the probe's loss). Contrastive loss alone left the first run blind
  to the two subtle factors (smile and face shape at chance after 3000 steps: the captions never
  forced the vision tower to look at a 3-pixel mouth curve before the easy factors were learned);
  the shared heads make both embeddings carry every factor on the same axes early, and the
  contrastive loss refines the alignment. The heads are dropped at export: the shipped model is a plain
  ``CLIPModel``. Twins of the hard factors are drawn ``hard_factor_weight`` times as often.
* Evaluation (:func:`evaluate_zero_shot`): for held-out faces, choose among captions that differ
  in ONE factor; per-factor accuracy, for short captions ("a face with red hair" vs "a face
  with blond hair") and for full descriptions (every factor mentioned).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .captions import caption_with_mentions, describe
from .faces import FACTOR_NAMES, FACTORS, FaceFactors, factors_for, factors_to_vector, item_rng, with_factor
from .loop import StepClock
from .probe import (EVAL_SEED, MODELS_DIR, ModelNotTrainedError, autocast, lr_at,
                    resume_counters, save_training_checkpoint, write_json_atomic)

__all__ = [
    "CLIP_DIR",
    "TOY_CLIP_NAME",
    "ZERO_SHOT_FACTORS",
    "ClipSettings",
    "ClipPairs",
    "caption_words",
    "write_tokenizer_files",
    "build_tokenizer",
    "build_clip_model",
    "clip_batch",
    "clip_loss",
    "train_clip",
    "export_clip",
    "load_toy_clip",
    "evaluate_zero_shot",
]

CLIP_DIR = MODELS_DIR / "toy-clip"
TOY_CLIP_NAME = "toy-clip"
TRAIN_COMMAND = "hspace toyworld train-clip"
CLIP_TRAIN_SEED = 0
MAX_LENGTH = 48  # the longest full description is ~40 tokens with BOS/EOS
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# same split as CLIPTokenizer's pre-tokenizer (letters, digits, other non-space runs)
_WORD_RE = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")

# --------------------------------------------------------------------------- tokenizer


def _byte_to_unicode() -> dict[int, str]:
    from ..encoders import _byte_to_unicode as b2u

    return b2u()


def caption_words(n_samples: int = 20000) -> list[str]:
    """Every word the caption generator uses (sorted): words of ``n_samples`` random captions of
    seed 0, of the full description of each face, and of every one-factor variation of it."""
    words: Counter[str] = Counter()

    def add(text: str) -> None:
        words.update(w for w in _WORD_RE.findall(text.lower()))

    for i in range(n_samples):
        f = factors_for(0, i)
        add(caption_with_mentions(f, item_rng(0, i, 1))[0])
    base = factors_for(0, 0)
    for f in [base] + [with_factor(base, **{k: v}) for k, v in _all_variations()]:
        add(describe(f))
        for mention in _MENTIONS.values():
            add(_short_caption(f, mention))
    return sorted(words)


def _all_variations() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("smile", s) for s in (-0.8, -0.4, 0.0, 0.4, 0.8)]
    for k in ("eyes_open", "glasses", "hat", "beard"):
        out += [(k, True), (k, False)]
    for k in ("hair_color", "hair_style", "skin_tone", "face_shape", "background"):
        out += [(k, v) for v in FACTORS[k]["values"]]
    return out


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (most frequent pair first, ties broken alphabetically) until every word is one symbol."""
    b2u = _byte_to_unicode()
    seqs = []
    for w in words:
        chars = [b2u[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        seqs.append(chars)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for j, s in enumerate(seqs):
            if len(s) < 2:
                continue
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[j] = out


def write_tokenizer_files(folder: str | Path, words: Optional[list[str]] = None, max_length: int = MAX_LENGTH) -> dict[str, int]:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``
    for a ``CLIPTokenizer`` whose whole-word tokens are the caption words (``words``, default
    :func:`caption_words`) with byte fall-backs. Returns the vocabulary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = caption_words() if words is None else sorted(set(words))
    b2u = _byte_to_unicode()
    chars = [b2u[b] for b in range(256)]
    vocab: dict[str, int] = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    merges = _learn_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer", "bos_token": BOS, "eos_token": EOS,
         "pad_token": EOS, "unk_token": EOS}), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}), encoding="utf-8")
    return vocab


def build_tokenizer(folder: str | Path):
    """A ``CLIPTokenizer`` from the files in ``folder`` (written there first when missing)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if not (folder / "vocab.json").is_file():
        write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder))


# --------------------------------------------------------------------------- model


@dataclass
class ClipSettings:
    """Model and training settings (those in ``_MUST_MATCH`` must match when resuming)."""

    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    patch_size: int = 8
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    projection_dim: int = 128
    max_length: int = MAX_LENGTH
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 200
    twin_share: float = 0.5  # share of each batch made of (face, one-factor-changed face) pairs
    seed: int = CLIP_TRAIN_SEED
    init_seed: int = 0
    supersample: int = 3
    aux_weight: float = 0.5  # auxiliary factor loss on the image embedding (0: pure contrastive)
    hard_factor_weight: float = 6.0  # twins of HARD_FACTORS drawn this many times as often (3: zero-shot smile 0.89)
    # Gaussian noise (std uniform in [0, noise_aug]) on a share of each batch's images: directions
    # train on the CLIP's view of P_t, which on toy-faces is that noisy at t >= 500 (docs/toyworld.md)
    noise_aug: float = 0.5
    noise_aug_share: float = 0.5
    precision: str = "bf16"
    workers: int = 1
    checkpoint_every: int = 200
    log_every: int = 25

    _MUST_MATCH = ("vision_width", "vision_layers", "vision_heads", "patch_size", "text_width", "text_layers",
                   "text_heads", "projection_dim", "max_length", "steps", "batch_size", "lr", "weight_decay",
                   "warmup", "twin_share", "seed", "init_seed", "supersample", "aux_weight", "hard_factor_weight",
                   "noise_aug", "noise_aug_share")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def build_clip_model(s: ClipSettings, tokenizer, seed: int = 0):
    """A freshly initialised ``CLIPModel`` for ``tokenizer`` (seeded, global RNG untouched)."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=len(tokenizer), hidden_size=s.text_width, intermediate_size=4 * s.text_width,
                num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
                max_position_embeddings=s.max_length, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=s.vision_width, intermediate_size=4 * s.vision_width, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.vision_heads, image_size=64, patch_size=s.patch_size)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=s.projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model


# --------------------------------------------------------------------------- data

# factor -> the mention key captions.py uses for it
_MENTIONS = {"smile": "smile", "eyes_open": "eyes", "glasses": "glasses", "hair_color": "hair_color",
             "hair_style": "hair_style", "skin_tone": "skin_tone", "face_shape": "face_shape", "hat": "hat",
             "beard": "beard", "background": "background"}
#: Factors the zero-shot test covers (pose is never captioned).
ZERO_SHOT_FACTORS: tuple[str, ...] = tuple(_MENTIONS)
#: Factors that are small in the image (a mouth curve, the jaw outline): their twins come more often.
HARD_FACTORS: tuple[str, ...] = ("smile", "face_shape")
_SMILE_GROUPS = (-0.4, 0.0, 0.4)  # frowning / neutral / smiling (zero-shot candidates)


def _smile_group(smile: float) -> int:
    return 0 if smile < -0.2 else (1 if smile < 0.2 else 2)


def _short_caption(f: FaceFactors, mention: str) -> str:
    """'a face' plus the phrase for one factor, in the generator's canonical wording."""
    from .captions import _assemble, _phrases

    return _assemble(f, _phrases(f, None, {mention}), None)


def _flip(f: FaceFactors, factor: str, rng: np.random.Generator) -> FaceFactors:
    """``f`` with ``factor`` changed to another value (smile: into another frown/neutral/smile group)."""
    if factor == "smile":
        g = _smile_group(f.smile)
        other = [i for i in range(3) if i != g][int(rng.integers(2))]
        lo, hi = [(-1.0, -0.25), (-0.15, 0.15), (0.25, 1.0)][other]
        return with_factor(f, smile=float(lo + rng.random() * (hi - lo)))
    if factor in ("eyes_open", "glasses", "hat", "beard"):
        return with_factor(f, **{factor: not getattr(f, factor)})
    values = [v for v in FACTORS[factor]["values"] if v != getattr(f, factor)]
    return with_factor(f, **{factor: values[int(rng.integers(len(values)))]})


def _caption_mentioning(f: FaceFactors, mention: str, rng: np.random.Generator) -> tuple[str, set[str]]:
    for _ in range(30):
        text, mentioned = caption_with_mentions(f, rng)
        if mention in mentioned:
            return text, mentioned
    return _short_caption(f, mention), {mention}


_FACTOR_OF_MENTION = {m: f for f, m in _MENTIONS.items()}


def _mention_mask(mentioned: set[str]) -> np.ndarray:
    """Which entries of the label vector (:data:`~hspace.toyworld.faces.FACTOR_NAMES`) a caption states."""
    named = {_FACTOR_OF_MENTION[m] for m in mentioned}
    return np.array([n in named for n in FACTOR_NAMES])


def _twin_factor_probs(hard_factor_weight: float) -> np.ndarray:
    w = np.array([hard_factor_weight if f in HARD_FACTORS else 1.0 for f in ZERO_SHOT_FACTORS])
    return w / w.sum()


def clip_batch(seed: int, batch: int, batch_size: int, twin_share: float = 0.5, supersample: int = 3,
               hard_factor_weight: float = 1.0) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """Batch ``batch`` of the pair stream of ``seed`` (a pure function): images ``[B, 3, 64, 64]``
    in [-1, 1], one caption per image, the factor label vectors ``[B, 14]``
    (:func:`~hspace.toyworld.faces.factors_to_vector`) and which of those factors each caption
    states (bool ``[B, 14]``). The first ``round(B * twin_share / 2)``
    items are faces whose twin (the same face with one factor changed; :data:`HARD_FACTORS`
    ``hard_factor_weight`` times as likely as the others) follows right after them; both captions
    mention that factor. 10 % of single faces get their full description."""
    from .dataset import render_faces

    probs = _twin_factor_probs(hard_factor_weight)
    n_pairs = int(round(batch_size * twin_share / 2))
    faces: list[FaceFactors] = []
    texts: list[str] = []
    mentions: list[set[str]] = []
    base = batch * batch_size
    for j in range(n_pairs):
        idx = base + j
        f = factors_for(seed, idx)
        rng = item_rng(seed, idx, 2)
        factor = ZERO_SHOT_FACTORS[int(rng.choice(len(ZERO_SHOT_FACTORS), p=probs))]
        g = _flip(f, factor, rng)
        faces += [f, g]
        for face in (f, g):
            text, mentioned = _caption_mentioning(face, _MENTIONS[factor], rng)
            texts.append(text)
            mentions.append(mentioned)
    for j in range(2 * n_pairs, batch_size):
        idx = base + j
        f = factors_for(seed, idx)
        rng = item_rng(seed, idx, 1)
        faces.append(f)
        if rng.random() < 0.1:
            text, mentioned = describe(f), set(_MENTIONS.values())
        else:
            text, mentioned = caption_with_mentions(f, rng)
        texts.append(text)
        mentions.append(mentioned)
    x = render_faces(faces, 64, supersample)
    labels = torch.from_numpy(np.stack([factors_to_vector(f) for f in faces])).float()
    stated = torch.from_numpy(np.stack([_mention_mask(m) for m in mentions]))
    return x, texts, labels, stated


def noisy_views(images: torch.Tensor, seed: int, step: int, max_std: float, share: float) -> torch.Tensor:
    """``images`` (in [-1, 1]) with Gaussian noise of std uniform in [0, ``max_std``] added to a
    random ``share`` of them, clamped to [-1, 1]; the rest unchanged. A pure function of
    (``seed``, ``step``), so a resumed run sees the same noise."""
    if max_std <= 0 or share <= 0:
        return images
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    n = images.shape[0]
    chosen = torch.rand(n, generator=g) < share
    std = torch.rand(n, generator=g) * max_std * chosen
    noise = torch.randn(images.shape, generator=g, dtype=images.dtype)
    return (images + std.view(-1, 1, 1, 1).to(images.dtype) * noise).clamp(-1, 1)


class ClipPairs(IterableDataset):
    """Batches ``start, start + 1, ...`` of :func:`clip_batch` (worker k of K renders every K-th
    batch; ``DataLoader(ClipPairs(...), batch_size=None)`` keeps the order for any K)."""

    def __init__(self, seed: int, batch_size: int, twin_share: float, supersample: int, start: int = 0,
                 stop: Optional[int] = None, hard_factor_weight: float = 1.0):
        self.seed, self.batch_size, self.twin_share, self.supersample = seed, batch_size, twin_share, supersample
        self.start, self.stop, self.hard_factor_weight = start, stop, hard_factor_weight

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        b = self.start + k
        while self.stop is None or b < self.stop:
            yield clip_batch(self.seed, b, self.batch_size, self.twin_share, self.supersample, self.hard_factor_weight)
            b += n


# --------------------------------------------------------------------------- training


class FactorHeads(torch.nn.Module):
    """Linear heads from the (normalised) image embedding to every factor, in the probe's output
    layout (so :func:`~hspace.toyworld.probe.probe_loss` scores them). Training aid only."""

    def __init__(self, dim: int):
        super().__init__()
        from .probe import BINARY, CATEGORICAL, CONTINUOUS

        self.categorical = set(CATEGORICAL)
        self.heads = torch.nn.ModuleDict()
        for n in (*BINARY, *CONTINUOUS):
            self.heads[n] = torch.nn.Linear(dim, 1)
        for n, k in CATEGORICAL.items():
            self.heads[n] = torch.nn.Linear(dim, k)

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        # the embedding is unit-norm: scale it so the heads start with useful logit ranges
        z = emb * emb.shape[-1] ** 0.5
        return {n: (h(z) if n in self.categorical else h(z).squeeze(-1)) for n, h in self.heads.items()}


class ClipTrainee(torch.nn.Module):
    """The ``CLIPModel`` being trained plus its auxiliary :class:`FactorHeads` (one module, so one
    optimizer and one checkpoint hold both; only ``.clip`` is exported)."""

    def __init__(self, clip, aux: bool, seed: int = 0):
        super().__init__()
        self.clip = clip
        self.aux = None
        if aux:
            with torch.random.fork_rng(devices=[]):  # seeded, so a resumed run equals an uninterrupted one
                torch.manual_seed(seed)
                self.aux = FactorHeads(int(clip.config.projection_dim))


def factor_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The probe's per-factor loss (BCE, cross-entropy, ``REGRESSION_WEIGHT`` x MSE) averaged over
    the items where ``mask[:, factor]`` is true, summed over factors."""
    import torch.nn.functional as F

    from .probe import BINARY, CATEGORICAL, REGRESSION_WEIGHT, targets_from_labels

    t = targets_from_labels(labels)
    total = labels.new_zeros(())
    for i, n in enumerate(FACTOR_NAMES):
        m = mask[:, i].to(labels.dtype)
        if not bool(m.any()):
            continue
        y = outputs[n].float()
        if n in BINARY:
            per = F.binary_cross_entropy_with_logits(y, t[n], reduction="none")
        elif n in CATEGORICAL:
            per = F.cross_entropy(y, t[n], reduction="none")
        else:
            per = REGRESSION_WEIGHT * (y - t[n]) ** 2
        total = total + (per * m).sum() / m.sum()
    return total


def clip_loss(model, tokenizer, images: torch.Tensor, texts: list[str], max_length: int = MAX_LENGTH,
              labels: Optional[torch.Tensor] = None, stated: Optional[torch.Tensor] = None,
              aux: Optional[FactorHeads] = None, aux_weight: float = 0.0) -> torch.Tensor:
    """Symmetric InfoNCE with the model's learnable temperature (CLIP's own ``return_loss``), plus
    ``aux_weight`` x the factor loss of the SHARED heads ``aux`` on the image embeddings (every
    factor) and on the text embeddings (the factors each caption states, ``stated``): one linear
    read-out for both towers puts each factor on the same axis in both, which is what zero-shot
    choice needs. Images are preprocessed exactly as :class:`~hspace.encoders.TransformersCLIP` does."""
    from ..encoders import preprocess_for_clip

    tok = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    pixels = preprocess_for_clip(images, int(model.config.vision_config.image_size))
    out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels,
                return_loss=True)
    if aux is None or labels is None or aux_weight == 0:
        return out.loss
    loss = factor_loss(aux(out.image_embeds.float()), labels, torch.ones_like(labels, dtype=torch.bool))
    if stated is not None:
        loss = loss + factor_loss(aux(out.text_embeds.float()), labels, stated)
    return out.loss + aux_weight * loss


def _optimizer(model, s: ClipSettings) -> torch.optim.Optimizer:
    decay, rest = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() > 1 and "embedding" not in n else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.98), eps=1e-6)


def train_clip(settings: ClipSettings, checkpoint: str | Path, *, tokenizer_dir: Optional[str | Path] = None,
               max_minutes: Optional[float] = None, stop_after: Optional[int] = None, resume: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) the toy CLIP; ``checkpoint`` (a safetensors file) is resumed when it exists
    (with ``resume=False`` an existing checkpoint is an error).
    The tokenizer files live in ``tokenizer_dir`` (default: next to the checkpoint), written once.

    Stops at ``settings.steps``, after ``max_minutes``, or after ``stop_after`` steps of this call.
    Returns a summary; the model is in ``summary["model"]``, the tokenizer in ``summary["tokenizer"]``.
    """
    s = settings
    checkpoint = Path(checkpoint)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else checkpoint.parent / (checkpoint.stem + "-tokenizer")
    tokenizer = build_tokenizer(tok_dir)
    model = build_clip_model(s, tokenizer, seed=s.init_seed)
    trainee = ClipTrainee(model, aux=s.aux_weight > 0, seed=s.init_seed + 1)
    opt = _optimizer(trainee, s)
    step, examples, seconds_before = resume_counters(checkpoint, trainee, opt, s, resume, log)
    model.train()
    clock = StepClock(s.steps, s.log_every, s.checkpoint_every, max_minutes, stop_after)

    def save() -> None:
        rec = {"kind": "toy-clip", "step": step, "examples": examples,
               "seconds": seconds_before + time.perf_counter() - clock.t_start, "settings": s.to_dict(),
               "tokenizer_dir": str(tok_dir), "finished": step >= s.steps}
        save_training_checkpoint(checkpoint, trainee, opt, rec)

    data: Any = ClipPairs(s.seed, s.batch_size, s.twin_share, s.supersample, start=step, stop=s.steps,
                          hard_factor_weight=s.hard_factor_weight)
    if s.workers > 0:
        from torch.utils.data import DataLoader

        data = DataLoader(data, batch_size=None, num_workers=s.workers, prefetch_factor=4)
    last = float("nan")
    if step < s.steps:
        for images, texts, labels, stated in data:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s.steps, s.lr, s.warmup)
            images = noisy_views(images, s.seed, step, s.noise_aug, s.noise_aug_share)
            with autocast(s.precision):
                loss = clip_loss(model, tokenizer, images, texts, s.max_length, labels, stated, trainee.aux,
                                 s.aux_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, float(np.log(100.0)))
            step += 1
            examples += len(images)
            last = float(loss.detach())
            rate, save_now, stop = clock.after_step(step, len(images))
            if rate is not None:
                log(f"step {step}/{s.steps}  loss {last:.4f}  temperature 1/{float(model.logit_scale.detach().exp()):.1f}  "
                    f"{rate:.0f} pairs/s")
            if save_now:
                save()
            if stop:
                break
    return {"step": step, "steps": s.steps, "finished": step >= s.steps, "examples": examples, "loss": last,
            "pairs_per_s_this_run": clock.per_second(s.batch_size), "checkpoint": str(checkpoint),
            "tokenizer_dir": str(tok_dir), "model": model, "tokenizer": tokenizer}


# --------------------------------------------------------------------------- export / load


def export_clip(model, tokenizer, folder: str | Path = CLIP_DIR, info: Optional[dict[str, Any]] = None,
                fp16: bool = True) -> Path:
    """``save_pretrained`` the model (safetensors, fp16 by default) and the tokenizer into ``folder``,
    plus ``hspace_toy_clip.json`` (``info``: evaluation, training record)."""
    import copy

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    m = copy.deepcopy(model).eval()
    if fp16:
        m = m.half()
    m.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    # transformers 5 writes tokenizer.json; ship the plain CLIP files (vocab.json + merges.txt) too
    source = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    for name in ("vocab.json", "merges.txt"):
        if (source / name).is_file() and not (tmp / name).exists():
            shutil.copyfile(source / name, tmp / name)
    write_json_atomic({"name": TOY_CLIP_NAME, "load": "hspace.toyworld.clip_train.load_toy_clip() or "
                       "hspace.encoders.TransformersCLIP(<this folder>)", **(info or {})},
                      tmp / "hspace_toy_clip.json")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def load_toy_clip(folder: str | Path = CLIP_DIR, device: torch.device | str | None = None,
                  dtype: Optional[torch.dtype] = None):
    """The shipped toy CLIP as a :class:`~hspace.encoders.TransformersCLIP` named ``"toy-clip"``.

    Raises:
        ModelNotTrainedError: not trained yet (the message names the command).
    """
    from ..encoders import TransformersCLIP

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelNotTrainedError(
            f"the toy-world CLIP ('{TOY_CLIP_NAME}') is not trained yet (no config.json + model.safetensors in "
            f"{folder}). Train it with `{TRAIN_COMMAND}` (about 40-60 minutes on 2 CPU cores); it writes {CLIP_DIR}.")
    enc = TransformersCLIP(folder, device=device, dtype=dtype, local_files_only=True)
    if folder.resolve() == CLIP_DIR.resolve():
        enc.name = TOY_CLIP_NAME
    return enc


# --------------------------------------------------------------------------- zero-shot evaluation


def _candidates(f: FaceFactors, factor: str, style: str) -> tuple[list[str], int]:
    """Captions of ``f`` differing only in ``factor`` and the index of the true one."""
    if factor == "smile":
        variants = [with_factor(f, smile=v) for v in _SMILE_GROUPS]
        truth = _smile_group(f.smile)
    else:
        values = [True, False] if factor in ("eyes_open", "glasses", "hat", "beard") else FACTORS[factor]["values"]
        variants = [with_factor(f, **{factor: v}) for v in values]
        truth = list(values).index(getattr(f, factor))
    if style == "short":
        texts = [_short_caption(g, _MENTIONS[factor]) for g in variants]
    else:
        texts = [describe(g) for g in variants]
    return texts, truth


@torch.no_grad()
def evaluate_zero_shot(encoder, n: int = 300, seed: int = EVAL_SEED, styles: tuple[str, ...] = ("short", "full"),
                       factors: tuple[str, ...] = ZERO_SHOT_FACTORS, supersample: int = 4) -> dict[str, Any]:
    """Zero-shot choice among captions that differ in ONE factor, on ``n`` held-out faces.

    ``encoder`` is any :class:`~hspace.encoders.ImageTextEncoder`. For each face and factor the
    candidates are the face's caption with that factor set to each of its values (smile: frowning /
    neutral / smiling), worded ``short`` ("a face with red hair") or ``full`` (every factor
    mentioned, :func:`~hspace.toyworld.captions.describe`). Returns
    ``{"accuracy": {style: {factor: acc}}, "min": {style: min acc}, "n": n, "seed": seed}``.
    """
    from .dataset import render_faces

    fs = [factors_for(seed, i) for i in range(n)]
    x = render_faces(fs, 64, supersample)
    img = torch.cat([encoder.encode_image(x[i:i + 128]) for i in range(0, n, 128)])
    img = torch.nn.functional.normalize(img.float(), dim=-1)
    cache: dict[str, torch.Tensor] = {}

    def embed(texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        for i in range(0, len(new), 256):
            chunk = new[i:i + 256]
            e = torch.nn.functional.normalize(encoder.encode_text(chunk).float(), dim=-1)
            cache.update(zip(chunk, e))
        return torch.stack([cache[t] for t in texts])

    acc: dict[str, dict[str, float]] = {}
    for style in styles:
        acc[style] = {}
        for factor in factors:
            cands = [_candidates(f, factor, style) for f in fs]
            flat = [t for texts, _ in cands for t in texts]
            emb = embed(flat)
            correct, pos = 0, 0
            for i, (texts, truth) in enumerate(cands):
                sims = emb[pos:pos + len(texts)] @ img[i]
                correct += int(int(sims.argmax()) == truth)
                pos += len(texts)
            acc[style][factor] = correct / n
    return {"accuracy": acc, "min": {s: min(a.values()) for s, a in acc.items()}, "n": n, "seed": seed,
            "bar": 0.9, "passed": {s: min(a.values()) >= 0.9 for s, a in acc.items()}}
