"""Running every experiment in order and writing the report: :func:`run_analysis`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..backbones.base import Backbone
from ..directions import Direction
from ..outputs import run_record
from ..toyworld.probe import AttributeProbe
from .asymmetry import asymmetry
from .composition import composition
from .consistency import consistency
from .context import AnalysisConfig, build_context
from .factors import SUCCESS_RULE
from .homogeneity import homogeneity
from .interval_sweep import interval_sweep
from .linearity import linearity
from .report import write_report
from .robustness import robustness
from .section import Section

__all__ = ["AnalysisOutput", "run_analysis", "EXPERIMENTS", "planned_runs"]

log = logging.getLogger(__name__)

#: (key, function) in report order.
EXPERIMENTS: tuple[tuple[str, Callable[..., Section]], ...] = (
    ("homogeneity", homogeneity), ("linearity", linearity), ("composition", composition),
    ("robustness", robustness), ("consistency", consistency), ("asymmetry", asymmetry), ("interval", interval_sweep),
)


@dataclass
class AnalysisOutput:
    """What :func:`run_analysis` produced: the sections, the run record and the files written."""

    sections: list[Section]
    run: dict
    files: dict[str, Path]


def planned_runs(config: AnalysisConfig, n_directions: int) -> int:
    """About how many reverse runs (and inversions) an analysis does, for progress bars."""
    n = min(n_directions, config.max_directions)
    pairs = min(n * (n - 1) // 2, config.max_pairs)
    return (2 + n * (len(config.strengths) + 1 + 1 + 2) + pairs + 2 * len(config.noise_sizes)
            + 1 + len(config.t_edit_fractions) + len(config.t_boost_fractions) + 2)


def run_analysis(
    backbone: Backbone,
    probe: AttributeProbe,
    directions: Sequence[tuple[str, Direction, float, str | None]],
    config: AnalysisConfig,
    out_dir: Path | str,
    *,
    model_name: str | None = None,
    random_weights: bool = False,
    on_run: Callable[[str], None] | None = None,
) -> AnalysisOutput:
    """Measure the paper's h-space claims on ``backbone`` and write the report into ``out_dir``.

    Args:
        backbone: the frozen diffusion model.
        probe: the toy-world attribute probe (:func:`hspace.toyworld.probe.load_probe`).
        directions: ``(name, direction, unit strength, path or None)``; the first
            ``config.max_directions`` are analysed.
        config: sizes and seeds (:meth:`AnalysisConfig.quick_preset` / :meth:`AnalysisConfig.full_preset`).
        out_dir: an existing folder for ``report.md``, ``results.json`` and the PNGs.
        model_name: what the user called the model (default: its backbone id).
        random_weights: say in the report that the numbers mean nothing.
        on_run: called with a short label after each reverse run (progress).

    Returns:
        :class:`AnalysisOutput`.
    """
    t0 = time.perf_counter()
    ctx = build_context(backbone, probe, config, directions, on_run)
    timings = {"setup": time.perf_counter() - t0}
    sections = []
    for key, fn in EXPERIMENTS:
        t = time.perf_counter()
        sections.append(fn(ctx))
        timings[key] = time.perf_counter() - t
        log.debug("analysis section %s: %.1f s", key, timings[key])
    run = run_record(
        None, command="analyze", model=model_name or backbone.backbone_id, backbone_id=backbone.backbone_id,
        random_weights=random_weights,
        directions=[d.describe() for d in ctx.directions],
        directions_not_analysed=[name for name, *_ in list(directions)[config.max_directions:]],
        seconds_total=time.perf_counter() - t0, seconds_per_section=timings, success_rule=SUCCESS_RULE,
    )
    run["config"] = config.to_dict()
    files = write_report(sections, run, out_dir)
    return AnalysisOutput(sections=sections, run=run, files=files)
