"""Torch datasets of toy faces: a map-style one (:class:`ToyFaces`) and an endless stream
(:class:`ToyFaceStream`).

Item ``i`` of the dataset with ``seed`` is a pure function of ``(seed, i)`` (its factors come
from :func:`hspace.toyworld.faces.factors_for`, its caption from its own random stream), so
it is the same whichever worker renders it, in whichever order, on whichever machine.
Each item is a dict::

    {"image":   float32 tensor [3, size, size] in [-1, 1],
     "labels":  float32 tensor (:func:`~hspace.toyworld.faces.factors_to_vector`, names in .label_names),
     "caption": str,
     "index":   int,
     "factors": dict (only with return_factors=True; JSON-able values)}

which torch's default collate batches (strings into lists).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from .captions import caption_for
from .faces import FaceFactors, factors_for, factors_to_vector, render_array, vector_names


def image_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0)


def render_faces(factors: Sequence[FaceFactors], size: int = 64, supersample: int = 4) -> torch.Tensor:
    """The faces ``factors`` describe, as a float32 batch ``[n, 3, size, size]`` in [-1, 1]."""
    return torch.stack([image_to_tensor(render_array(f, size, supersample)) for f in factors])


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    a = ((t.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).cpu().numpy()


class _ItemMaker:
    def __init__(self, seed: int, size: int, supersample: int, one_hot: bool, return_factors: bool,
                 captions: bool):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed, self.size, self.supersample = int(seed), int(size), int(supersample)
        self.one_hot, self.return_factors, self.captions = one_hot, return_factors, captions
        self.label_names = vector_names(one_hot)

    def make(self, index: int) -> dict[str, Any]:
        f = factors_for(self.seed, index)
        item: dict[str, Any] = {
            "image": image_to_tensor(render_array(f, self.size, self.supersample)),
            "labels": torch.from_numpy(factors_to_vector(f, self.one_hot)),
            "caption": caption_for(self.seed, index, f) if self.captions else "",
            "index": int(index),
        }
        if self.return_factors:
            item["factors"] = f.to_dict()
        return item


class ToyFaces(Dataset):
    """``length`` toy faces, item ``i`` determined by ``(seed, i)``.

    Args:
        length: number of items.
        seed: dataset seed (>= 0).
        size: image side in pixels.
        supersample: drawing resolution factor for anti-aliasing (3 is ~1.5x faster than 4).
        one_hot: categorical factors as one-hot blocks in ``labels`` (else their index).
        return_factors: also return the factors as a dict.
        captions: compute a caption per item (else "").
    """

    def __init__(self, length: int, seed: int = 0, size: int = 64, supersample: int = 4, one_hot: bool = False,
                 return_factors: bool = False, captions: bool = True):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length = int(length)
        self._maker = _ItemMaker(seed, size, supersample, one_hot, return_factors, captions)
        self.label_names = self._maker.label_names

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        return self._maker.make(index)


class ToyFaceStream(IterableDataset):
    """An endless stream of toy faces: indices ``start, start + 1, ...`` (up to ``stop`` if given).

    Worker-safe: items depend only on ``(seed, index)``, and with a DataLoader of K workers
    worker k takes every K-th index (or every K-th batch), so no item is repeated or skipped.
    The loader's round-robin puts them back in index order when the loader itself does not batch:
    use ``DataLoader(stream, batch_size=None, num_workers=K)`` with single items, or pass
    ``batch_size=B`` HERE (the stream then yields collated batches of consecutive indices,
    ``[start, start+B)``, ``[start+B, start+2B)``, ...). Then the stream is identical for any
    number of workers. (A DataLoader with its own ``batch_size`` and several workers yields the
    same items, but batches of every K-th index.) Other arguments as in :class:`ToyFaces`.
    """

    def __init__(self, seed: int = 0, size: int = 64, supersample: int = 4, one_hot: bool = False,
                 return_factors: bool = False, captions: bool = True, start: int = 0, stop: Optional[int] = None,
                 batch_size: Optional[int] = None):
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.start, self.stop, self.batch_size = int(start), stop, batch_size
        self._maker = _ItemMaker(seed, size, supersample, one_hot, return_factors, captions)
        self.label_names = self._maker.label_names

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.batch_size or 1
        i = self.start + k * step
        while self.stop is None or i < self.stop:
            if self.batch_size is None:
                yield self._maker.make(i)
            else:
                end = i + step if self.stop is None else min(i + step, self.stop)
                yield default_collate([self._maker.make(j) for j in range(i, end)])
            i += n * step
