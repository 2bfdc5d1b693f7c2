"""One batched, validated pass of a function over an image tensor (CLIP embeddings, features)."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["map_batches"]


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
                progress: bool = False, desc: str = "batches") -> list[torch.Tensor]:
    """``[fn(images[i:i + batch_size]) for each batch]`` after checking ``images`` is ``[B, 3, H, W]``
    and ``batch_size >= 1``; a tqdm bar when ``progress`` and there is more than one batch."""
    from tqdm.auto import tqdm

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, len(images), batch_size)
    return [fn(images[i:i + batch_size])
            for i in tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2, leave=False)]
