"""``hspace difference``: a direction from two image sets, without text or training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Make a direction from examples: images without an attribute (--from) and with it (--to).

Both sets are DDIM-inverted (cached), and h is recorded along each image's unedited trajectory at
every step t >= T_EDIT; the direction is, per step, the mean h of the --to images minus the mean h
of the --from images (a per-step direction file, edited like any other). The sets need not be
paired nor the same size. No CLIP and no optimiser: it is as good as the model's h is at carrying
the attribute, which makes it a reference point for text-trained directions.

\b
Example:
  hspace toyworld sample --n 40 --out faces/          # then sort them by hand, or:
  hspace difference -m toy-faces --from plain/ --to with_hat/ -o hat-mean.safetensors
  hspace edit -m toy-faces -i faces/ -d hat-mean.safetensors:1.0 -o edited/
"""

SHORT_HELP = "Make a direction from two image sets (the mean difference of h); no training."


def register(app: typer.Typer) -> None:
    app.command("difference", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(difference_command)


@handle_errors
def difference_command(
    model: common.ModelOption,
    from_images: Annotated[list[Path], typer.Option("--from", metavar="PATH", help="Images WITHOUT the attribute: a file or folder; repeatable.", show_default=False)],
    to_images: Annotated[list[Path], typer.Option("--to", metavar="PATH", help="Images WITH the attribute: a file or folder; repeatable.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Direction file to write (.safetensors); refused if it exists unless --overwrite.", show_default=False)],
    t_edit: Annotated[int, typer.Option("--t-edit", metavar="T", help="Record h (and later edit) where t >= T, 0..999.")] = 500,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="DDIM grid of the trajectories, recorded like a trained direction's (editing with other steps rescales the strength).")] = 40,
    inv_steps: Annotated[Optional[int], typer.Option("--inv-steps", metavar="N", help=common.INV_STEPS_HELP, show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per network batch.")] = 8,
    bf16: Annotated[bool, typer.Option("--bf16", help=common.BF16_HELP)] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file.")] = False,
    device: common.DeviceOption = "cpu",
) -> None:
    from ..directions import mean_difference_direction, save_direction
    from ..editor import EditConfig, Editor
    from ..outputs import safe_path

    if not 0 <= t_edit <= 999:
        raise common.fail(f"--t-edit must be a timestep in 0..999, got {t_edit}")
    if steps < 1 or batch_size < 1:
        raise common.fail("--steps and --batch-size must be positive")
    from_paths = common.gather_inputs(from_images, None)
    to_paths = common.gather_inputs(to_images, None)
    shared = sorted(set(p.resolve() for p in from_paths) & set(p.resolve() for p in to_paths))
    if shared:
        raise common.fail(f"{shared[0]} is in both --from and --to; each image belongs to one side")
    if output.suffix != ".safetensors":
        notice(f"note: direction files are safetensors; {output.name} does not end in .safetensors")
    output = safe_path(output, overwrite, protected=set(from_paths) | set(to_paths))  # refuse before any work

    backbone = common.load_model(model, device)
    inv_steps = common.ddim_steps_for(model, inv_steps)
    editor = Editor(backbone, EditConfig(n_inv_steps=inv_steps, n_steps=steps, batch_size=batch_size,
                                         progress=common.progress()))
    sides = {}
    for side, paths in (("from", from_paths), ("to", to_paths)):
        loaded = common.load_inputs(paths, backbone.image_size)
        common.report_failures(loaded)
        notice(f"--{side}: inverting {len(loaded)} image(s) ({inv_steps} steps)")
        sides[side] = (loaded, editor.invert(loaded.images))
    direction = mean_difference_direction(
        backbone, sides["from"][1], sides["to"][1], n_steps=steps, t_edit=t_edit,
        precision="bf16" if bf16 else "fp32", batch_size=batch_size,
        extra={"from_inputs": [str(p) for p in sides["from"][0].paths],
               "to_inputs": [str(p) for p in sides["to"][0].paths], "n_inv_steps": inv_steps},
    )
    save_direction(direction, output, overwrite=overwrite)
    say(f"wrote a per-step mean-difference direction ({len(sides['from'][0])} -> {len(sides['to'][0])} images, "
        f"{len(direction.timesteps)} steps with t >= {t_edit}) to {output}")
    say(f"use it: hspace edit -m {model} -i IMAGES -d {output}:1.0 -o OUT_DIR")
