"""Image-text encoders (CLIP) used by the text-driven objectives.

An encoder maps images in ``[-1, 1]`` and strings into one embedding space. Objectives
only see the :class:`ImageTextEncoder` protocol, so any model that implements it can be
plugged in (the way torchmetrics' FID takes ``feature: int | Module``).

Three sources ship here:

* :class:`TransformersCLIP` loads a real CLIP through ``transformers`` by hub id or local
  folder (default ``openai/clip-vit-base-patch16``, the ViT-B/16 the paper uses). These
  machines cannot download weights, so a missing model raises
  :class:`EncoderNotAvailableError` that says what to fetch and how.
* :func:`build_tiny_clip` builds ``"tiny-random-clip"``: a real ``CLIPModel`` from a tiny
  config with seeded random weights and a real ``CLIPTokenizer`` over a byte-level
  character vocabulary generated at run time. It has no semantic knowledge; it exists so
  that the offline demo and the tests exercise the exact code path a real CLIP takes.
* :class:`OpenCLIPEncoder` wraps an ``open_clip`` model (``"open_clip:ViT-B-16/openai"``)
  when the optional ``open_clip_torch`` package is installed.

Encoders are frozen: parameters have ``requires_grad=False`` and ``train()`` keeps them in
eval mode (like torchmetrics' ``_NoTrainLpips``). :meth:`encode_image` stays
differentiable with respect to its input: resizing and normalisation are torch ops.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_CLIP_ID",
    "TINY_CLIP_NAME",
    "EncoderNotAvailableError",
    "ImageTextEncoder",
    "TransformersCLIP",
    "OpenCLIPEncoder",
    "OPEN_CLIP_PREFIX",
    "parse_open_clip_spec",
    "build_tiny_clip",
    "load_encoder",
    "preprocess_for_clip",
]

DEFAULT_CLIP_ID = "openai/clip-vit-base-patch16"
TINY_CLIP_NAME = "tiny-random-clip"
OPEN_CLIP_PREFIX = "open_clip:"

# CLIP's image normalisation constants (per RGB channel, for pixels in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EncoderNotAvailableError(OSError):
    """The requested encoder's weights are not on this machine (and cannot be downloaded)."""


@runtime_checkable
class ImageTextEncoder(Protocol):
    """A frozen joint image-text embedding model.

    Attributes:
        name: a stable name for the model (hub id, folder or built-in name).
    """

    name: str

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Args:
            x: ``[B, 3, H, W]`` images in ``[-1, 1]`` (any size; resized inside).

        Returns:
            ``[B, D]`` float32 embeddings, differentiable with respect to ``x``.
        """
        ...

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed strings: ``[N, D]`` float32 embeddings for ``N`` texts."""
        ...


def preprocess_for_clip(
    x: torch.Tensor,
    size: int,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> torch.Tensor:
    """Map ``[B, 3, H, W]`` images in ``[-1, 1]`` to CLIP's input, with differentiable torch ops only.

    The shorter side is resized to ``size`` (bicubic, antialiased when shrinking), the
    longer one is centre-cropped to ``size``, then pixels go to ``[0, 1]`` and are
    normalised with ``mean``/``std``. Values are not clamped, so out-of-range predictions
    (early-timestep ``P_t``) keep their gradient.

    Args:
        x: images, ``[B, 3, H, W]``, nominally in ``[-1, 1]``.
        size: the encoder's square input side in pixels.
        mean, std: per-channel normalisation for pixels in ``[0, 1]``.

    Returns:
        ``[B, 3, size, size]`` tensor of the same dtype as ``x``.

    Example:
        >>> preprocess_for_clip(torch.zeros(2, 3, 64, 48), 32).shape
        torch.Size([2, 3, 32, 32])
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"Expected images of shape [B, 3, H, W] in [-1, 1], but got shape {tuple(x.shape)}.")
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=scale < 1)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]
    x = (x + 1) / 2
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _features(out) -> torch.Tensor:
    """The projected embedding from ``get_image_features`` / ``get_text_features``.

    transformers 4.x returns a tensor; 5.x returns a ``BaseModelOutputWithPooling`` whose
    ``pooler_output`` holds the *projected* embedding.
    """
    if isinstance(out, torch.Tensor):
        return out
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"Cannot find embeddings in CLIP output of type {type(out).__name__}.")


def _dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype`` from transformers 5 on (``torch_dtype`` before, deprecated after)."""
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def _offline_requested() -> bool:
    """Offline mode from the environment, read now (huggingface_hub reads it only at import)."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class _FrozenEncoder(nn.Module):
    """A frozen wrapper around ``self.model``: always in eval mode (like torchmetrics' _NoTrainLpips)."""

    model: nn.Module

    def train(self, mode: bool = True) -> "_FrozenEncoder":
        """Encoders stay in eval mode whatever ``mode`` says."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


class TransformersCLIP(_FrozenEncoder):
    """A frozen ``transformers`` CLIP model behind the :class:`ImageTextEncoder` protocol.

    Args:
        model_id_or_path: hub id (default ``"openai/clip-vit-base-patch16"``) or a local
            folder holding a ``CLIPModel`` and its tokenizer files.
        device: where the model runs (default CPU). Inputs are moved there.
        dtype: parameter dtype (default float32). Embeddings are returned as float32.
        local_files_only: only look at local files/cache. ``None`` (default) follows
            ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` as set at call time.

    Raises:
        EncoderNotAvailableError: the weights or tokenizer are neither local nor cached
            (the message says how to get them).

    Use :meth:`from_components` to wrap a model and tokenizer you already have.
    """

    def __init__(
        self,
        model_id_or_path: str | os.PathLike = DEFAULT_CLIP_ID,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        local_files_only: bool | None = None,
    ) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        source = str(model_id_or_path)
        if local_files_only is None:
            local_files_only = _offline_requested()
        looks_like_path = os.path.sep in source and (source.startswith((".", "/", "~")) or source.count("/") > 1)
        if looks_like_path and not Path(source).expanduser().exists():
            raise EncoderNotAvailableError(
                f"CLIP folder '{source}' does not exist. Pass an existing folder holding a CLIPModel "
                f"(config.json, weights, tokenizer files) or a hub id such as '{DEFAULT_CLIP_ID}'."
            )
        if Path(source).expanduser().is_dir():
            source = str(Path(source).expanduser())
        try:
            model = CLIPModel.from_pretrained(
                source, local_files_only=local_files_only, **{_dtype_kwarg(): dtype or torch.float32}
            )
            tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise EncoderNotAvailableError(
                f"Cannot load CLIP model '{source}': it is not on this machine and could not be downloaded "
                f"({type(err).__name__}). On a machine with internet run `hf download {source}` and copy the "
                f"Hugging Face cache (~/.cache/huggingface/hub) here, or pass a local folder with the model "
                f"and tokenizer files. For an offline run without semantics use '{TINY_CLIP_NAME}'."
            ) from err
        self._init_components(model, tokenizer, name=source, device=device)

    @classmethod
    def from_components(
        cls, model: nn.Module, tokenizer, name: str, device: torch.device | str | None = None
    ) -> "TransformersCLIP":
        """Wrap an existing ``CLIPModel`` and ``CLIPTokenizer`` (no loading). The model is frozen in place."""
        self = cls.__new__(cls)
        self._init_components(model, tokenizer, name=name, device=device)
        return self

    def _init_components(self, model: nn.Module, tokenizer, name: str, device) -> None:
        nn.Module.__init__(self)
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        if device is not None:
            self.model.to(device)
        self.model.requires_grad_(False)
        self.eval()
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text_length = int(model.config.text_config.max_position_embeddings)
        self.embed_dim = int(model.config.projection_dim)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B, D]`` float32 projected CLIP embeddings (not normalised).

        Differentiable with respect to ``x``; no gradient reaches the (frozen) model.
        """
        pixels = preprocess_for_clip(x.to(device=self.device, dtype=self.dtype), self.image_size)
        return _features(self.model.get_image_features(pixel_values=pixels)).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``N`` strings -> ``[N, D]`` float32 projected CLIP embeddings (not normalised)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string.")
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return _features(self.model.get_text_features(**batch)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, image_size={self.image_size}, embed_dim={self.embed_dim}"


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _write_char_tokenizer_files(folder: Path, max_length: int) -> None:
    """A byte-level character vocabulary (each byte with and without ``</w>``), no merges."""
    chars = [_byte_to_unicode()[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}), encoding="utf-8")


def build_tiny_clip(
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TransformersCLIP:
    """A real but tiny, randomly initialised CLIP (``"tiny-random-clip"``), built offline.

    Vision: ViT with 32x32 input, 8x8 patches, width 64, 2 layers. Text: width 64,
    2 layers, 77 positions, a 514-token byte-level character vocabulary (no merges).
    Projection dimension 64. Weights are seeded by ``seed`` without touching the global
    RNG, so the same seed gives the same encoder everywhere.

    It has no semantic knowledge: use it for offline demos and tests, not for results.

    Example:
        >>> enc = build_tiny_clip()
        >>> enc.encode_text(["a smiling face"]).shape
        torch.Size([1, 64])
    """
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    max_length = 77
    text_config = dict(
        vocab_size=514,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision_config = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.to(dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="hspace-tiny-clip-") as tmp:
        _write_char_tokenizer_files(Path(tmp), max_length)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    return TransformersCLIP.from_components(model, tokenizer, name=TINY_CLIP_NAME, device=device)


def parse_open_clip_spec(spec: str) -> tuple[str, str | None]:
    """``"open_clip:ViT-B-16/openai"`` -> ``("ViT-B-16", "openai")``.

    The part after the first ``/`` is open_clip's ``pretrained`` tag or a local checkpoint
    path (``"open_clip:ViT-B-16//data/clip/vit-b-16.bin"``); no ``/`` means no pretrained
    weights. Model names of the form ``hf-hub:org/repo`` are kept whole.

    Raises:
        ValueError: no model name.
    """
    rest = str(spec)
    if rest.startswith(OPEN_CLIP_PREFIX):
        rest = rest[len(OPEN_CLIP_PREFIX):]
    rest = rest.strip()
    if rest.startswith("hf-hub:"):
        return rest, None
    name, _, pretrained = rest.partition("/")
    name, pretrained = name.strip(), pretrained.strip()
    if not name:
        raise ValueError(f"{spec!r}: write open_clip:MODEL/PRETRAINED, e.g. open_clip:ViT-B-16/openai")
    return name, (pretrained or None)


def _import_open_clip():
    try:
        import open_clip  # noqa: F401
    except ImportError as err:
        raise EncoderNotAvailableError(
            "open_clip encoders need the optional package open_clip_torch, which is not installed: "
            "`pip install open_clip_torch` (it also installs torchvision; pick the build that matches "
            f"your torch {torch.__version__}). Or use a transformers CLIP such as '{DEFAULT_CLIP_ID}'."
        ) from err
    return open_clip


class OpenCLIPEncoder(_FrozenEncoder):
    """A frozen ``open_clip`` model behind the :class:`ImageTextEncoder` protocol.

    Args:
        model_name: open_clip architecture name, e.g. ``"ViT-B-16"``.
        pretrained: open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b88k"``, ...) or a
            local checkpoint file; None builds the architecture with random weights.
        device: where the model runs (default CPU). dtype: parameter dtype (default float32).

    Raises:
        EncoderNotAvailableError: ``open_clip_torch`` is not installed (the message says
            ``pip install open_clip_torch``), or the weights are neither local nor cached.

    Images are resized and normalised with torch ops (:func:`preprocess_for_clip`, with the
    model's own mean/std), so :meth:`encode_image` stays differentiable.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        open_clip = _import_open_clip()
        super().__init__()
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, device=device or "cpu")
            tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as err:
            raise EncoderNotAvailableError(
                f"Cannot load open_clip model {model_name!r} with pretrained={pretrained!r} "
                f"({type(err).__name__}: {err}). These machines cannot download weights: download them "
                "on a machine with internet (open_clip caches them in the Hugging Face cache) and copy "
                "the cache here, or pass a local checkpoint as open_clip:MODEL//path/to/file."
            ) from err
        if dtype is not None:
            model.to(dtype=dtype)
        self.name = f"{OPEN_CLIP_PREFIX}{model_name}" + (f"/{pretrained}" if pretrained else "")
        self.model = model.requires_grad_(False)
        self.tokenizer = tokenizer
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(v) for v in (getattr(model.visual, "image_mean", None) or CLIP_MEAN))
        self.std = tuple(float(v) for v in (getattr(model.visual, "image_std", None) or CLIP_STD))
        self.eval()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B, D]`` float32 embeddings (not normalised), differentiable in ``x``."""
        pixels = preprocess_for_clip(x.to(device=self.device, dtype=self.dtype), self.image_size, self.mean, self.std)
        return self.model.encode_image(pixels).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``N`` strings -> ``[N, D]`` float32 embeddings (not normalised)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string.")
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, image_size={self.image_size}"


def load_encoder(
    name_or_path: str | os.PathLike = DEFAULT_CLIP_ID,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **kwargs,
) -> TransformersCLIP | OpenCLIPEncoder:
    """Load an image-text encoder by name.

    * ``"tiny-random-clip"``: :func:`build_tiny_clip`;
    * ``"toy-clip"``: the small CLIP trained on the built-in toy faces (when shipped);
    * ``"open_clip:MODEL/PRETRAINED"`` (e.g. ``"open_clip:ViT-B-16/openai"``): :class:`OpenCLIPEncoder`
      (needs ``pip install open_clip_torch``);
    * anything else: a transformers CLIP by hub id or folder (:class:`TransformersCLIP`).
    """
    if str(name_or_path) == TINY_CLIP_NAME:
        return build_tiny_clip(device=device, dtype=dtype or torch.float32, **kwargs)
    if str(name_or_path) == "toy-clip":
        from .toyworld.clip_train import load_toy_clip

        return load_toy_clip(device=device, dtype=dtype)
    if str(name_or_path).startswith(OPEN_CLIP_PREFIX):
        model_name, pretrained = parse_open_clip_spec(str(name_or_path))
        return OpenCLIPEncoder(model_name, pretrained, device=device, dtype=dtype, **kwargs)
    return TransformersCLIP(name_or_path, device=device, dtype=dtype, **kwargs)
