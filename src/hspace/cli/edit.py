"""``hspace edit``: invert images, apply one or more directions, write edits, a grid and run.json."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Edit images with h-space directions (several at once are composed: h + sum_i s_i dh_i / sqrt(N)).

\b
Writes into --output:
  <stem>_edited.png      each edited image
  grid.png               rows = images; columns = input | reconstruction (with --reconstruct) | edited
  <stem>_sweep.png/.gif  with --sweep: one frame per strength
  run.json               every setting, the t_edit/t_boost used and where they came from,
                         the direction headers, and the files that failed to load

\b
Example:
  hspace edit -m google/ddpm-ema-celebahq-256 -i faces/ -d smile.safetensors:0.8 -d young.safetensors:-0.5 -o out/
"""

SHORT_HELP = 'Edit images with one or more directions; writes edits, grid.png, run.json.'


def register(app: typer.Typer) -> None:
    app.command("edit", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(edit_command)


@handle_errors
def edit_command(
    model: common.ModelOption,
    direction: Annotated[
        list[str],
        typer.Option(
            "--direction",
            "-d",
            help="Direction file with an optional strength, FILE[:STRENGTH] (strength default 1.0; negative "
            "reverses the attribute, e.g. smile.safetensors:-0.5). Repeat to apply several together.",
            show_default=False,
        ),
    ],
    output: common.OutputDirOption,
    input: common.InputOption = None,
    extra_inputs: common.ExtraInputs = None,
    steps: Annotated[Optional[int], typer.Option("--steps", metavar="N", help=common.STEPS_HELP, show_default=False)] = None,
    inv_steps: Annotated[Optional[int], typer.Option("--inv-steps", metavar="N", help=common.INV_STEPS_HELP, show_default=False)] = None,
    t_edit: Annotated[
        Optional[int],
        typer.Option("--t-edit", metavar="T", help="Edit where t >= T_EDIT (0..999). Default: from the direction files, else the model's interval preset (known models, e.g. google/ddpm-ema-celebahq-256 -> celeba), else 500.", show_default=False),
    ] = None,
    t_boost: Annotated[
        Optional[int],
        typer.Option("--t-boost", metavar="T", help="Stochastic quality boosting below T_BOOST. Default: from the direction files, else the model's interval preset, else 0 (off).", show_default=False),
    ] = None,
    t_edit_max: Annotated[
        Optional[int],
        typer.Option("--t-edit-max", metavar="T", help="Stop the edit above T (hspace's editing band, beyond the paper: edit where T_EDIT <= t <= T_EDIT_MAX, plain DDIM above). Default: from the direction files, else none (up to the top, the paper's interval).", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help=common.SEED_HELP)] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per network batch.")] = 4,
    bf16: Annotated[bool, typer.Option("--bf16", help=common.BF16_HELP)] = False,
    sweep: Annotated[
        Optional[str],
        typer.Option(
            "--sweep",
            help="A:B:N also writes, per image, a strip and a GIF of N edits with strengths evenly from A to B "
            "(e.g. -1:1:5). Needs exactly one --direction.",
            show_default=False,
        ),
    ] = None,
    reconstruct: Annotated[
        bool,
        typer.Option("--reconstruct/--no-reconstruct", help="Add the unedited reconstruction column to grid.png (one more generation per image)."),
    ] = False,
    overwrite: common.OverwriteDirOption = False,
    device: common.DeviceOption = "cpu",
) -> None:
    from ..directions import load_direction, read_direction_header
    from ..editor import EditConfig, Editor
    from ..io import save_image
    from ..outputs import make_grid, prepare_output_dir, run_record, safe_path, save_gif, save_strip, write_json

    # Cheap checks first: arguments, model, direction files; then images; then the heavy work.
    specs = [common.parse_direction_spec(s) for s in direction]
    strengths = common.parse_sweep(sweep) if sweep is not None else None
    if strengths is not None and len(specs) != 1:
        raise common.fail(f"--sweep needs exactly one --direction, got {len(specs)}")
    config = EditConfig(
        n_inv_steps=common.ddim_steps_for(model, inv_steps), n_steps=common.ddim_steps_for(model, steps),
        t_edit=t_edit, t_boost=t_boost, t_edit_max=t_edit_max, seed=seed, batch_size=batch_size,
        precision="bf16" if bf16 else "fp32", progress=common.progress(),
    )
    paths = common.gather_inputs(input, extra_inputs)
    common.check_output_dir(output, overwrite)
    backbone = common.load_model(model, device)
    pairs, headers = [], []
    for path, strength in specs:
        d = load_direction(path, backbone=backbone)  # checks it fits; names both shapes if not
        pairs.append((d, strength))
        headers.append({"path": str(path), "strength": strength, "header": read_direction_header(path)})
        texts = f", {d.meta.source_text!r} -> {d.meta.target_text!r}" if d.meta.target_text else ""
        notice(f"direction {path} ({d.meta.kind}{texts}) at strength {strength:g}")
    loaded = common.load_inputs(paths, backbone.image_size)
    out_dir = prepare_output_dir(output, overwrite=overwrite)
    protected = set(loaded.paths)
    stems = common.unique_stems(loaded.paths)

    editor = Editor(backbone, config)
    latents = editor.invert(loaded.images)
    result = editor.edit(latents, pairs)
    edited = common.displayable(result.images, "edited images")
    notice(f"t_edit = {common.fmt_t(result.t_edit, result.interval_source.get('t_edit'))}; "
           f"t_boost = {common.fmt_t(result.t_boost, result.interval_source.get('t_boost'))}"
           + (f"; t_edit_max = {result.t_edit_max} ({result.interval_source.get('t_edit_max')})"
              if result.t_edit_max is not None else ""))
    written: list[str] = []
    for stem, img in zip(stems, edited):
        written.append(str(save_image(img, safe_path(out_dir / f"{stem}_edited.png", overwrite, protected))))

    columns = [loaded.images]
    labels = ["input"]
    if reconstruct:
        columns.append(common.displayable(editor.reconstruct(latents), "reconstructions"))
        labels.append("reconstruction")
    columns.append(edited)
    labels.append("edited")
    rows = [[col[i] for col in columns] for i in range(len(stems))]
    grid_path = safe_path(out_dir / "grid.png", overwrite, protected)
    make_grid(rows, labels=labels, row_labels=stems).save(grid_path)
    written.append(str(grid_path))

    sweep_record = None
    if strengths is not None:
        outs = editor.sweep(latents, pairs[0][0], strengths)
        for o in outs:
            o.images = common.displayable(o.images, "edited images")
        frame_labels = [f"s={s:g}" for s in strengths]
        for i, stem in enumerate(stems):
            frames = [o.images[i] for o in outs]  # clipped below
            strip = save_strip(frames, safe_path(out_dir / f"{stem}_sweep.png", overwrite, protected), labels=frame_labels)
            gif = save_gif(frames, safe_path(out_dir / f"{stem}_sweep.gif", overwrite, protected), duration_ms=250, bounce=False)
            written += [str(strip), str(gif)]
        sweep_record = {"strengths": strengths, "frames": len(strengths)}

    record = run_record(
        config,
        command="edit",
        model=model,
        backbone_id=backbone.backbone_id,
        device=str(backbone.device),
        inputs=[str(p.resolve()) for p in loaded.paths],  # absolute: `hspace eval` reads them from any folder
        failed=[{"path": str(p), "reason": r} for p, r in loaded.failed],
        notices=loaded.notices,
        directions=headers,
        t_edit=result.t_edit,
        t_boost=result.t_boost,
        t_edit_max=result.t_edit_max,
        interval_source=result.interval_source,
        sweep=sweep_record,
        reconstruct=reconstruct,
        outputs=written,
    )
    write_json(record, safe_path(out_dir / "run.json", overwrite, protected))
    say(f"edited {len(stems)} image(s) -> {out_dir}/ (<stem>_edited.png, grid.png{', <stem>_sweep.png/.gif' if strengths else ''}, run.json)")
    common.report_failures(loaded)
