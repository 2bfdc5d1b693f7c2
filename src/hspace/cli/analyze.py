"""``hspace analyze``: measure the paper's h-space claims; writes report.md, results.json and a plot per claim."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Measure the paper's claims about h-space on a model and its directions, with numbers.

\b
Seven experiments on toy faces, each read by the toy-world attribute probe:
  1 homogeneity    one image's dh applied to other images vs their own dh
  2 linearity      factor vs strength in [-2, 2]: linear fit, R^2, reversal by negative strengths
  3 composition    two directions summed: does each still change its factor?
  4 robustness     the same noise norm in h vs in eps: probe FID and factor preservation
  5 consistency    cos(dh_t, dh_s) over the editing interval; one global dh vs dh_t
  6 asymmetry      asymmetric vs symmetric step vs a shared eps shift, for the same edit
  7 interval       success and probe FID as t_edit and t_boost move (automatic choice marked)

\b
Writes into --out: report.md (one line per claim + its plot), results.json (every number),
1_homogeneity.png .. 7_interval.png. docs/analysis.md explains how to read each section.

\b
Example:
  hspace analyze --model toy-faces --quick --out analysis/
  hspace analyze -m toy-faces -d smile.safetensors -d glasses.safetensors:0.8 --out analysis/
"""

SHORT_HELP = "Measure the h-space claims (homogeneity, linearity, ...); writes report.md, results.json, plots."


def register(app: typer.Typer) -> None:
    app.command("analyze", help=HELP, short_help=SHORT_HELP)(analyze_command)


def _directions(specs: list[str], model: str, backbone) -> list[tuple[str, object, float, str]]:
    from ..shipped import DIRECTIONS_DIR, shipped_direction_files
    from ..directions import load_direction

    pairs = [common.parse_direction_spec(s) for s in specs]
    if not pairs:
        files = shipped_direction_files(model)
        if not files:
            raise common.fail(
                f"no directions to analyse for model {model!r}: none given and none shipped in {DIRECTIONS_DIR / model}; "
                "pass --directions FILE.safetensors (train one with `hspace train`)"
            )
        notice(f"directions: the {len(files)} shipped for {model} ({', '.join(p.stem for p in files)})")
        pairs = [(p, 1.0) for p in files]
    out = []
    for path, strength in pairs:
        shipped = DIRECTIONS_DIR / model / f"{path}.safetensors"
        if not Path(path).exists() and Path(path).suffix == "" and shipped.is_file():
            path = shipped  # a shipped direction by name, e.g. -d smiling
        d = load_direction(path, backbone=backbone)  # checks it fits; names both shapes if not
        out.append((Path(path).stem, d, strength, str(path)))
    return out


@handle_errors
def analyze_command(
    out: Annotated[
        Path,
        typer.Option("--out", "--output", "-o", metavar="DIR", help="Output folder; must be new or empty unless --overwrite.",
                     show_default=False),
    ],
    model: Annotated[str, typer.Option("--model", "-m", metavar="MODEL", help=common.MODEL_HELP)] = "toy-faces",
    directions: Annotated[
        Optional[list[str]],
        typer.Option("--directions", "--direction", "-d", metavar="FILE[:STRENGTH]",
                     help="A direction file (or the name of one shipped for --model, e.g. smiling), with an optional unit "
                     "strength (default 1). Repeat for several. "
                     "Default: the directions shipped for --model.", show_default=False),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="CI-sized run (8 images, 10 steps, 2 directions, 1 pair): a few minutes on one CPU core (toy-faces runs 100 steps: about 13 min). Default: the fuller run (12 images, 20 steps, up to 5 directions).")] = False,
    n_images: Annotated[Optional[int], typer.Option("--n-images", metavar="N", help="Toy faces per experiment (>= 3). Default: 8 with --quick, else 12.", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", metavar="N", help="DDIM inversion and generation steps. Default: the model's own step count where it needs more (toy-faces: 100), else 10 with --quick and 20 without.", show_default=False)] = None,
    t_edit: Annotated[Optional[int], typer.Option("--t-edit", metavar="T", help="t_edit for every direction (0..999). Default: each direction file's, else the model's preset, else 500.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the faces (toy-world held-out seed + N) and of every noise draw.")] = 0,
    threads: Annotated[int, typer.Option("--threads", metavar="N", help="torch threads (0: torch's default). 1 is safest on a busy small CPU.")] = 1,
    overwrite: common.OverwriteDirOption = False,
) -> None:
    import torch
    from tqdm.auto import tqdm

    from ..analysis import AnalysisConfig, planned_runs, run_analysis
    from ..backbones.registry import list_models
    from ..outputs import prepare_output_dir
    from ..toyworld.probe import load_probe

    if threads < 0 or seed < 0:
        raise common.fail(f"--threads and --seed must be >= 0, got {threads} and {seed}")
    if threads:
        torch.set_num_threads(threads)
    overrides: dict = {"seed": seed, "t_edit": t_edit}
    if n_images is not None:
        overrides["n_images"] = n_images
    # the model's own step count where it needs more than the preset's 10 / 20 (toy-faces: fewer
    # break its reconstructions, and the experiments would measure those failures)
    steps = common.ddim_steps_for(model, steps, default=None)
    if steps is not None:
        overrides["n_steps"] = overrides["n_inv_steps"] = steps
    config = AnalysisConfig.quick_preset(**overrides) if quick else AnalysisConfig.full_preset(**overrides)
    common.check_output_dir(out, overwrite)
    probe = load_probe()
    backbone = common.load_model(model)
    found = _directions(list(directions or []), model, backbone)
    if len(found) > config.max_directions:
        notice(f"analysing the first {config.max_directions} of {len(found)} directions"
               + (" (--quick); run without --quick for all" if quick else ""))
    folder = prepare_output_dir(out, overwrite=overwrite)
    random_weights = "RANDOM" in (list_models().get(model) or "").upper()
    bar = tqdm(total=planned_runs(config, len(found)), desc="analyze", unit="run", disable=not common.progress())

    def on_run(label: str) -> None:
        bar.set_postfix_str(label[:40], refresh=False)
        bar.update(1)

    t0 = time.perf_counter()
    try:
        result = run_analysis(backbone, probe, found, config, folder, model_name=model,
                              random_weights=random_weights, on_run=on_run)
    finally:
        bar.close()
    for s in result.sections:
        say(f"{s.number}. {s.title}: {s.summary}".replace("**", ""))
    say(f"analysis of {model} ({len(result.run['directions'])} direction(s)) in {time.perf_counter() - t0:.0f} s -> "
        f"{folder}/ (report.md, results.json, {len(result.sections)} plots)")
