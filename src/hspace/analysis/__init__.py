"""The paper's h-space claims as measured experiments (``hspace analyze``).

Seven sections, each a function of an :class:`AnalysisContext` returning a :class:`Section`
(numbers, one summary line, notes), plotted by :mod:`.plots` and written by :mod:`.report`:

1. :func:`homogeneity` -- one image's dh applied to other images;
2. :func:`linearity` -- factor vs strength in [-2, 2], linear fit, reversal;
3. :func:`composition` -- two directions summed;
4. :func:`robustness` -- the same noise norm in h vs in eps;
5. :func:`consistency` -- cos(dh_t, dh_s) across the editing interval; global dh vs f_t;
6. :func:`asymmetry` -- asymmetric vs symmetric step vs shifting eps;
7. :func:`interval_sweep` -- success and probe FID as t_edit and t_boost move.

Factors are read by the toy-world attribute probe (:mod:`.factors`). Entry point:
:func:`run_analysis`. See docs/analysis.md.
"""

from .asymmetry import asymmetry
from .composition import composition
from .consistency import consistency, cosine_matrix
from .context import AnalysisConfig, AnalysisContext, DirectionUnderTest, build_context, render_faces
from .factors import TARGETS, Target, target_for_name
from .homogeneity import homogeneity
from .interval_sweep import interval_sweep
from .linearity import linear_fit, linearity
from .report import render_markdown, results_dict, write_report
from .robustness import robustness
from .runner import EXPERIMENTS, AnalysisOutput, planned_runs, run_analysis
from .runs import Recording, reverse
from .section import SECTION_ORDER, Section

__all__ = [
    "AnalysisConfig", "AnalysisContext", "DirectionUnderTest", "build_context", "render_faces",
    "TARGETS", "Target", "target_for_name",
    "homogeneity", "linearity", "linear_fit", "composition", "robustness", "consistency", "cosine_matrix",
    "asymmetry", "interval_sweep",
    "Section", "SECTION_ORDER", "EXPERIMENTS", "AnalysisOutput", "run_analysis", "planned_runs",
    "render_markdown", "results_dict", "write_report", "Recording", "reverse",
]
