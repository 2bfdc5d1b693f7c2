"""``hspace interval``: the editing interval t_edit and the boosting start t_boost (DESIGN 1.6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Choose t_edit (edit where t >= t_edit) and t_boost (quality boosting below it) for a model.

The paper's rule: t_edit = smallest t whose editing strength LPIPS(P_t, x0) >= 0.33 * cos_txt,
t_boost = smallest t whose quality deficiency LPIPS(x_t, x0) >= 1.2, with both curves averaged
over images along a DDIM inversion. Curves are measured once per (model, distance, --steps) and
cached ($HSPACE_CACHE/interval_curves); later runs, and `hspace train`, reuse them.

\b
Examples:
  hspace interval --preset celeba                        # the paper's values, no model needed
  hspace interval -m google/ddpm-ema-celebahq-256 -i faces/ --source face --target "smiling face"
"""

SHORT_HELP = "Choose t_edit / t_boost (measured curves or the paper's presets)."


def register(app: typer.Typer) -> None:
    app.command("interval", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(interval_command)


def cached_curves(backbone, n_steps: int):
    """Cached curves of ``backbone`` at ``n_steps`` (LPIPS preferred over the fallback), or None."""
    from ..cache import weights_digest
    from ..distances import LPIPS_TRUNK_FILES, FallbackDistance
    from ..interval import EditingCurves, curves_cache_path

    weights = weights_digest(backbone)
    for name in [f"lpips-{net}" for net in LPIPS_TRUNK_FILES] + [FallbackDistance.name]:
        path = curves_cache_path(backbone.backbone_id, weights, name, n_steps)
        if path.is_file():
            return EditingCurves.load(path), path
    return None


def text_similarity(clip: str, source: str | None, target: str | None, encoder=None) -> float:
    """cos_txt of the two texts with the CLIP encoder ``clip`` (1.0 when no texts are given),
    kept in (0, 1] as the interval rule needs."""
    if source is None and target is None:
        return 1.0
    if source is None or target is None:
        raise common.fail("give both --source and --target (or neither) to compute cos_txt")
    from ..encoders import load_encoder
    from ..objectives import text_cosine

    enc = encoder if encoder is not None else load_encoder(clip)
    cos = text_cosine(enc, source, target)
    notice(f"cos_txt({source!r}, {target!r}) = {cos:.4f} with CLIP {clip}")
    if not cos > 0:
        notice(f"cos_txt {cos:.4f} <= 0: the interval rule needs a positive similarity; using 0.01 (the longest interval)")
        cos = 0.01
    return min(cos, 1.0)


def describe_choice(choice) -> None:
    say(f"t_edit  = {choice.t_edit}")
    say(f"t_boost = {choice.t_boost}")
    say(f"source: {choice.source} (distance: {choice.distance_name}, cos_txt {choice.cos_txt:.4f})")
    if choice.note:
        notice(f"note: {choice.note}")


@handle_errors
def interval_command(
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", help=common.MODEL_HELP + " Not needed with --preset.", show_default=False)] = None,
    input: Annotated[
        Optional[list[Path]],
        typer.Option("--input", "-i", metavar="PATH", help="Images of the model's domain to measure the curves on (the paper uses ~100). "
                     "Not needed when the curves are cached. " + common.INPUT_HELP, show_default=False),
    ] = None,
    extra_inputs: common.ExtraInputs = None,
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", metavar="NAME", help="Use the paper's official LPIPS tables instead of measuring: celeba, church, bedroom, afhq, metface.", show_default=False),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="DDIM inversion steps of the measurement (the cache is per step count).")] = 40,
    distance: Annotated[
        str,
        typer.Option("--distance", metavar="NAME", help="auto (LPIPS if its weights are on disk, else the fallback, said plainly), lpips (error if unavailable), or fallback."),
    ] = "auto",
    source: Annotated[Optional[str], typer.Option("--source", metavar="TEXT", help="Source text; with --target gives cos_txt (lower -> longer interval). Default: cos_txt 1.", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", metavar="TEXT", help="Target text (see --source).", show_default=False)] = None,
    cos_txt: Annotated[
        Optional[float],
        typer.Option("--cos-txt", metavar="C", help="Give cos_txt directly, in (0, 1], instead of --source/--target.", show_default=False),
    ] = None,
    clip: Annotated[Optional[str], typer.Option("--clip", metavar="ID_OR_PATH", help="CLIP model for cos_txt: a hub id, a local folder, 'toy-clip' or 'tiny-random-clip'. Default: toy-clip for --model toy-faces, else openai/clip-vit-base-patch16.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per inversion batch.")] = 8,
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again even if curves are cached (needs --input).")] = False,
    device: common.DeviceOption = "cpu",
) -> None:
    from ..interval import choose_interval, get_or_measure_curves, resolve_preset

    if cos_txt is not None and (source is not None or target is not None):
        raise common.fail("give either --cos-txt or --source/--target, not both")
    if cos_txt is None and (source is not None or target is not None):
        clip = common.clip_for_model(clip, model or "")
    cos = cos_txt if cos_txt is not None else text_similarity(clip or "", source, target)
    if preset is not None:
        if input or extra_inputs:
            raise common.fail("--preset uses the paper's tables; drop --input (or drop --preset to measure)")
        choice = choose_interval(resolve_preset(preset), cos_txt=cos)
        describe_choice(choice)
        return
    if model is None:
        raise common.fail("give --model (with --input to measure, or cached curves), or --preset NAME")
    backbone = common.load_model(model, device)
    images = None
    paths = common.gather_inputs(input, extra_inputs, required=False)
    if paths:
        loaded = common.load_inputs(paths, backbone.image_size)
        images = loaded.images
    elif refresh:
        raise common.fail("--refresh measures the curves again: give --input images")
    elif distance == "auto":
        hit = cached_curves(backbone, steps)
        if hit is None:
            raise common.fail(
                f"no cached interval curves for model {backbone.backbone_id!r} at --steps {steps}: pass --input with "
                "images of the model's domain (the paper uses ~100) to measure them once, or use --preset NAME"
            )
        notice(f"interval curves: using the cache {hit[1]}")
        describe_choice(choose_interval(hit[0], cos_txt=cos))
        return
    refresh = refresh or images is not None  # new images always measure again
    curves = get_or_measure_curves(backbone, images, distance, n_steps=steps, batch_size=batch_size,
                                   progress=common.progress(), refresh=refresh)
    notice(f"interval curves over {curves.n_images} image(s) with distance {curves.distance_name} (cached for `hspace train`)")
    describe_choice(choose_interval(curves, cos_txt=cos))
    if images is not None:
        common.report_failures(loaded)
