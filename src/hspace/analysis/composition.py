"""Section 3, composition: h + dh_a + dh_b changes both attributes, each about as much as alone."""

from __future__ import annotations

import itertools

from .context import AnalysisContext
from .factors import mean_std
from .section import Section, pct

__all__ = ["composition"]


def composition(ctx: AnalysisContext) -> Section:
    """Run section 3 on the first ``config.max_pairs`` pairs of directions with different targets."""
    claim = "Summing two directions (h + dh_a + dh_b) changes both attributes, each about as much as alone."
    pairs = [(a, b) for a, b in itertools.combinations(ctx.directions, 2)
             if (a.target.factor, a.target.value) != (b.target.factor, b.target.value)][: ctx.config.max_pairs]
    if not pairs:
        why = (f"needs two directions with different targets; this run has {len(ctx.directions)}"
               + ("" if len(ctx.directions) < 2 else " (same target, or --quick's pair limit)"))
        return Section(key="composition", claim=claim, summary=f"not measured: {why}", status="skipped", reason=why,
                       data={"pairs": []})
    rows = []
    for a, b in pairs:
        both = ctx.edit([(a, 1.0), (b, 1.0)])
        row = {"a": a.name, "b": b.name, "t_edit": min(a.t_edit, b.t_edit), "rule": "plain sum h + dh_a + dh_b"}
        for me, other in ((a, b), (b, a)):
            alone = ctx.edit([(me, 1.0)])
            other_alone = ctx.edit([(other, 1.0)])
            m_alone, _ = mean_std(ctx.score_change(alone, me.target))
            m_both, _ = mean_std(ctx.score_change(both, me.target))
            m_cross, _ = mean_std(ctx.score_change(other_alone, me.target))
            key = "a" if me is a else "b"
            row[key + "_target"] = me.target.label()
            row[key + "_change_alone"] = m_alone
            row[key + "_change_combined"] = m_both
            row[key + "_change_from_other_alone"] = m_cross
            row[key + "_ratio_combined_to_alone"] = m_both / m_alone if abs(m_alone) > 1e-12 else float("nan")
            row[key + "_success_alone"] = ctx.success(alone, me.target)
            row[key + "_success_combined"] = ctx.success(both, me.target)
        rows.append(row)
    parts = [f"**{r['a']} + {r['b']}**: {r['a']} keeps {pct(r['a_ratio_combined_to_alone'])} of its change alone "
             f"(success {pct(r['a_success_combined'])} vs {pct(r['a_success_alone'])}), {r['b']} keeps "
             f"{pct(r['b_ratio_combined_to_alone'])} (success {pct(r['b_success_combined'])} vs {pct(r['b_success_alone'])})"
             for r in rows]
    notes = ["`hspace edit` composes several directions as sum / sqrt(N); this section measures the plain sum the claim is about"]
    return Section(key="composition", claim=claim, summary="; ".join(parts), data={"pairs": rows}, notes=notes)
