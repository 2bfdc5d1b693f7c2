"""Section 2, linearity: the factor responds linearly to the strength s in h + s dh, and
negative strengths reverse the attribute."""

from __future__ import annotations

import numpy as np

from .context import AnalysisContext
from .factors import mean_std
from .section import Section, pct

__all__ = ["linearity", "linear_fit"]


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y = a x + b; returns (a, b, R^2) (R^2 NaN when y is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = np.polyfit(x, y, 1)
    ss_res = float(((y - (a * x + b)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), (1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def linearity(ctx: AnalysisContext) -> Section:
    """Run section 2 for every direction over ``config.strengths``."""
    strengths = sorted(ctx.config.strengths)
    per: dict[str, dict] = {}
    for d in ctx.directions:
        rows = []
        xs, ys = [], []
        zero_diff = float("nan")
        changes = {}
        for s in strengths:
            run = ctx.edit([(d, s)], record=s in (0.0, 1.0))
            dy = ctx.score_change(run, d.target)
            changes[s] = dy
            m, sd = mean_std(dy)
            rows.append({"strength": s, "score_change_mean": m, "score_change_std": sd,
                         "success_of_signed_target": ctx.success(run, d.target, strength=s) if s != 0 else None,
                         "image_change": float(ctx.change(run).mean())})
            xs += [s] * len(dy)
            ys += dy.tolist()
            if s == 0.0:
                zero_diff = float((run.images - ctx.recon).abs().max())
        a, b, r2 = linear_fit(np.array(xs), np.array(ys))
        means = np.array([r["score_change_mean"] for r in rows])
        _, _, r2_means = linear_fit(np.array(strengths), means)
        neg = [s for s in strengths if s < 0]
        s_min = min(neg) if neg else None
        per[d.name] = {
            "target": d.target.label(), "strengths": strengths, "rows": rows,
            "slope": a, "intercept": b, "r2_all_points": r2, "r2_means": r2_means,
            "zero_strength_max_abs_diff": zero_diff,
            "most_negative_strength": s_min,
            "reverse_rate": float((changes[s_min] < 0).float().mean()) if s_min is not None else float("nan"),
            "reverses_on_average": bool(s_min is not None and means[0] < 0 < means[-1]),
            "reversed_success": next((r["success_of_signed_target"] for r in rows if r["strength"] == s_min), None),
        }
    parts = [f"**{n}** ({v['target']}): slope {v['slope']:+.3f} per unit strength, R² {v['r2_means']:.3f} "
             f"(means; {v['r2_all_points']:.3f} all points); s={v['most_negative_strength']:g} lowers the score on "
             f"{pct(v['reverse_rate'])} of images (reversed target reached on {pct(v['reversed_success'])}); s=0 equals the reconstruction to {v['zero_strength_max_abs_diff']:.1e}"
             for n, v in per.items()]
    return Section(
        key="linearity",
        claim="The change grows linearly with the strength s of h + s dh, and negative s reverses the attribute.",
        summary="; ".join(parts), data={"per_direction": per},
    )
