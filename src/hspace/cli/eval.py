"""``hspace eval``: score an edit (pixel fidelity, CLIP, FD/KID, toy-world factors); prints a table, writes JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import fail, handle_errors, notice, say

HELP = """Evaluate edits: an `hspace edit` output folder (RUN_DIR), or two image folders matched by file name.

\b
Measures, per (source, edited) pair and on average:
  PSNR, SSIM, LPIPS     LPIPS only where its weights are on disk; otherwise a stated
                        weight-free fallback distance whose values are NOT LPIPS
  S_dir, CLIP score     directional CLIP similarity and cos(image, target text) (--clip)
  FD, KID               on toy-probe features (64x64 toy faces), InceptionV3 features (only
                        when its weights are on disk) and CLIP embeddings; edited vs source and
                        edited/source vs a reference set (--real; toy faces: held-out renders)
  toy factors           64x64 toy faces: success of the target factor and preservation of
                        every other one, read by the shipped attribute probe (--toy-target)

\b
Writes RUN_DIR/eval.json (or --out; never replaced without --overwrite).

\b
Examples:
  hspace eval out/                                  # the folder `hspace edit` wrote
  hspace eval --source faces/ --edited edited/ --source-text face --target-text "smiling face"
"""

SHORT_HELP = "Evaluate edits (PSNR/SSIM/LPIPS, CLIP, FD/KID, toy factors); writes eval.json."


def register(app: typer.Typer) -> None:
    app.command("eval", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(eval_command)


def _default_clip() -> str:
    from ..toyworld.probe import MODELS_DIR

    folder = MODELS_DIR / "toy-clip"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        notice("CLIP: toy-clip (the built-in CLIP trained on toy faces; it knows nothing else)")
        return "toy-clip"
    notice("CLIP: tiny-random-clip, because toy-clip is not shipped yet: its weights are RANDOM, so S_dir and "
           "CLIP scores are meaningless (pass --clip openai/clip-vit-base-patch16 or a local CLIP folder for real scores)")
    return "tiny-random-clip"


@handle_errors
def eval_command(
    run_dir: Annotated[
        Optional[Path],
        typer.Argument(metavar="RUN_DIR", help="An `hspace edit` output folder (run.json + <stem>_edited.png).", show_default=False),
    ] = None,
    source: Annotated[
        Optional[Path], typer.Option("--source", metavar="DIR", help="Folder of source images (instead of RUN_DIR).", show_default=False)
    ] = None,
    edited: Annotated[
        Optional[Path],
        typer.Option("--edited", metavar="DIR", help="Folder of edited images, named like their sources (a.png or a_edited.png).", show_default=False),
    ] = None,
    source_text: Annotated[
        Optional[str], typer.Option("--source-text", help="The edit's source text (default: from the run's direction).", show_default=False)
    ] = None,
    target_text: Annotated[
        Optional[str], typer.Option("--target-text", help="The edit's target text (default: from the run's direction).", show_default=False)
    ] = None,
    clip: Annotated[
        Optional[str],
        typer.Option("--clip", metavar="NAME", help="CLIP encoder: a hub id or folder, open_clip:MODEL/PRETRAINED, toy-clip, "
                     "tiny-random-clip, or 'none' to skip. Default: toy-clip when shipped, else tiny-random-clip (random: meaningless).",
                     show_default=False),
    ] = None,
    probe: Annotated[
        Optional[Path], typer.Option("--probe", metavar="DIR", help="Toy attribute probe folder (default: the shipped one).", show_default=False)
    ] = None,
    toy_target: Annotated[
        Optional[str],
        typer.Option("--toy-target", metavar="NAME", help="Toy factor table target: smiling, glasses, blond, eyes_closed, hat, "
                     "beard, or 'none'. Default: named by the target text or the direction's file name.", show_default=False),
    ] = None,
    strength: Annotated[
        Optional[float],
        typer.Option("--strength", help="The edit's strength; a negative one reverses the toy target. Default: the run's, else 1.",
                     show_default=False),
    ] = None,
    real: Annotated[
        Optional[Path],
        typer.Option("--real", metavar="DIR", help="Reference images for FD/KID. Default for 64x64 toy faces: held-out renders; "
                     "otherwise none (FD only edited vs source).", show_default=False),
    ] = None,
    n_real: Annotated[int, typer.Option("--n-real", metavar="N", help="How many held-out toy faces to render as the reference.")] = 200,
    distance: Annotated[
        str, typer.Option("--distance", help="Perceptual distance: auto (LPIPS if its weights are here, else the fallback), lpips, fallback.")
    ] = "auto",
    inception_weights: Annotated[
        Optional[Path],
        typer.Option("--inception-weights", metavar="FILE", help="torch-fidelity InceptionV3 weights "
                     "(weights-inception-2015-12-05-6726825d.pth); default: the torch hub cache.", show_default=False),
    ] = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", metavar="N", help="KID: random subsets averaged.")] = 100,
    kid_subset_size: Annotated[int, typer.Option("--kid-subset-size", metavar="N", help="KID: subset size (shrinks to the smaller set).")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per network batch.")] = 32,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the KID subsets.")] = 0,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="FILE.json",
                     help="Where to write the JSON (default: RUN_DIR/eval.json, or DIR/eval.json of --edited).", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file (never an input).")] = False,
) -> None:
    from ..evaluation.factors import TOY_TARGETS, match_toy_target
    from ..evaluation.pairs import pairs_from_folders, pairs_from_run
    from ..evaluation.report import TOY_IMAGE_SIZE, evaluate_edit, format_report
    from ..outputs import run_record, safe_path, write_json

    # arguments first, then the output path, then loading, then the work
    if run_dir is not None and (source is not None or edited is not None):
        raise fail("give either RUN_DIR or --source DIR --edited DIR, not both")
    if run_dir is None and (source is None or edited is None):
        raise fail("give an `hspace edit` output folder (hspace eval RUN_DIR) or both --source DIR and --edited DIR")
    for name, v in (("--n-real", n_real), ("--kid-subsets", kid_subsets), ("--kid-subset-size", kid_subset_size),
                    ("--batch-size", batch_size)):
        if v < 1 or (name == "--n-real" and v < 2):
            raise fail(f"{name} must be at least {2 if name == '--n-real' else 1}, got {v}")
    target_key = None if toy_target is None else toy_target.strip().lower().replace("-", "_")
    if target_key not in (None, "none") and target_key not in TOY_TARGETS:
        raise fail(f"--toy-target must be one of {', '.join(TOY_TARGETS)} or none, got {toy_target!r}")
    out_path = Path(out) if out is not None else (Path(run_dir) if run_dir is not None else Path(edited)) / "eval.json"
    if out_path.suffix.lower() != ".json":
        raise fail(f"--out must name a .json file, got {out_path}")

    safe_path(out_path, overwrite)  # refuse an existing file before any work
    pairs = pairs_from_run(run_dir) if run_dir is not None else pairs_from_folders(source, edited)
    protected = set(pairs.source_paths) | set(pairs.edited_paths)
    out_path = safe_path(out_path, overwrite, protected)
    for n in pairs.notices:
        notice(f"input {n}")
    for p in pairs.unmatched_source:
        notice(f"skipped {p}: no edited image for it")
    for p in pairs.unmatched_edited:
        notice(f"skipped {p}: no source image with that name")
    s_text = source_text if source_text is not None else pairs.source_text
    t_text = target_text if target_text is not None else pairs.target_text
    if run_dir is not None and len(pairs.directions) > 1 and (source_text is None or target_text is None):
        notice(f"the run applied {len(pairs.directions)} directions together; pass --source-text and --target-text "
               "for S_dir and the CLIP score")
    sign = strength if strength is not None else (pairs.strength if pairs.strength is not None else 1.0)
    notice(f"evaluating {len(pairs)} pair(s) at {pairs.edited.shape[-1]}x{pairs.edited.shape[-2]}"
           + (f", texts {s_text!r} -> {t_text!r}" if t_text else ", no texts (S_dir and CLIP score skipped)"))

    encoder = None
    clip_name = clip if clip is not None else _default_clip()
    if clip_name.strip().lower() != "none":
        from ..encoders import load_encoder

        encoder = load_encoder(clip_name)

    size = int(pairs.edited.shape[-1])
    is_toy = size == TOY_IMAGE_SIZE and pairs.edited.shape[-2] == TOY_IMAGE_SIZE
    probe_model = None
    if is_toy:
        from ..toyworld.probe import PROBE_DIR, ModelNotTrainedError, load_probe

        try:
            probe_model = load_probe(probe if probe is not None else PROBE_DIR)
        except ModelNotTrainedError as err:
            if probe is not None:
                raise
            notice(f"toy factors and probe FD skipped: {common.one_line(err)}")
    elif probe is not None or target_key not in (None, "none"):
        notice(f"toy factors and probe FD skipped: the probe reads {TOY_IMAGE_SIZE}x{TOY_IMAGE_SIZE} toy faces, "
               f"these images are {pairs.edited.shape[-1]}x{pairs.edited.shape[-2]}")

    target = None
    if probe_model is not None and target_key != "none":
        if target_key is not None:
            target = target_key
        else:
            stems = [Path(d.get("path", "")).stem for d in pairs.directions]
            target = match_toy_target(t_text, *stems)
            if target is None:
                notice("toy factors skipped: no toy target named by the target text or direction file; "
                       f"pass --toy-target ({', '.join(TOY_TARGETS)})")
            else:
                notice(f"toy target: {target} (from {'the target text' if match_toy_target(t_text) else 'the direction file name'})"
                       + (", reversed by the negative strength" if sign < 0 else ""))

    real_images = None
    if real is not None:
        from ..io import find_images

        loaded = common.load_inputs(find_images([real]), size)
        if len(loaded) < 2:
            raise fail(f"--real {real}: FD and KID need at least 2 reference images, {loaded.summary()}")
        real_images = loaded.images
    elif is_toy:
        real_images = "toy"
        notice(f"reference set: {n_real} held-out toy faces (rendered)")
    else:
        notice("no reference set (--real DIR): FD/KID only edited vs source")

    report = evaluate_edit(
        pairs.source, pairs.edited, names=pairs.names, source_text=s_text, target_text=t_text, encoder=encoder,
        distance=distance, probe=probe_model, toy_target=target, strength=sign, real=real_images, n_real=n_real,
        inception_weights=str(inception_weights) if inception_weights is not None else None,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, batch_size=batch_size, seed=seed,
        progress=common.progress(),
    )
    pd = report["image_metrics"]["perceptual_distance"]
    if pd["note"]:
        notice(f"perceptual distance: {pd['note']}")
    settings = {
        "clip": clip_name, "distance": distance, "toy_target": target, "strength": sign, "n_real": n_real,
        "real": str(real) if real is not None else ("toy" if is_toy else None),
        "probe": str(probe) if probe is not None else ("shipped" if probe_model is not None else None),
        "inception_weights": str(inception_weights) if inception_weights else None,
        "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "batch_size": batch_size, "seed": seed,
    }
    inputs = {"mode": "run" if run_dir is not None else "folders", "run_dir": str(run_dir) if run_dir else None,
              "source_dir": str(source) if source else None, "edited_dir": str(edited) if edited else None,
              **pairs.record()}
    record = run_record(settings, command="eval", inputs=inputs, **{k: v for k, v in report.items() if k != "n"})
    write_json(record, out_path)
    say(format_report(report))
    say(f"wrote {out_path}")
    if pairs.failed:
        common.log.warning("%d file(s) failed to load and their pairs were skipped: %s", len(pairs.failed),
                           ", ".join(p.name for p, _ in pairs.failed))
