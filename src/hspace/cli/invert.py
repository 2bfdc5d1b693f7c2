"""``hspace invert``: DDIM-invert images to x_T (cached), optionally reconstruct and report PSNR."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, say

HELP = """DDIM-invert images to their latents x_T and check how well they reconstruct.

Latents are also kept in the cache ($HSPACE_CACHE, default ~/.cache/hspace), so a later
`hspace edit` of the same images with the same --inv-steps skips the inversion.

\b
Writes into --output:
  <stem>_latent.safetensors  x_T [3, S, S] (float32; header: backbone_id, n_inv_steps, source)
  <stem>_recon.png           with --reconstruct (default): the plain DDIM reconstruction
  run.json                   settings, per-image PSNR (dB) of reconstruction vs input, and their mean
"""

SHORT_HELP = 'DDIM-invert images (cached latents), reconstruct, report PSNR.'


def register(app: typer.Typer) -> None:
    app.command("invert", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(invert_command)


@handle_errors
def invert_command(
    model: common.ModelOption,
    output: common.OutputDirOption,
    input: common.InputOption = None,
    extra_inputs: common.ExtraInputs = None,
    steps: Annotated[Optional[int], typer.Option("--steps", metavar="N", help="DDIM steps of the inversion and of the reconstruction (default: the paper's 40; 100 for toy-faces).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per network batch.")] = 4,
    reconstruct: Annotated[
        bool, typer.Option("--reconstruct/--no-reconstruct", help="Generate back from x_T and report PSNR vs the input.")
    ] = True,
    overwrite: common.OverwriteDirOption = False,
    device: common.DeviceOption = "cpu",
) -> None:
    from safetensors.torch import save_file

    from ..editor import EditConfig, Editor
    from ..io import save_image
    from ..metrics import psnr
    from ..outputs import prepare_output_dir, run_record, safe_path, write_json

    steps = common.ddim_steps_for(model, steps)
    config = EditConfig(n_inv_steps=steps, n_steps=steps, batch_size=batch_size, progress=common.progress())
    paths = common.gather_inputs(input, extra_inputs)
    common.check_output_dir(output, overwrite)
    backbone = common.load_model(model, device)
    loaded = common.load_inputs(paths, backbone.image_size)
    out_dir = prepare_output_dir(output, overwrite=overwrite)
    protected = set(loaded.paths)
    stems = common.unique_stems(loaded.paths)

    editor = Editor(backbone, config)
    latents = editor.invert(loaded.images)
    per_image: list[dict] = []
    for stem, src, lat in zip(stems, loaded.paths, latents):
        path = safe_path(out_dir / f"{stem}_latent.safetensors", overwrite, protected)
        save_file({"latent": lat.detach().float().cpu().contiguous()}, str(path),
                  metadata={"backbone_id": backbone.backbone_id, "n_inv_steps": str(steps), "source": str(src)})
        per_image.append({"input": str(src), "latent": str(path)})

    mean_psnr = None
    if reconstruct:
        recon = editor.reconstruct(latents)
        values = psnr(recon, loaded.images).tolist()
        for stem, rec, entry, value in zip(stems, common.displayable(recon, "reconstructions"), per_image, values):
            entry["recon"] = str(save_image(rec, safe_path(out_dir / f"{stem}_recon.png", overwrite, protected)))
            entry["psnr_db"] = value
            say(f"{entry['input']}: reconstruction PSNR {value:.2f} dB")
        mean_psnr = sum(values) / len(values)
        say(f"mean reconstruction PSNR over {len(values)} image(s): {mean_psnr:.2f} dB")

    record = run_record(
        config,
        command="invert",
        model=model,
        backbone_id=backbone.backbone_id,
        device=str(backbone.device),
        inputs=[str(p) for p in loaded.paths],
        failed=[{"path": str(p), "reason": r} for p, r in loaded.failed],
        notices=loaded.notices,
        images=per_image,
        mean_psnr_db=mean_psnr,
    )
    write_json(record, safe_path(out_dir / "run.json", overwrite, protected))
    say(f"inverted {len(stems)} image(s) -> {out_dir}/ (<stem>_latent.safetensors{', <stem>_recon.png' if reconstruct else ''}, run.json)")
    common.report_failures(loaded)
