"""The reverse process the experiments run, with the hooks they need.

:func:`reverse` is :func:`hspace.sampler.generate` (same pure step functions, same phases,
same noise) plus what only an analysis needs: a shift added to **eps** instead of h, noise in
either space, the symmetric step, and recording of every applied dh and eps change. With an
h shift alone and ``mode="asymmetric"`` it gives exactly what ``generate`` gives (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from ..backbones.base import Backbone
from ..sampler import Phases, asymmetric_step, ddim_step
from ..schedule import abar_at, ddim_grid, generation_pairs

__all__ = ["HShift", "EpsShift", "Recording", "reverse"]

#: ``dh = h_shift(h, t, temb, step_index)`` ``[B, C, H, W]``.
HShift = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
#: ``d_eps = eps_shift(eps, t, step_index)`` ``[B, 3, S, S]``, added to the estimate P_t uses.
EpsShift = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class Recording:
    """What :func:`reverse` saw at each editing step, keyed by timestep t.

    Attributes:
        dh: the applied h shift ``[B, C, H, W]``.
        d_eps: the change of the estimate P_t used, e~ - e ``[B, 3, S, S]``.
        h_norm: per-image L2 norm of h ``[B]``.
    """

    dh: dict[int, torch.Tensor] = field(default_factory=dict)
    d_eps: dict[int, torch.Tensor] = field(default_factory=dict)
    h_norm: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def timesteps(self) -> list[int]:
        """The recorded editing timesteps, descending (the order they were visited)."""
        return sorted(set(self.dh) | set(self.d_eps), reverse=True)


@torch.no_grad()
def reverse(
    backbone: Backbone,
    x_T: torch.Tensor,
    n_steps: int,
    *,
    phases: Phases = Phases(),
    h_shift: HShift | None = None,
    eps_shift: EpsShift | None = None,
    mode: Literal["asymmetric", "symmetric"] = "asymmetric",
    generators: list[torch.Generator] | None = None,
    record: Recording | None = None,
) -> torch.Tensor:
    """Reverse process from x_T with optional shifts during the editing phase (t >= t_edit).

    Args:
        backbone: the frozen model.
        x_T: latents ``[B, 3, S, S]``.
        n_steps: DDIM grid size.
        phases: t_edit / t_boost / eta_boost, as in :func:`hspace.sampler.generate`.
        h_shift: dh applied as e~ = dec(h + dh) (None: no h shift).
        eps_shift: added to e~ after the h shift (None: none).
        mode: "asymmetric" (Asyrp: only P_t uses e~) or "symmetric" (P_t and D_t both use e~).
        generators: one per image, for the boosting phase's noise.
        record: filled with the applied dh, e~ - e and |h| at each editing step.

    Returns:
        x_0 ``[B, 3, S, S]`` float32.
    """
    if mode not in ("asymmetric", "symmetric"):
        raise ValueError(f"mode must be 'asymmetric' or 'symmetric', got {mode!r}")
    editing = h_shift is not None or eps_shift is not None
    seq = ddim_grid(n_steps, backbone.alphas_cumprod.shape[0] - 1)
    ac = backbone.alphas_cumprod
    x = x_T.float()
    for i, (t, t_next) in enumerate(generation_pairs(seq)):
        phase = phases.phase(t, editing=editing)
        tt = torch.full((x.shape[0],), float(t), device=x.device)
        enc = backbone.encode(x, tt)
        eps = backbone.decode(enc).float()
        eps_edit = eps
        if phase == "editing":
            if h_shift is not None:
                dh = h_shift(enc.h, tt, enc.temb, i).to(enc.h.dtype)
                eps_edit = backbone.decode(enc, enc.h + dh).float()
                if record is not None:
                    record.dh[t] = dh.detach().float().cpu()
            if eps_shift is not None:
                eps_edit = eps_edit + eps_shift(eps, tt, i).float()
            if record is not None:
                record.d_eps[t] = (eps_edit - eps).detach().cpu()
                record.h_norm[t] = enc.h.detach().float().flatten(1).norm(dim=1).cpu()
        eta = phases.eta_boost if phase == "boosting" else 0.0
        a, a_next = abar_at(ac, t), abar_at(ac, t_next)
        gen = generators if eta > 0 else None
        if mode == "symmetric":
            out = ddim_step(x, eps_edit, a, a_next, eta, generator=gen)
        else:
            out = asymmetric_step(x, eps, eps_edit, a, a_next, eta, generator=gen)
        x = out.x_next
    return x
