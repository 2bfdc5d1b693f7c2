"""``hspace toyworld train-directions`` and ``hspace toyworld check``: the shipped directions and
the built-in world's quality bars (registered on the ``toyworld`` sub-app)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .common import OVERWRITE_HELP, fail, handle_errors, notice, progress, say
from .toyworld import toyworld_app

TRAIN_DIRECTIONS_HELP = """Train the shipped toy-world directions from text with the small CLIP, then judge each with the probe.

The committed recipe (docs/toyworld.md): the paper's implicit f_t, CLIP directional + L1 loss, 20 faces of
training seed 2 (never used for evaluation), 40 DDIM steps, SGD with each direction's own rate and editing interval
(ToyDirection.lr and .t_edit: lr 0.75 / 0.125 / 2 / 0.25 / 2 and t_edit 300 / 300 / 300 / 300 / 500 for smiling,
glasses, blond, eyes closed and hat; smiling's file asks to be edited only where t <= 700, ToyDirection.edit_t_max),
one epoch, bf16
autocast in the training steps. Needs the trained toy-faces model and toy CLIP. Each direction is checkpointed
after every image (rerun the same command to resume) and written to OUT/<name>.safetensors; OUT/eval.json
holds the recipe, the training time and, per direction, the target success and the preservation of every other
factor at strength 1 on 100 held-out faces.

\b
Examples:
  hspace toyworld train-directions                        # all five, into the shipped folder
  hspace toyworld train-directions --only glasses --out /tmp/dirs
  hspace toyworld train-directions --model /tmp/candidate --out /tmp/dirs --lr 2 --epochs 3   # for a retrained U-Net
"""

CHECK_HELP = """Measure the built-in world's quality bars and write them as JSON and Markdown.

\b
Bars (issue 3): probe accuracy >= 98 % per binary factor and hair colour, smile R^2 >= 0.95;
base model >= 90 % of 200 samples (50 DDIM steps) judged valid faces by the probe, probe FID of samples
vs held-out faces next to that of two held-out sets; inversion + reconstruction PSNR >= 30 dB at 100 steps
(40 and 1000 reported too); small CLIP zero-shot >= 90 % per factor; each shipped direction at
strength 1: target changed on >= 90 % of 100 held-out faces, every other factor kept on >= 90 %.

\b
Examples:
  hspace toyworld check --out quality/                    # everything (about 15 min on 2 CPU cores)
  hspace toyworld check --quick --out /tmp/q              # fewer images, no 1000-step inversion
  hspace toyworld check --only directions --out /tmp/q
  hspace toyworld check --only base --model /tmp/candidate --out /tmp/q   # a retrained U-Net, shipped one untouched
  hspace toyworld check --only directions --directions-dir /tmp/dirs --model /tmp/candidate --out /tmp/q
  hspace toyworld check --only h-oracle --by-level --model /tmp/candidate --out /tmp/q   # what h (and each skip level) carries
"""

CHECKS = ("probe", "base", "inversion", "clip", "directions")
#: Diagnoses run only when named with --only (slow, and no bar).
EXTRA_CHECKS = ("h-oracle",)


def _need(what: str, load):
    from ..backbones.registry import ModelNotAvailableError
    from ..toyworld.probe import ModelNotTrainedError

    try:
        return load()
    except (ModelNotAvailableError, ModelNotTrainedError) as e:
        raise fail(f"{what}: {e}", code=1) from e


def _load_model(model: str):
    """The diffusion model ``model`` (a built-in name or a diffusers folder), or a clear exit."""
    from ..backbones.registry import load_backbone

    return _need(model, lambda: load_backbone(model))


def _load_toy_model(option: str, value: str, builtin: str, what: str, load: Callable, train_command: str):
    """A built-in toy model by its name, or a candidate folder that ``train_command`` exported."""
    from ..toyworld.probe import ModelNotTrainedError

    if value == builtin:
        return _need(what, load)
    try:
        return load(Path(value).expanduser())
    except ModelNotTrainedError as e:  # a wrong folder is bad input, not a missing built-in
        raise fail(f"{option} {value}: not the built-in {builtin} nor a folder written by "
                   f"`{train_command}` ({e})") from e


def _load_clip(clip: str):
    """The toy CLIP: the built-in ``toy-clip`` or a folder a ``train-clip --out`` exported."""
    from ..toyworld.clip_train import load_toy_clip

    return _load_toy_model("--clip", clip, "toy-clip", "toy CLIP", load_toy_clip,
                           "hspace toyworld train-clip --out DIR")


def _load_probe(probe: str):
    """The toy probe: the built-in ``toy-probe`` or a folder a ``train-probe --out`` exported."""
    from ..toyworld.probe import load_probe

    return _load_toy_model("--probe", probe, "toy-probe", "toy probe", load_probe,
                           "hspace toyworld train-probe --out DIR")


def _load_world(need_clip: bool = True, model: str = "toy-faces", clip: str = "toy-clip", probe: str = "toy-probe"):
    backbone = _load_model(model)
    judge = _load_probe(probe)
    encoder = _load_clip(clip) if need_clip else None
    return backbone, judge, encoder


@toyworld_app.command("train-directions", help=TRAIN_DIRECTIONS_HELP,
                      short_help="Train + judge the shipped toy directions (smiling, glasses, ...).")
@handle_errors
def train_directions_command(
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Train only these (repeatable): smiling, glasses, blond, eyes_closed, hat.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the direction files (default: the shipped folder).")] = None,
    t_edit: Annotated[Optional[int], typer.Option("--t-edit", help="Editing interval start for every direction trained (train where t >= T; default: each direction's own, 300 or 500, see TOY_DIRECTIONS; 500 for --method mean-difference).")] = None,
    t_edit_max: Annotated[Optional[int], typer.Option("--t-edit-max", help="Editing band top for every direction trained (train and edit only where t <= T too; default: each direction's own, see TOY_DIRECTIONS).")] = None,
    n_images: Annotated[int, typer.Option("--n-images", help="Training faces.")] = 20,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training faces.")] = 1,
    lr: Annotated[Optional[float], typer.Option("--lr", help="SGD learning rate for every direction trained (default: each direction's own, 0.125-2; see TOY_DIRECTIONS).")] = None,
    w_off: Annotated[Optional[float], typer.Option("--w-off", help="Off-axis CLIP penalty weight for every direction trained (0: the paper's objective; default: each direction's own, see TOY_DIRECTIONS).")] = None,
    eval_n: Annotated[int, typer.Option("--eval-n", help="Held-out faces to judge each direction on (0: skip).")] = 100,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="Diffusion model to train on: the built-in toy-faces, or a folder in the diffusers layout (a `train-unet --out`; then pass --out too).")] = "toy-faces",
    clip: Annotated[str, typer.Option("--clip", help="CLIP for the loss: the built-in toy-clip, or a folder from `train-clip --out` (then pass --out too).")] = "toy-clip",
    probe_name: Annotated[str, typer.Option("--probe", help="Attribute probe that judges: the built-in toy-probe, or a folder from `train-probe --out` (for a world the shipped probe was not trained on).")] = "toy-probe",
    method: Annotated[str, typer.Option("--method", help="clip: the paper's training from text (the shipped files). mean-difference: no text or training, the mean h difference between the training faces and their exact edits, a reference point for what h carries (needs --out).")] = "clip",
) -> None:
    import torch

    from ..cache import weights_digest
    from ..directions import save_direction
    from ..editor import EditConfig, Editor
    from ..toyworld.directions import (DIRECTIONS_DIR, TOY_DIRECTIONS, DirectionRecipe, face_images,
                                       mean_difference_for, recipe_for, train_direction)
    from .toyworld import _toy_ckpt_dir

    names = list(only) if only else list(TOY_DIRECTIONS)
    unknown = [n for n in names if n not in TOY_DIRECTIONS]
    if unknown:
        raise fail(f"unknown direction(s) {unknown}; choose from {list(TOY_DIRECTIONS)}")
    if n_images < 1 or epochs < 1 or eval_n < 0 or threads < 1 or (t_edit is not None and not 0 <= t_edit <= 999) or (lr is not None and lr <= 0):
        raise fail("need --n-images >= 1, --epochs >= 1, --eval-n >= 0, --threads >= 1, 0 <= --t-edit <= 999, --lr > 0")
    if w_off is not None and w_off < 0:
        raise fail(f"--w-off must be >= 0, got {w_off}")
    if method not in ("clip", "mean-difference"):
        raise fail(f"--method must be clip or mean-difference, got {method!r}")
    if (model != "toy-faces" or clip != "toy-clip" or probe_name != "toy-probe" or method != "clip") and out is None:
        raise fail("directions for another --model, --clip, --probe or --method go to their own folder: pass --out DIR "
                   "(the shipped ones are toy-faces', trained with toy-clip and judged by toy-probe)")
    if method != "clip" and clip != "toy-clip":
        raise fail("--clip is for --method clip; mean-difference directions use no CLIP")
    folder = (out or DIRECTIONS_DIR).expanduser()
    existing = [folder / f"{n}.safetensors" for n in names if (folder / f"{n}.safetensors").exists()]
    if existing and not overwrite:
        raise fail(f"{existing[0]} exists; pass --overwrite to replace it (or --out another folder)")
    recipe = DirectionRecipe(n_images=n_images, epochs=epochs)
    if t_edit is not None:
        recipe.t_edit = t_edit
    # each direction's own rate and interval, unless an option sets one for all; checked before any work
    given = {k: v for k, v in (("lr", lr), ("t_edit", t_edit), ("t_edit_max", t_edit_max), ("w_off", w_off)) if v is not None}
    owns = {name: dataclasses.replace(recipe_for(TOY_DIRECTIONS[name], recipe), **given) for name in names}
    for name, own in owns.items():
        for top in (own.t_edit_max, own.edit_t_max):
            if top is not None and top < own.t_edit:
                raise fail(f"{name}: its editing band top {top} is below its t_edit {own.t_edit}; "
                           "lower --t-edit, or raise --t-edit-max")
    torch.set_num_threads(threads)
    backbone, probe, encoder = _load_world(need_clip=method == "clip", model=model, clip=clip, probe=probe_name)
    folder.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    editor = Editor(backbone, EditConfig(n_inv_steps=recipe.n_inv_steps, n_steps=recipe.n_steps, cache_latents=False,
                                         batch_size=10, progress=progress()))
    if method == "mean-difference":
        trained = {}
        for name in names:
            t1 = time.perf_counter()
            direction, n_pairs = mean_difference_for(backbone, TOY_DIRECTIONS[name], recipe, editor.invert)
            path = save_direction(direction, folder / f"{name}.safetensors", overwrite=overwrite)
            trained[name] = {"file": str(path), "seconds": round(time.perf_counter() - t1, 1), "method": method,
                             "pairs": n_pairs}
            notice(f"{name}: mean difference of h over {n_pairs} face(s) and their exact edits "
                   f"in {trained[name]['seconds']:.0f} s -> {path}")
        _judge_and_record(folder, names, trained, recipe, eval_n, backbone, probe, time.perf_counter() - t0,
                          model=model, clip=None, probe=probe_name, method=method)
        return
    images = face_images(recipe.data_seed, recipe.n_images)
    latents = editor.invert(images)
    invert_s = time.perf_counter() - t0
    notice(f"inverted {len(images)} training faces in {invert_s:.0f} s")
    ckpt_dir = _toy_ckpt_dir("directions-ckpt")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    weights = [weights_digest(backbone), weights_digest(encoder.model)]
    trained: dict[str, Any] = {}
    for name in names:
        spec = TOY_DIRECTIONS[name]
        own = owns[name]
        t1 = time.perf_counter()
        # one checkpoint per (texts, recipe, model and CLIP weights): a changed recipe or a
        # retrained model starts afresh instead of resuming what was trained for the other
        key = hashlib.sha1(json.dumps([spec.source, spec.target, own.to_dict(), weights],
                                      sort_keys=True).encode()).hexdigest()[:10]
        ckpt = ckpt_dir / f"{name}-{key}.ckpt.safetensors"
        res = train_direction(backbone, encoder, spec, own, latents, images, checkpoint=ckpt, progress=progress())
        path = save_direction(res.direction, folder / f"{name}.safetensors", overwrite=overwrite)
        for f in (ckpt, ckpt.with_suffix(".json")):
            f.unlink(missing_ok=True)  # the direction file now holds the result
        trained[name] = {"file": str(path), "seconds": round(time.perf_counter() - t1, 1), "steps": res.steps,
                         "final_loss": res.losses[-1] if res.losses else None, "source": spec.source, "target": spec.target,
                         "lr": own.lr, "t_edit": own.t_edit, "t_edit_max": own.t_edit_max, "edit_t_max": own.edit_t_max,
                         "w_off": own.w_off}
        notice(f"{name}: {spec.source!r} -> {spec.target!r} trained in {trained[name]['seconds']:.0f} s -> {path}")
    _judge_and_record(folder, names, trained, recipe, eval_n, backbone, probe, time.perf_counter() - t0,
                      model=model, clip=clip, probe=probe_name, method=method, invert_seconds=round(invert_s, 1))


def _judge_and_record(folder: Path, names: list[str], trained: dict[str, Any], recipe, eval_n: int, backbone, judge,
                      seconds: float, **run_fields: Any) -> None:
    """Judge the new direction files (``eval_n`` held-out faces) and merge them into eval.json."""
    from ..outputs import run_record, write_json
    from ..toyworld.probe import EVAL_SEED

    evals: dict[str, Any] = {}
    if eval_n:
        from ..toyworld.quality import check_directions

        evals = check_directions(backbone, judge, names, n=eval_n, progress=progress(), log=say,
                                 folder=folder)["directions"]
    # eval.json keeps one entry per direction, so retraining one leaves the others' records
    summary_path = folder / "eval.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    entries = summary.get("directions", {})
    run = run_record(recipe, command="toyworld train-directions", names=names, train_seconds_total=round(seconds, 1),
                     eval_n=eval_n, eval_seed=EVAL_SEED, **run_fields)
    for name in names:
        entries[name] = {"trained": trained[name], "eval": evals.get(name), "run": run}
    write_json({"directions": entries}, summary_path)
    say(f"made {len(names)} direction(s) in {seconds / 60:.1f} min -> {folder}/ (eval.json has the recipe and scores)")


def verdict(passed: Any) -> str:
    """One check's line: "passed", "NOT passed" or "measured" (no bar). A dict (the CLIP's, one
    entry per caption style) passes only when every entry does."""
    if isinstance(passed, dict):
        passed = bool(passed) and all(passed.values())
    return "passed" if passed else ("NOT passed" if passed is False else "measured")


def _markdown(results: dict[str, Any]) -> str:
    """The quality table for the README / docs."""
    lines = ["| part | measure | value | bar | passed |", "|---|---|---|---|---|"]

    def row(part: str, measure: str, value: str, bar: str, ok: Optional[bool]) -> None:
        lines.append(f"| {part} | {measure} | {value} | {bar} | {'yes' if ok else ('no' if ok is False else '-')} |")

    if "probe" in results:
        for name, b in results["probe"]["bars"].items():
            row("probe", f"{name} ({'R^2' if name == 'smile' else 'accuracy'}, n={results['probe']['n']})",
                f"{b['value']:.3f}", f">= {b['bar']}", b["passed"])
    if "base" in results:
        b = results["base"]
        clip = ", P_t clipped to [-1, 1]" if b.get("clip_x0") else ""
        row("toy-faces", f"valid faces, {b['n']} samples x {b['ddim_steps']} DDIM steps{clip}", f"{b['valid_rate']:.3f}",
            ">= 0.9", b["passed"])
        if "eps_mean_response" in b:
            for t, r in b["eps_mean_response"].items():
                model = ", ".join(f"{v:.2f}" for v in r["model"])
                ideal = ", ".join(f"{v:.2f}" for v in r["ideal"])
                row("toy-faces", f"eps follows a shift of the image mean at t={t} (R, G, B): model / exact denoiser",
                    f"{model} / {ideal}", "", None)
        row("toy-faces", "valid faces among held-out real faces (reference)", f"{b['valid_rate_real']:.3f}", "", None)
        row("toy-faces", "probe FID samples vs held-out", f"{b['probe_fid_samples_vs_real']:.3f}", "", None)
        row("toy-faces", "probe FID held-out vs held-out (reference)", f"{b['probe_fid_real_vs_real']:.3f}", "", None)
        if "ancestral" in b:
            a = b["ancestral"]
            row("toy-faces", f"valid faces, same noise, {b['ddim_steps']} steps with eta = 1 (ancestral; not the bar)",
                f"{a['valid_rate']:.3f}", "", None)
            row("toy-faces", "render error median: DDIM / ancestral (valid at most)",
                f"{b['render_error_median']:.3f} / {a['render_error_median']:.3f} ({b['render_error_threshold']:.3f})", "", None)
            row("toy-faces", "probe FID samples vs held-out, ancestral", f"{a['probe_fid_samples_vs_real']:.3f}", "", None)
    if "inversion" in results:
        inv = results["inversion"]
        for k, v in inv["psnr_db"].items():
            bar = ">= 30 dB" if k == "100" else ""
            row("toy-faces", f"inversion + reconstruction PSNR, {k} steps (n={inv['n']})",
                f"{v['mean']:.2f} dB (min {v['min']:.2f})", bar, (v["mean"] >= 30.0) if k == "100" else None)
    if "clip" in results:
        for style, acc in results["clip"]["accuracy"].items():
            for factor, a in acc.items():
                row("toy CLIP", f"zero-shot {factor} ({style} captions, n={results['clip']['n']})", f"{a:.3f}",
                    ">= 0.9", a >= 0.9)
    if "directions" in results:
        d = results["directions"]
        if not d.get("directions"):
            row("directions", d.get("note", "none shipped"), "-", "", False)
        for name, r in d.get("directions", {}).items():
            if "success_rate" not in r:
                row("directions", name, r.get("note", "-"), "", False)
                continue
            rate = r["success_rate"]
            row("directions", f"{name}: target changed (n={r['success']['n_eligible']} eligible)",
                "-" if rate is None else f"{rate:.3f}", ">= 0.9", rate is not None and rate >= 0.9)
            row("directions", f"{name}: worst other factor kept ({r.get('worst_factor', '?')})",
                f"{r['min_preserved']:.3f}", ">= 0.9", r["min_preserved"] >= 0.9)
            colour = r.get("mean_colour") or {}
            if colour.get("n"):
                row("directions", f"{name}: mean image colour moved, edit vs exact edit (n={colour['n']})",
                    f"{colour['edit_mean']:+.4f} vs {colour['needed_mean']:+.4f}", "", None)
    if "h-oracle" in results:
        o = results["h-oracle"]
        for name, r in o["directions"].items():
            band = f"t >= {o['t_edit']}" if o.get("t_edit_max") is None else f"{o['t_edit']} <= t <= {o['t_edit_max']}"
            edits = [(f"each face given the h of its exact edit ({band}, n={o['n']})", r)]
            edits += [(f"the same with the exact edit's {label} (skip levels in px)", v)
                      for label, v in (r.get("by_level") or {}).items()]
            for what, v in edits:
                rate = v["success_rate"]
                row("h oracle", f"{name}: {what}: target reached / worst other factor kept ({v['worst_factor']})",
                    f"{'-' if rate is None else f'{rate:.3f}'} / {v['min_preserved']:.3f}", "diagnosis", None)
            m = r.get("dh_norms")
            if m:
                row("h oracle", f"{name}: mean abs(dh) of the direction file / abs(h change) of the exact edit "
                    f"(abs(h) {m['h']:.0f}; {m['n_faces']} faces, t >= {o['t_edit']} of {m['ddim_steps']} steps)",
                    f"{m['direction_dh']:.1f} / {m['exact_edit_h_change']:.1f} = {m['ratio']:.1f}x", "diagnosis", None)
    return "\n".join(lines) + "\n"


@toyworld_app.command("check", help=CHECK_HELP, short_help="Measure the built-in world's quality bars (JSON + Markdown).")
@handle_errors
def check_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (new or empty unless --overwrite).")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only these checks (repeatable): probe, base, inversion, clip, directions; and h-oracle, a diagnosis run only when named (each face edited with the h of its exact edit: how much of each edit h carries).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer images and no 1000-step inversion (a smoke run; numbers are noisier).")] = False,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="Diffusion model to judge: the built-in toy-faces, or a folder in the diffusers layout (a `train-unet --out`), to check a candidate without replacing the shipped one.")] = "toy-faces",
    directions_dir: Annotated[Optional[Path], typer.Option("--directions-dir", help="Folder of <name>.safetensors direction files to judge (default: the shipped ones).")] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP to judge (the clip check): the built-in toy-clip, or a folder from `train-clip --out`.")] = "toy-clip",
    probe_name: Annotated[str, typer.Option("--probe", help="Attribute probe that judges: the built-in toy-probe, or a folder from `train-probe --out` (for a world the shipped probe was not trained on).")] = "toy-probe",
    by_level: Annotated[bool, typer.Option("--by-level", help="h-oracle: also add the exact edit's change of the decoder's skips, one level at a time (h+8, h+8+16, ...): which level carries each edit.")] = False,
    oracle_t_edit: Annotated[int, typer.Option("--oracle-t-edit", metavar="T", help="h-oracle: edit where t >= T (0..999).")] = 500,
    oracle_t_edit_max: Annotated[Optional[int], typer.Option("--oracle-t-edit-max", metavar="T", help="h-oracle: edit only where t <= T too (a band; plain DDIM above it). Default: up to the top, as the paper.")] = None,
) -> None:
    import torch

    from ..outputs import make_grid, prepare_output_dir, run_record, write_json
    from ..toyworld import quality

    checks = list(only) if only else list(CHECKS)
    bad = [c for c in checks if c not in CHECKS + EXTRA_CHECKS]
    if bad:
        raise fail(f"unknown check(s) {bad}; choose from {list(CHECKS + EXTRA_CHECKS)}")
    if threads < 1:
        raise fail("--threads must be >= 1")
    # an option no chosen check reads would be recorded in quality.json yet judge nothing
    if clip != "toy-clip" and "clip" not in checks:
        raise fail(f"--clip {clip} only changes the clip check, which is not among {checks}; add --only clip or drop --clip")
    if directions_dir is not None and not {"directions", "h-oracle"} & set(checks):
        raise fail(f"--directions-dir only changes the directions and h-oracle checks, neither among {checks}; "
                   "add --only directions or drop --directions-dir")
    if (by_level or oracle_t_edit != 500 or oracle_t_edit_max is not None) and "h-oracle" not in checks:
        raise fail(f"--by-level, --oracle-t-edit and --oracle-t-edit-max only change the h-oracle check, which is not among {checks}; "
                   "add --only h-oracle or drop them")
    if not 0 <= oracle_t_edit <= 999:
        raise fail(f"--oracle-t-edit must be a timestep in 0..999, got {oracle_t_edit}")
    if oracle_t_edit_max is not None and not oracle_t_edit <= oracle_t_edit_max <= 999:
        raise fail(f"--oracle-t-edit-max must be a timestep in {oracle_t_edit}..999 (at least --oracle-t-edit), "
                   f"got {oracle_t_edit_max}")
    if directions_dir is not None and not directions_dir.is_dir():
        raise fail(f"--directions-dir {directions_dir} is not a folder; give the folder that holds the <name>.safetensors files")
    torch.set_num_threads(threads)
    # load what is asked for before writing anything, so a wrong --model fails at once
    backbone = _load_model(model) if set(checks) & {"base", "inversion", "directions", "h-oracle"} else None
    encoder = _load_clip(clip) if "clip" in checks else None
    probe = _load_probe(probe_name)
    folder = prepare_output_dir(out, overwrite=overwrite)
    n = dict(probe=500, base=50, inv=4, inv_steps=(40, 100), clip=100, dirs=20) if quick else \
        dict(probe=2000, base=200, inv=16, inv_steps=(40, 100, 1000), clip=300, dirs=100)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for c in checks:
        t0 = time.perf_counter()
        notice(f"check {c} ...")
        if c == "probe":
            results[c] = quality.check_probe(probe, n=n["probe"])
        elif c == "base":
            r = quality.check_base_model(backbone, probe, n=n["base"], progress=progress())
            samples = r.pop("samples")
            make_grid([list(samples[i:i + 10]) for i in range(0, min(len(samples), 50), 10)]).save(folder / "samples.png")
            results[c] = r
        elif c == "inversion":
            results[c] = quality.check_inversion(backbone, n=n["inv"], steps=n["inv_steps"], progress=progress())
        elif c == "clip":
            results[c] = quality.check_clip(encoder, n=n["clip"])
        elif c == "h-oracle":
            results[c] = quality.check_h_oracle(backbone, probe, n=n["dirs"], progress=progress(), log=notice,
                                                folder=directions_dir, by_level=by_level, t_edit=oracle_t_edit,
                                                t_edit_max=oracle_t_edit_max)
        else:
            results[c] = quality.check_directions(backbone, probe, n=n["dirs"], progress=progress(), log=notice,
                                                  folder=directions_dir)
        seconds[c] = round(time.perf_counter() - t0, 1)
        say(f"{c}: {verdict(results[c].get('passed'))} ({seconds[c]:.0f} s)")
    table = _markdown(results)
    (folder / "quality.md").write_text(table, encoding="utf-8")
    write_json({"results": results, "seconds": seconds, "quick": quick,
                "run": run_record(None, command="toyworld check", checks=checks, model=model, clip=clip, probe=probe_name,
                                  by_level=by_level, oracle_t_edit=oracle_t_edit, oracle_t_edit_max=oracle_t_edit_max,
                                  directions_dir=None if directions_dir is None else str(directions_dir))},
               folder / "quality.json")
    say(table)
    say(f"wrote {folder / 'quality.json'} and {folder / 'quality.md'}")
