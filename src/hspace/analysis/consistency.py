"""Section 5, consistency across timesteps: dh_t points the same way at every t of the editing
interval, so one global dh (the mean of dh_t over t and images) edits like f_t."""

from __future__ import annotations

import torch

from ..sampler import Phases
from .context import AnalysisContext
from .factors import mean_std
from .section import Section, pct

__all__ = ["consistency", "cosine_matrix"]


def cosine_matrix(dh: dict[int, torch.Tensor]) -> tuple[list[int], torch.Tensor]:
    """Mean over images of cos(dh_t[i], dh_s[i]) for every pair of timesteps.

    Args:
        dh: ``{t: [B, C, H, W]}``.

    Returns:
        (timesteps descending, ``[T, T]`` matrix).
    """
    ts = sorted(dh, reverse=True)
    if not ts:
        return [], torch.zeros(0, 0)
    v = torch.stack([dh[t].flatten(1).double() for t in ts])  # [T, B, D]
    v = v / v.norm(dim=2, keepdim=True).clamp_min(1e-30)
    m = torch.einsum("tbd,sbd->tsb", v, v).mean(dim=2)
    return ts, m.float()


def consistency(ctx: AnalysisContext) -> Section:
    """Run section 5 (see the module docstring)."""
    per: dict[str, dict] = {}
    for d in ctx.directions:
        own = ctx.edit([(d, 1.0)], record=True)
        ts, m = cosine_matrix(own.record.dh)
        n = len(ts)
        off = m[~torch.eye(n, dtype=torch.bool)] if n > 1 else torch.ones(1)
        g = torch.stack([own.record.dh[t] for t in ts]).mean(dim=(0, 1)) if ts else None
        entry = {"target": d.target.label(), "timesteps": ts, "cosine_matrix": m.tolist(),
                 "mean_offdiag_cosine": float(off.mean()), "min_cosine": float(off.min())}
        if g is not None:
            def shift(h, t, temb, i, g=g):
                return g.to(h).unsqueeze(0).expand_as(h)

            glob = ctx.run(("global", d.name), f"global dh {d.name}", phases=Phases(t_edit=d.t_edit), h_shift=shift)
            d_own, d_glob = ctx.score_change(own, d.target), ctx.score_change(glob, d.target)
            entry.update({
                "own_change_mean": mean_std(d_own)[0], "global_change_mean": mean_std(d_glob)[0],
                "success_own": ctx.success(own, d.target),
                "success_global": ctx.success(glob, d.target),
                "image_change_own": float(ctx.change(own).mean()),
                "image_diff_global_vs_own": float((glob.images.clamp(-1, 1) - own.images.clamp(-1, 1)).abs().mean()),
                "global_dh_norm": float(g.norm()),
            })
        per[d.name] = entry
    parts = []
    for name, v in per.items():
        text = f"**{name}**: mean cos(dh_t, dh_s) {v['mean_offdiag_cosine']:.2f} (min {v['min_cosine']:.2f}) over {len(v['timesteps'])} steps"
        if "success_global" in v:
            text += (f"; the global dh reaches the target on {pct(v['success_global'])} vs {pct(v['success_own'])} with dh_t "
                     f"(score change {v['global_change_mean']:+.2f} vs {v['own_change_mean']:+.2f})")
        parts.append(text)
    return Section(
        key="consistency",
        claim="dh_t is nearly the same at every timestep of the editing interval, so one global dh (its mean) edits like f_t.",
        summary="; ".join(parts), data={"per_direction": per},
    )
