"""Writing an analysis: ``report.md`` (one line per claim, with its plot), ``results.json`` (every
number), and one PNG per section."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..outputs import to_jsonable, write_json
from .section import SECTION_ORDER, Section

__all__ = ["RESULTS_FORMAT_VERSION", "results_dict", "render_markdown", "write_report"]

RESULTS_FORMAT_VERSION = 1


def results_dict(sections: Sequence[Section], run: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: ``{format_version, kind, run, sections: {key: section}}``."""
    return {"format_version": RESULTS_FORMAT_VERSION, "kind": "hspace-analysis", "run": run,
            "sections": {s.key: s.to_dict() for s in sections}}


def _fmt(v: Any) -> str:
    return "—" if v is None else str(v)


def render_markdown(sections: Sequence[Section], run: dict[str, Any]) -> str:
    """The Markdown report (see docs/analysis.md for how to read it)."""
    cfg = run["config"]
    lines = [
        f"# h-space analysis: `{run['model']}`",
        "",
        f"{cfg['n_images']} toy faces (seed {cfg['seed']}), {cfg['n_inv_steps']} inversion + {cfg['n_steps']} generation "
        f"DDIM steps, {'quick' if cfg['quick'] else 'full'} mode; factors read by the toy-world attribute probe; "
        f"probe FID against {cfg['n_reference']} other real faces; success rule: {run.get('success_rule', '?')}. Run time {run['seconds_total']:.0f} s. "
        "Every number is in `results.json`; how to read each section: `docs/analysis.md`.",
        "",
    ]
    if run.get("random_weights"):
        lines += ["> **This model has random weights**: the numbers below exercise the plumbing and mean nothing.", ""]
    lines += ["## Directions", "", "| name | kind | target (how found) | unit strength | t_edit (source) |", "|---|---|---|---|---|"]
    for d in run["directions"]:
        tgt = d["target"]
        target = f"{tgt['factor']} → {tgt['value']} ({tgt['found_by']})" if tgt else "—"
        lines.append(f"| {d['name']} | {d['kind']} | {target} | {d['strength']:g} | {d['t_edit']} ({d['t_edit_source']}) |")
    if run.get("directions_not_analysed"):
        lines += ["", f"Not analysed (limit {cfg['max_directions']} directions in this mode): "
                  + ", ".join(run["directions_not_analysed"])]
    lines += ["", "## Summary", ""]
    for s in sections:
        lines.append(f"{s.number}. **{s.title}**: {s.summary}")
    for s in sections:
        lines += ["", f"## {s.number}. {s.title}", "", f"*Claim:* {s.claim}", "", s.summary, "",
                  f"![{s.title}]({s.plot_file})"]
        if s.notes:
            lines += [""] + [f"- note: {n}" for n in s.notes]
    return "\n".join(lines) + "\n"


def write_report(sections: Sequence[Section], run: dict[str, Any], folder: Path | str) -> dict[str, Path]:
    """Write every section's plot, ``results.json`` and ``report.md`` into ``folder`` (which must exist).

    Raises:
        ValueError: a section of :data:`~hspace.analysis.section.SECTION_ORDER` is missing.
    """
    from .plots import plot_section

    folder = Path(folder)
    missing = [k for k, _ in SECTION_ORDER if k not in {s.key for s in sections}]
    if missing:
        raise ValueError(f"report is missing sections {missing}")
    written = {s.key: plot_section(s, folder) for s in sections}
    written["results.json"] = write_json(to_jsonable(results_dict(sections, run)), folder / "results.json")
    path = folder / "report.md"
    path.write_text(render_markdown(sections, run), encoding="utf-8")
    written["report.md"] = path
    return written
