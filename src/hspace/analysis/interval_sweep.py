"""Section 7, editing interval and quality boosting: edit success and probe FID as t_edit and
t_boost move, with the automatic choice (DESIGN.md 1.6) marked.

The automatic choice measures the editing-strength and quality-deficiency curves along the
inversion of this run's images (:func:`hspace.interval.measure_curves`) and applies the paper's
thresholds (:func:`hspace.interval.choose_interval`, cos_txt from the direction file or 1).
The t_edit sweep runs without boosting; the t_boost sweep edits from the automatic t_edit with
stochastic boosting (eta = 1, seeded per image) below each t_boost.
"""

from __future__ import annotations

import warnings

from ..distances import get_distance
from ..interval import choose_interval, measure_curves
from .context import AnalysisContext
from .factors import mean_std, preservation, probe_fd
from .section import Section, pct

__all__ = ["interval_sweep", "snap_to_grid"]


def snap_to_grid(values: list[float], grid: list[int]) -> list[int]:
    """Each value replaced by the nearest grid timestep; duplicates dropped; ascending."""
    return sorted({min(grid, key=lambda g: (abs(g - v), g)) for v in values})


def interval_sweep(ctx: AnalysisContext, distance: str = "auto") -> Section:
    """Run section 7 on the first direction (see the module docstring)."""
    d = ctx.directions[0]
    grid = ctx.grid()
    top = grid[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = get_distance(distance)
    curves = measure_curves(ctx.backbone, ctx.images.to(ctx.backbone.device), dist, n_steps=ctx.config.n_steps,
                            batch_size=max(ctx.config.n_images, 1), progress=False)
    ctx.on_run("interval curves")
    cos_txt = float(d.direction.meta.extra.get("cos_txt") or 1.0)
    choice = choose_interval(curves, cos_txt=min(max(cos_txt, 0.01), 1.0))
    auto_edit = min(choice.t_edit, top)
    auto_boost = min(choice.t_boost, auto_edit)

    def measure(run) -> dict:
        return {"success": ctx.success(run, d.target), "score_change_mean": mean_std(ctx.score_change(run, d.target))[0],
                "probe_fid": probe_fd(run.features, ctx.reference_features),
                "preservation": mean_std(preservation(ctx.recon_reading, run.reading, exclude=d.target.factor))[0],
                "image_change": float(ctx.change(run).mean())}

    edit_values = snap_to_grid([f * top for f in ctx.config.t_edit_fractions] + [auto_edit, d.t_edit], grid)
    edit_rows = [{"t_edit": t, **measure(ctx.edit([(d, 1.0)], t_edit=t))} for t in edit_values]
    boost_values = [t for t in snap_to_grid([f * top for f in ctx.config.t_boost_fractions] + [auto_boost], grid)
                    if t <= auto_edit]
    boost_rows = [{"t_boost": t, **measure(ctx.edit([(d, 1.0)], t_edit=auto_edit, t_boost=t))} for t in boost_values]
    best_edit = max(edit_rows, key=lambda r: (r["success"] if r["success"] is not None else -1.0,
                                              -r["probe_fid"] if r["probe_fid"] == r["probe_fid"] else 0.0))
    auto_row = next(r for r in edit_rows if r["t_edit"] == snap_to_grid([auto_edit], grid)[0])
    auto_boost_row = next((r for r in boost_rows if r["t_boost"] == snap_to_grid([auto_boost], grid)[0]), None)
    notes = [str(w.message) for w in caught if "LPIPS" in str(w.message)]
    if choice.note:
        notes.append("automatic choice: " + choice.note)
    summary = (f"**{d.name}**: automatic t_edit {auto_edit} (success {pct(auto_row['success'])}, probe FID "
               f"{auto_row['probe_fid']:.2f}); best success in the sweep {pct(best_edit['success'])} at t_edit "
               f"{best_edit['t_edit']}; " + (f"automatic t_boost {auto_boost}: probe FID {auto_boost_row['probe_fid']:.2f} vs "
                                            f"{boost_rows[0]['probe_fid']:.2f} without boosting" if auto_boost_row and boost_rows
                                            else "no boosting value at or below t_edit"))
    return Section(
        key="interval",
        claim="Editing only for t >= t_edit and boosting quality below t_boost, both chosen automatically, "
              "gives successful edits of good quality.",
        summary=summary,
        data={"direction": d.name, "target": d.target.label(), "grid": grid,
              "automatic": {"t_edit": auto_edit, "t_boost": auto_boost, "source": choice.source,
                            "distance": curves.distance_name, "cos_txt": choice.cos_txt, "note": choice.note},
              "direction_t_edit": {"value": d.t_edit, "source": d.t_edit_source},
              "curves": {"timesteps": curves.timesteps, "strength": curves.strength, "deficiency": curves.deficiency},
              "t_edit_sweep": edit_rows, "t_boost_sweep": boost_rows,
              "probe_fid_reconstruction": probe_fd(ctx.recon_run.features, ctx.reference_features)},
        notes=notes,
    )
