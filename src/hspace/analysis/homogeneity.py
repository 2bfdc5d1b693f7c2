"""Section 1, homogeneity: one dh works the same on every image.

For each direction, dh_t is taken from image A (the first image: the f_t output at A's own h
along A's edit) and applied unchanged to every other image B. If h-space is homogeneous, B's
factor change with A's dh matches B's change with its own dh (f_t at B's h).
"""

from __future__ import annotations

import numpy as np
import torch

from ..sampler import Phases
from .context import AnalysisContext
from .factors import mean_std
from .section import Section, pct

__all__ = ["homogeneity", "DONOR"]

#: Index of the image whose dh is borrowed.
DONOR = 0


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


def homogeneity(ctx: AnalysisContext) -> Section:
    """Run section 1 (see the module docstring)."""
    per: dict[str, dict] = {}
    for d in ctx.directions:
        own = ctx.edit([(d, 1.0)], record=True)
        rec = own.record
        donor_dh = {t: rec.dh[t][DONOR] for t in rec.dh}

        def shift(h, t, temb, i, donor_dh=donor_dh):
            return donor_dh[int(t[0].item())].to(h).unsqueeze(0).expand_as(h)

        borrowed = ctx.run(("homogeneity", d.name), f"homogeneity {d.name}", phases=Phases(t_edit=d.t_edit), h_shift=shift)
        others = slice(DONOR + 1, None)
        d_own = ctx.score_change(own, d.target)[others]
        d_bor = ctx.score_change(borrowed, d.target)[others]
        cos = torch.stack([_cos(rec.dh[t][others], rec.dh[t][DONOR:DONOR + 1].expand_as(rec.dh[t][others]))
                           for t in rec.dh]) if rec.dh else torch.zeros(1, 1)
        m_own, s_own = mean_std(d_own)
        m_bor, s_bor = mean_std(d_bor)
        corr = float(np.corrcoef(d_own.numpy(), d_bor.numpy())[0, 1]) if len(d_own) > 2 and s_own > 0 and s_bor > 0 else float("nan")
        per[d.name] = {
            "target": d.target.label(), "donor_image": DONOR, "n_other_images": int(len(d_own)),
            "own_change": d_own.tolist(), "borrowed_change": d_bor.tolist(),
            "own_change_mean": m_own, "own_change_std": s_own,
            "borrowed_change_mean": m_bor, "borrowed_change_std": s_bor,
            "success_own": ctx.success(own, d.target, subset=others),
            "success_borrowed": ctx.success(borrowed, d.target, subset=others),
            "mean_abs_gap": float((d_own - d_bor).abs().mean()),
            "ratio_borrowed_to_own": m_bor / m_own if abs(m_own) > 1e-12 else float("nan"),
            "correlation": corr,
            "dh_cosine_donor_vs_others": float(cos.mean()),
            "h_independent_kind": d.direction.meta.kind in ("global", "per-step"),
        }
    parts = [f"**{n}** ({v['target']}): A's dh reaches the target on {pct(v['success_borrowed'])} of the other images "
             f"vs {pct(v['success_own'])} with their own dh; score change {v['borrowed_change_mean']:+.2f} ± "
             f"{v['borrowed_change_std']:.2f} vs {v['own_change_mean']:+.2f} ± {v['own_change_std']:.2f}; "
             f"cos(dh_A, dh_B) {v['dh_cosine_donor_vs_others']:.2f}" for n, v in per.items()]
    notes = [f"{n}: its dh does not depend on h (kind {ctx.directions[i].direction.meta.kind}), so borrowing is "
             "identical to its own edit by construction" for i, (n, v) in enumerate(per.items()) if v["h_independent_kind"]]
    return Section(
        key="homogeneity",
        claim="One dh has the same effect on every image: dh computed at image A's h, applied to image B, "
              "changes B's attribute as much as B's own dh.",
        summary="; ".join(parts), data={"per_direction": per}, notes=notes,
    )
