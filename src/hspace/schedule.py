"""Noise schedules and the DDIM timestep grid, as pure functions.

The grid reproduces the reference implementation exactly (see DESIGN.md 1.1):
``seq(n) = [int(s + 1e-6) for s in linspace(0, 1, n) * t0]``. Generation walks the
pairs ``(seq[k], seq[k-1])`` from the top, the last pair being ``(0, -1)`` where
``abar(-1) := 1``; inversion walks the same pairs upwards.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "linear_betas",
    "alphas_cumprod_from_betas",
    "default_alphas_cumprod",
    "ddim_grid",
    "ddim_train_grid",
    "generation_pairs",
    "inversion_pairs",
    "abar_at",
]

NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Linear beta schedule, computed in float64 then cast to float32 (as the reference does)."""
    return torch.from_numpy(np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)).float()


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), as a float32 cumulative product."""
    return torch.cumprod(1.0 - betas.float(), dim=0)


def default_alphas_cumprod() -> torch.Tensor:
    """The paper's schedule: linear beta 1e-4..0.02 over 1000 steps. Shape [1000]."""
    return alphas_cumprod_from_betas(linear_betas())


def _check_grid_args(n: int, t0: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"number of steps must be an integer >= 2, got {n!r}")
    if not isinstance(t0, int) or t0 < 1:
        raise ValueError(f"top timestep t0 must be a positive integer, got {t0!r}")
    if n > t0 + 1:
        raise ValueError(f"cannot take {n} distinct steps below t0={t0}; use at most {t0 + 1}")


def ddim_grid(n: int, t0: int = NUM_TRAIN_TIMESTEPS - 1) -> list[int]:
    """The uniform DDIM timestep grid, ascending, including 0 and ``t0``.

    Args:
        n: number of steps (grid points).
        t0: top timestep (999 for a 1000-step model).

    Returns:
        ``[int(s + 1e-6) for s in linspace(0, 1, n) * t0]``.
    """
    _check_grid_args(n, t0)
    return [int(s + 1e-6) for s in np.linspace(0, 1, n) * t0]


def ddim_train_grid(n: int, t_edit: int, t0: int = NUM_TRAIN_TIMESTEPS - 1) -> list[int]:
    """The training / editing subset of the grid: points with t >= t_edit, ascending.

    The reference filters the *float* linspace values before rounding, so a point whose
    float value is just below ``t_edit`` is dropped even if it would round to it.
    """
    _check_grid_args(n, t0)
    return [int(s + 1e-6) for s in np.linspace(0, 1, n) * t0 if s >= t_edit]


def generation_pairs(seq: list[int]) -> list[tuple[int, int]]:
    """Pairs (t, t_next) walked from the top down; the last pair ends at -1 (abar := 1)."""
    seq_next = [-1] + list(seq[:-1])
    return list(zip(reversed(seq), reversed(seq_next)))


def inversion_pairs(seq: list[int]) -> list[tuple[int, int]]:
    """Pairs (t, t_next) with t_next > t, walked upwards from seq[0] to seq[-1]."""
    return list(zip(seq[:-1], seq[1:]))


def abar_at(alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    """abar_t as a 0-d float32 tensor, with abar_{-1} := 1."""
    if t < 0:
        return torch.ones((), dtype=torch.float32)
    if t >= alphas_cumprod.shape[0]:
        raise ValueError(f"timestep {t} is outside the schedule (0..{alphas_cumprod.shape[0] - 1})")
    return alphas_cumprod[t].float()
