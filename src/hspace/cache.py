"""Where hspace keeps what it computes once and reuses: inverted latents, interval curves.

The root is ``$HSPACE_CACHE`` or ``~/.cache/hspace``. Files are safetensors / JSON, never pickles.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["cache_root", "tensor_digest", "weights_digest", "LatentCache"]


def cache_root() -> Path:
    """The cache folder (``$HSPACE_CACHE``, default ``~/.cache/hspace``)."""
    return Path(os.environ.get("HSPACE_CACHE", Path.home() / ".cache" / "hspace")).expanduser()


def tensor_digest(*parts: torch.Tensor | str) -> str:
    """A short SHA-256 of tensors' bytes and strings (content addressing)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        else:
            h.update(p.encode())
    return h.hexdigest()[:24]


def weights_digest(model: Any) -> str:
    """A short hash of every tensor of ``model.state_dict()`` (names, shapes, dtypes, bytes);
    ``model`` is a module or anything with its ``state_dict()`` (a wrapping backbone).

    Part of every cache key next to the backbone id: an id names where a model came from (a hub
    repo, a folder, a built-in name), and the weights behind it change when it is retrained or
    updated; latents of the old weights would be silently wrong for the new ones.
    """
    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        raise TypeError(f"can only fingerprint weights given by a state_dict() (a torch.nn.Module), got "
                        f"{type(model).__name__}; turn the cache off for this backbone (EditConfig(cache_latents=False))")
    h = hashlib.blake2b(digest_size=12)
    for name, t in state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class LatentCache:
    """DDIM-inverted latents x_T per (backbone, its weights, image content, step count).

    Args:
        backbone_id: the backbone the latents belong to.
        weights: :func:`weights_digest` of its weights.
        root: folder; default ``cache_root() / "latents"``.
    """

    def __init__(self, backbone_id: str, weights: str, root: Path | None = None):
        self.dir = (root or cache_root() / "latents") / tensor_digest(backbone_id, weights)
        self.backbone_id = backbone_id
        self.weights = weights

    def _path(self, image: torch.Tensor, n_steps: int) -> Path:
        return self.dir / f"{tensor_digest(image)}-inv{n_steps}.safetensors"

    def get(self, image: torch.Tensor, n_steps: int) -> torch.Tensor | None:
        """The cached x_T ``[3, S, S]`` for ``image`` ``[3, S, S]``, or None."""
        p = self._path(image, n_steps)
        if not p.is_file():
            return None
        try:
            return load_file(str(p))["latent"]
        except Exception:  # a truncated cache file is recomputed, never trusted
            return None

    def put(self, image: torch.Tensor, n_steps: int, latent: torch.Tensor) -> None:
        p = self._path(image, n_steps)
        p.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two processes inverting the same image must not share a temp file
        tmp = p.with_name(f"{p.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        save_file({"latent": latent.detach().float().cpu().contiguous()}, str(tmp),
                  metadata={"backbone_id": self.backbone_id, "weights": self.weights, "n_inv_steps": str(n_steps)})
        tmp.replace(p)
