"""``hspace import-official``: convert an official Asyrp f_t checkpoint (.pth) to a direction file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Convert an official Asyrp checkpoint (e.g. smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth) into an
hspace direction file. The .pth is read with torch.load(weights_only=True) (nothing is unpickled
beyond tensors) and its weights are loaded strictly.

The h shape and time-embedding width of the backbone it was trained on are taken from --backbone when
that model can be loaded; otherwise give --h-shape and --temb-dim (CelebA-HQ/LSUN DDPM: 512,8,8 and 512).

\b
Example:
  hspace import-official smiling.pth --backbone google/ddpm-ema-celebahq-256 --h-shape 512,8,8 \\
      --temb-dim 512 --train-steps 40 --t-edit 513 --source face --target "smiling face" -o smile.safetensors
"""

SHORT_HELP = 'Convert an official Asyrp .pth checkpoint to a direction file.'


def register(app: typer.Typer) -> None:
    app.command("import-official", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(import_official_command)


@handle_errors
def import_official_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="FILE.pth", help="The official .pth file.", show_default=False)],
    backbone: Annotated[str, typer.Option("--backbone", "-b", metavar="MODEL", help="Model the checkpoint was trained for (recorded as backbone_id): a built-in name, local folder or hub id.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Direction file to write (.safetensors); refused if it exists unless --overwrite.", show_default=False)],
    h_shape: Annotated[Optional[str], typer.Option("--h-shape", metavar="C,H,W", help="C,H,W of the backbone's h, e.g. 512,8,8. Default: from --backbone if it loads.", show_default=False)] = None,
    temb_dim: Annotated[Optional[int], typer.Option("--temb-dim", metavar="E", help="Width of the backbone's time embedding, e.g. 512. Default: from --backbone if it loads.", show_default=False)] = None,
    train_steps: Annotated[
        Optional[int],
        typer.Option("--train-steps", metavar="N", help="DDIM steps the direction was trained with (strengths are rescaled by it / --steps when editing). "
                     "Default: the 'ngenN' in the file name, else none (no rescaling).", show_default=False),
    ] = None,
    t_edit: Annotated[Optional[int], typer.Option("--t-edit", metavar="T", help="Editing interval start to record (0..999). Default: none (the editor decides).", show_default=False)] = None,
    t_boost: Annotated[Optional[int], typer.Option("--t-boost", metavar="T", help="Quality-boosting start to record. Default: none.", show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option("--source", metavar="TEXT", help="Source text to record, e.g. 'face'.", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", metavar="TEXT", help="Target text to record, e.g. 'smiling face'.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file.")] = False,
) -> None:
    from ..directions import import_official, save_direction
    from ..outputs import safe_path

    output = safe_path(output, overwrite, protected={checkpoint})
    shape = common.parse_shape(h_shape) if h_shape is not None else None
    if shape is None or temb_dim is None:
        try:
            bb = common.load_model(backbone)
        except Exception as err:  # noqa: BLE001 - any load failure: the user must give the shapes
            raise common.fail(
                f"--backbone {backbone!r} could not be loaded to read its h shape and time-embedding width "
                f"({common.one_line(err)}); give --h-shape C,H,W and --temb-dim E"
            ) from err
        shape = shape or tuple(bb.h_shape)
        temb_dim = temb_dim if temb_dim is not None else int(bb.temb_dim)
        backbone = bb.backbone_id
        notice(f"from {backbone}: h {list(shape)}, temb_dim {temb_dim}")
    if train_steps is None:
        m = re.search(r"ngen(\d+)", checkpoint.name)
        if m:
            train_steps = int(m.group(1))
            notice(f"--train-steps {train_steps} read from the file name ('ngen{train_steps}')")
        else:
            notice("no --train-steps and no 'ngenN' in the file name: strengths will not be rescaled when editing")
    direction = import_official(
        checkpoint, backbone_id=backbone, h_shape=shape, temb_dim=temb_dim, n_train_steps=train_steps,
        t_edit=t_edit, t_boost=t_boost, source_text=source, target_text=target,
    )
    save_direction(direction, output, overwrite=overwrite)
    say(f"wrote {direction.meta.kind} direction (h {list(shape)}, temb_dim {temb_dim}, backbone {backbone}) to {output}")
