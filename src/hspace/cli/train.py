"""``hspace train``: learn a direction from a source and a target text with CLIP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..presets import TrainDefaults
from . import common
from .common import handle_errors, notice, say

HELP = """Train a direction from text (the paper's CLIP directional loss + L1 preservation).

Train on real images (--input: they are DDIM-inverted first, and the inversion is cached) or on
the model's own samples from seeded noise (--noise N). The editing interval: --t-edit if given;
else --preset NAME (the paper's tables); else the model's own preset when it is a known model
(google/ddpm-ema-celebahq-256 -> celeba, church, bedroom; named checkpoints); else the model's own
training defaults (the built-in toy-faces has them, per edit: the recipe of the shipped direction
the target text names, else the glasses recipe; for --lr, --w-off and --t-edit-max too); else
cached curves of this model from `hspace interval` (presets and curves read at cos_txt of the
texts); else 500. The choices and their reasons are printed.

A checkpoint is written after every batch; rerunning the same command resumes from it (--no-resume
makes an existing checkpoint an error). It is deleted once the direction file is written.

\b
Example:
  hspace train -m google/ddpm-ema-celebahq-256 --source "face" --target "smiling face" \\
      --input faces/ --output smile.safetensors
"""

SHORT_HELP = 'Train a direction from a source and a target text with CLIP.'


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(train_command)


def _checkpoint_path(output: Path) -> Path:
    name = output.name[: -len(".safetensors")] if output.name.endswith(".safetensors") else output.name
    return output.with_name(name + ".ckpt.safetensors")


def choose_train_interval(backbone, steps: int, cos: float, t_edit: int | None = None, t_boost: int | None = None,
                          preset: str | None = None, defaults: TrainDefaults | None = None) -> tuple[int, int | None, str, str]:
    """t_edit (and t_boost when not given) for training, with where they came from.

    Order: ``t_edit`` given; else ``preset``; else the model's own preset when it is a known
    model (:func:`hspace.presets.preset_for_backbone`, e.g. ``google/ddpm-ema-celebahq-256`` ->
    celeba); else the model's training ``defaults`` (:func:`hspace.presets.train_defaults_for`); else
    cached curves of this model from ``hspace interval``; else 500. Presets and curves are read at
    the texts' ``cos`` (cos_txt). Returns ``(t_edit, t_boost, source, note)``.
    """
    from ..interval import choose_interval, resolve_preset
    from ..presets import no_preset_reason, preset_for_backbone, preset_source
    from .interval import cached_curves

    if t_edit is not None:
        return t_edit, t_boost, "--t-edit", ""
    choice, label = None, None
    auto = preset_for_backbone(backbone.backbone_id)
    if preset is None and auto is None and defaults is not None:
        return defaults.t_edit, t_boost, f"{backbone.backbone_id} training defaults", ""
    if preset is not None:
        choice = choose_interval(resolve_preset(preset), cos_txt=cos)
        label = choice.source
    elif auto is not None:
        choice = choose_interval(auto, cos_txt=cos)
        label = preset_source(auto, backbone.backbone_id)
    else:
        hit = cached_curves(backbone, steps)
        if hit is not None:
            choice = choose_interval(hit[0], cos_txt=cos)
            label = choice.source
    if choice is None:
        why = no_preset_reason(backbone.backbone_id)
        return 500, t_boost, (
            "default 500: no --t-edit, no --preset" + (f" (no preset: {why})" if why else "")
            + " and no cached interval curves for this model (run `hspace interval` once to measure them)"
        ), ""
    if t_boost is None:
        t_boost = min(choice.t_boost, choice.t_edit)
    return choice.t_edit, t_boost, f"{label}, cos_txt {cos:.3f}", choice.note


def _model_defaults(backbone_id: str, own: TrainDefaults | None, lr: float | None, w_off: float | None,
                    t_edit_max: int | None, own_t_edit: bool) -> tuple[float, float, int | None]:
    """``lr``, ``w_off`` and ``t_edit_max`` with the model's training defaults where the user gave
    none (``own``, from :func:`hspace.presets.train_defaults_for`), else 0.5, 0 and no band; says
    which it used.
    The model's band top is only taken with the model's own t_edit (``own_t_edit``): it was
    measured with it, and could lie below another."""
    used = []
    if own is not None:
        if lr is None:
            lr = own.lr
            used.append(f"lr {own.lr:g}")
        if w_off is None:
            w_off = own.w_off
            used.append(f"w_off {own.w_off:g}")
        if t_edit_max is None and own_t_edit and own.t_edit_max is not None:
            t_edit_max = own.t_edit_max
            used.append(f"t_edit_max {own.t_edit_max}")
        if used:
            notice(f"{', '.join(used)} ({backbone_id} training defaults{': ' + own.why if own.why else ''})")
    return (0.5 if lr is None else lr), (0.0 if w_off is None else w_off), t_edit_max


@handle_errors
def train_command(
    model: common.ModelOption,
    source: Annotated[str, typer.Option("--source", metavar="TEXT", help="Text for what the images show now, e.g. 'face'.", show_default=False)],
    target: Annotated[str, typer.Option("--target", metavar="TEXT", help="Text for what they should show, e.g. 'smiling face'.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Direction file to write (.safetensors); refused if it exists unless --overwrite.", show_default=False)],
    input: Annotated[Optional[list[Path]], typer.Option("--input", "-i", metavar="PATH", help="Training images. " + common.INPUT_HELP, show_default=False)] = None,
    extra_inputs: common.ExtraInputs = None,
    noise: Annotated[Optional[int], typer.Option("--noise", metavar="N", help="Train on N samples generated from seeded noise instead of --input images.", show_default=False)] = None,
    clip: Annotated[
        Optional[str],
        typer.Option("--clip", metavar="ID_OR_PATH", help="CLIP model: a hub id (read from the HF cache), a local folder, 'open_clip:MODEL/PRETRAINED' "
                     "(e.g. open_clip:ViT-B-16/openai; needs open_clip_torch), 'toy-clip' (the built-in world's) or 'tiny-random-clip' (random weights, for smoke tests). "
                     "Default: toy-clip for --model toy-faces, else openai/clip-vit-base-patch16.", show_default=False),
    ] = None,
    kind: Annotated[
        str,
        typer.Option("--kind", metavar="KIND", help="Direction type: implicit-ddpm (the paper's f_t for DDPM U-Nets), implicit-adm "
                     "(f_t for guided-diffusion U-Nets), per-step (one dh per timestep) or global (one dh)."),
    ] = "implicit-ddpm",
    t_edit: Annotated[Optional[int], typer.Option("--t-edit", metavar="T", help="Train (and later edit) where t >= T_EDIT, 0..999. Default: see above.", show_default=False)] = None,
    t_boost: Annotated[Optional[int], typer.Option("--t-boost", metavar="T", help="Quality-boosting start recorded in the file for editing. Default: from --preset or the cached curves, else none.", show_default=False)] = None,
    t_edit_max: Annotated[Optional[int], typer.Option("--t-edit-max", metavar="T", help="Train (and later edit) only where t <= T too: hspace's editing band, beyond the paper, whose interval always reaches the top. Recorded in the file. Default: the model's training default (with the model's t_edit only), else none.", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", metavar="NAME", help="Take the interval from the paper's tables: celeba, church, bedroom, afhq, metface.", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="DDIM grid size of the training trajectory (the paper uses 40).")] = 40,
    inv_steps: Annotated[int, typer.Option("--inv-steps", metavar="N", help=common.INV_STEPS_HELP + " Only with --input.")] = 40,
    lr: Annotated[Optional[float], typer.Option("--lr", metavar="LR", help="SGD learning rate (no momentum). Default: the model's training default, else 0.5.", show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", metavar="N", help="Passes over the training images.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per optimiser step.")] = 1,
    w_clip: Annotated[float, typer.Option("--w-clip", metavar="W", help="Weight of the directional CLIP loss.")] = 1.0,
    w_l1: Annotated[float, typer.Option("--w-l1", metavar="W", help="Weight of the L1 preservation loss (multiplied by cos_txt).")] = 3.0,
    w_off: Annotated[Optional[float], typer.Option("--w-off", metavar="W", help="Weight of the off-axis CLIP penalty (beyond the paper): the squared change of the image's "
                                         "CLIP embedding away from the text direction, against the unedited step's prediction. 0 turns it off (the paper's objective). "
                                                    "Default: the model's training default, else 0.", show_default=False)] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help=common.BF16_HELP)] = False,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Initialisation and noise seed.")] = 0,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", metavar="FILE", help="Checkpoint file. Default: <output stem>.ckpt.safetensors next to --output.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from an existing checkpoint made with the same settings.")] = True,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep the checkpoint after the direction file is written.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file.")] = False,
    device: common.DeviceOption = "cpu",
) -> None:
    from ..editor import EditConfig, Editor
    from ..directions import save_direction
    from ..encoders import load_encoder
    from ..objectives import make_clip_objective
    from ..outputs import safe_path
    from ..presets import train_defaults_for
    from ..trainer import TrainConfig, Trainer
    from .interval import text_similarity

    paths = common.gather_inputs(input, extra_inputs, required=False)
    if bool(paths) == (noise is not None):
        raise common.fail("give either --input IMAGES or --noise N (exactly one)")
    if noise is not None and noise < 1:
        raise common.fail(f"--noise must be a positive number of samples, got {noise}")
    if w_off is not None and w_off < 0:
        raise common.fail(f"--w-off must be >= 0 (0 turns the off-axis penalty off), got {w_off}")
    if output.suffix != ".safetensors":
        notice(f"note: direction files are safetensors; {output.name} does not end in .safetensors")
    output = safe_path(output, overwrite)  # refuse before any work
    ckpt = checkpoint or _checkpoint_path(output)
    if ckpt.exists() and not resume:
        raise common.fail(f"checkpoint {ckpt} exists; pass --resume to continue it, delete it, or choose --checkpoint")

    backbone = common.load_model(model, device)
    clip = common.clip_for_model(clip, model)
    encoder = load_encoder(clip, device=backbone.device)
    cos = text_similarity(clip, source, target, encoder=encoder)
    t_edit_given = t_edit is not None
    own = train_defaults_for(backbone.backbone_id, target)  # the model's own, for this edit (toy-faces)
    t_edit, t_boost, t_source, note = choose_train_interval(backbone, steps, cos, t_edit, t_boost, preset, own)
    if note:
        notice(f"note: {note}")
    lr, w_off, t_edit_max = _model_defaults(backbone.backbone_id, own, lr, w_off, t_edit_max,
                                            own_t_edit=not t_edit_given and preset is None)
    notice(f"t_edit = {t_edit} ({t_source}); t_boost = {t_boost}" + (f"; t_edit_max = {t_edit_max}" if t_edit_max is not None else ""))
    if t_edit_max is not None and not t_edit <= t_edit_max <= 999:
        raise common.fail(f"--t-edit-max {t_edit_max} must lie in t_edit..999 ({t_edit}..999)")

    config = TrainConfig(
        t_edit=t_edit, t_boost=t_boost, t_edit_max=t_edit_max, n_train_steps=steps, n_inv_steps=inv_steps, direction_kind=kind, lr=lr,
        epochs=epochs, batch_size=batch_size, precision="bf16" if bf16 else "fp32", seed=seed,
        source_text=source, target_text=target, progress=common.progress(),
    )
    objective = make_clip_objective(encoder, source, target, w_clip=w_clip, w_l1=w_l1, w_off=w_off)
    trainer = Trainer(backbone, objective, config)
    loaded = None
    if paths:
        loaded = common.load_inputs(paths, backbone.image_size)
        editor = Editor(backbone, EditConfig(n_inv_steps=inv_steps, n_steps=steps, batch_size=max(batch_size, 1),
                                             progress=common.progress()))
        data = trainer.data_from_latents(editor.invert(loaded.images), loaded.images)
    else:
        notice(f"training on {noise} sample(s) of the model from seeded noise (seed {seed})")
        data = trainer.data_from_noise(noise)
    result = trainer.train(data, checkpoint=ckpt, resume=resume)
    if result.resumed_from_step:
        notice(f"resumed from {ckpt} at step {result.resumed_from_step}")
    d = result.direction
    d.meta = d.meta.replace(extra={**d.meta.extra, "t_edit_source": t_source, "clip": clip, "cos_txt": cos,
                                    "weights": {"clip": w_clip, "l1": w_l1, "off": w_off}})
    save_direction(d, output, overwrite=overwrite)
    if not keep_checkpoint and ckpt.exists():
        ckpt.unlink()
    final = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
    say(f"wrote {kind} direction {source!r} -> {target!r} to {output} ({result.steps} steps in {result.seconds:.1f} s{final})")
    say(f"use it: hspace edit -m {model} -i IMAGES -d {output}:1.0 -o OUT_DIR")
    if loaded is not None:
        common.report_failures(loaded)
