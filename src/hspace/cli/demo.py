"""``hspace demo``: the whole pipeline end to end, offline: on the built-in toy world (``toy-faces``,
the toy CLIP, the attribute probe, the shipped directions) when it is trained, else on 'tiny-random'."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
import typer

from . import common
from .common import handle_errors, notice, say

HELP = """Run the whole pipeline offline on a CPU, on the built-in toy world (a few minutes).

\b
With --model toy-faces (the default when the toy world is trained; it ships with hspace):
  6 held-out toy faces are DDIM-inverted, a direction 'a face' -> 'a face with a beard' is trained
  on them with the small toy CLIP, they are edited with it and with the shipped 'smiling' and
  'glasses' directions at strengths -1 .. 1, 'smiling' + 'glasses' are composed, and every edit is
  judged by the attribute probe. Writes:
  inputs/*.png               the input faces
  direction_beard.safetensors  the direction trained here
  grid.png                   rows = faces; input | recon | per direction s=-1 .. s=1 | composed
  sweep.gif                  the faces through the strengths, one frame per strength
  metrics.json               per direction and strength: target success rate, preservation of
                             every other factor, probe FID vs held-out faces; the composition's
  run.json                   every setting and version

With --model tiny-random (the fallback): it makes 4 simple procedural images (coloured shapes), DDIM-inverts and reconstructs them, trains a
short direction from two texts with the built-in tiny random CLIP, edits at strengths -1, -0.5, 0,
0.5 and 1, composes the trained direction with a second (global) direction, and writes:

\b
  inputs/*.png               the generated input images
  direction_text.safetensors, direction_global.safetensors
  grid.png                   rows = images; input | reconstruction | s=-1 .. s=1 | composed
  sweep.gif                  one frame per strength
  metrics.json               per strength: mean |edited - reconstruction| and PSNR vs the input
  run.json                   every setting and version

The model and the CLIP encoder have RANDOM weights: the pictures are noise and the edits mean
nothing. The demo checks that every stage runs and shows what the outputs look like.
"""

STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
SOURCE_TEXT, TARGET_TEXT = "a red shape", "a blue shape"

SHORT_HELP = 'Run everything end to end offline on the built-in toy-faces world (about 4 min).'


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP, short_help=SHORT_HELP)(demo_command)


def toy_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` procedural images ``[n, 3, size, size]`` in [-1, 1]: a coloured disc, square,
    triangle or stripes on a soft gradient background (seeded, no files needed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    out = []
    for i in range(n):
        bg_a, bg_b, fg = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3), rng.uniform(0.0, 1.0, 3)
        img = bg_a[:, None, None] * (1 - yy) + bg_b[:, None, None] * yy
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.18, 0.3)
        shape = i % 4
        if shape == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif shape == 1:
            mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        elif shape == 2:
            mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        else:
            mask = (np.floor(xx * 6) % 2 == 0) & (np.abs(yy - cy) <= r)
        img = np.where(mask[None], fg[:, None, None], img)
        out.append(torch.from_numpy(img).float() * 2 - 1)
    return torch.stack(out)


def _stats(images: torch.Tensor, reference: torch.Tensor, recon: torch.Tensor) -> dict:
    from ..metrics import mean_abs_diff, psnr

    diff, p = mean_abs_diff(images, recon), psnr(images, reference)
    return {
        "mean_abs_diff_vs_reconstruction": float(diff.mean()),
        "psnr_vs_input_db": float(p.mean()),
        "per_image": {"mean_abs_diff_vs_reconstruction": diff.tolist(), "psnr_vs_input_db": p.tolist()},
    }


@handle_errors
def demo_command(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Output folder; must be new or empty unless --overwrite.")] = Path("hspace-demo"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="toy-faces (default when trained) or tiny-random.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=common.OVERWRITE_HELP)] = False,
    steps: Annotated[Optional[int], typer.Option("--steps", metavar="N", help="DDIM steps of inversion, training and editing (default: 40 on toy-faces, 20 on tiny-random).", show_default=False)] = None,
    train_steps: Annotated[int, typer.Option("--train-steps", metavar="N", help="DDIM grid size of the short training run (tiny-random; toy-faces trains on --steps).")] = 10,
) -> None:
    from ..backbones.registry import load_backbone
    from ..directions import GlobalDirection, save_direction
    from ..editor import EditConfig, Editor
    from ..encoders import TINY_CLIP_NAME, load_encoder
    from ..io import save_image
    from ..objectives import make_clip_objective
    from ..outputs import make_grid, prepare_output_dir, run_record, save_gif, write_json
    from ..trainer import TrainConfig, Trainer

    start = time.perf_counter()
    if steps is not None and steps < 2:
        raise common.fail(f"--steps must be >= 2, got {steps}")
    if model not in (None, "toy-faces", "tiny-random"):
        raise common.fail(f"--model must be toy-faces or tiny-random, got {model!r}")
    missing = _toy_world_missing()
    if model == "toy-faces" and missing:
        raise common.fail(f"the toy world is not complete: {missing}", code=1)
    if model is None and missing:
        notice(f"toy world not available ({missing}); running on 'tiny-random' instead")
    if model == "toy-faces" or (model is None and not missing):
        out = prepare_output_dir(output, overwrite=overwrite)
        return _toy_demo(out, overwrite, start, steps or common.PAPER_DDIM_STEPS)  # not 100: the 5-minute budget
    steps = steps or 20
    out = prepare_output_dir(output, overwrite=overwrite)
    say("hspace demo on the built-in 'tiny-random' model. Its weights (and the tiny CLIP's) are RANDOM:")
    say("the images will look like noise and the edits mean nothing; this shows the pipeline runs end to end.")
    backbone = load_backbone("tiny-random")
    size = backbone.image_size

    images = toy_images(4, size)
    input_paths = [save_image(img, out / "inputs" / f"shape_{i}.png") for i, img in enumerate(images)]
    notice(f"1/5 made {len(images)} procedural {size}x{size} images in {out / 'inputs'}")

    t_edit = 500
    ecfg = EditConfig(n_inv_steps=steps, n_steps=steps, t_edit=t_edit, cache_latents=False, progress=common.progress())
    editor = Editor(backbone, ecfg)
    latents = editor.invert(images)
    recon = editor.reconstruct(latents)
    notice(f"2/5 inverted and reconstructed them ({steps} DDIM steps)")

    encoder = load_encoder(TINY_CLIP_NAME)
    tcfg = TrainConfig(t_edit=t_edit, n_train_steps=train_steps, n_inv_steps=steps, direction_kind="implicit-ddpm",
                       lr=0.5, epochs=1, batch_size=1, seed=0, source_text=SOURCE_TEXT, target_text=TARGET_TEXT,
                       progress=common.progress())
    trainer = Trainer(backbone, make_clip_objective(encoder, SOURCE_TEXT, TARGET_TEXT), tcfg)
    trained = trainer.train(trainer.data_from_latents(latents, images))
    text_dir = save_direction(trained.direction, out / "direction_text.safetensors", overwrite=overwrite)
    notice(f"3/5 trained an implicit direction {SOURCE_TEXT!r} -> {TARGET_TEXT!r} ({trained.steps} steps) -> {text_dir.name}")

    g = torch.Generator().manual_seed(1)
    global_dh = torch.randn(backbone.h_shape, generator=g)
    second = GlobalDirection.for_backbone(backbone, global_dh, source_text="(random)", target_text="(random global direction)",
                                          t_edit=t_edit)
    global_file = save_direction(second, out / "direction_global.safetensors", overwrite=overwrite)

    sweep = editor.sweep(latents, trained.direction, STRENGTHS)
    composed = editor.edit(latents, [(trained.direction, 1.0), (second, 1.0)])
    notice(f"4/5 edited at strengths {list(STRENGTHS)} and composed with a random global direction")

    def show(x, what):
        return common.displayable(x, what, warn=False)  # random weights: said above

    labels = ["input", "recon"] + [f"s={s:g}" for s in STRENGTHS] + ["composed"]
    recon_s, edits_s, comp_s = show(recon, "reconstructions"), [show(o.images, "edited images") for o in sweep], show(composed.images, "edited images")
    rows = [[images[i], recon_s[i]] + [e[i] for e in edits_s] + [comp_s[i]] for i in range(len(images))]
    make_grid(rows, labels=labels).save(out / "grid.png")
    frames = [make_grid([list(e)], labels=[f"s={s:+.2f}"] + [""] * (len(e) - 1)) for s, e in zip(STRENGTHS, edits_s)]
    save_gif(frames, out / "sweep.gif", duration_ms=400, bounce=False)

    metrics = {
        "note": "tiny-random model and tiny CLIP have RANDOM weights: these numbers test the pipeline, not edit quality",
        "reconstruction": _stats(recon, images, recon),
        "strengths": [{"strength": s, **_stats(o.images, images, recon)} for s, o in zip(STRENGTHS, sweep)],
        "composed": {"members": [["direction_text", 1.0], ["direction_global", 1.0]], **_stats(composed.images, images, recon)},
        "t_edit": sweep[0].t_edit,
        "t_boost": sweep[0].t_boost,
    }
    write_json(metrics, out / "metrics.json")
    seconds = time.perf_counter() - start
    write_json(run_record(
        ecfg, command="demo", model="tiny-random", backbone_id=backbone.backbone_id, train_config=tcfg,
        inputs=[str(p) for p in input_paths], directions=[str(text_dir), str(global_file)],
        strengths=list(STRENGTHS), seconds=round(seconds, 1), final_loss=trained.losses[-1] if trained.losses else None,
    ), out / "run.json")
    notice("5/5 wrote the grid, the GIF and the metrics")
    say(f"done in {seconds:.0f} s. Everything is in {out}/:")
    for name, what in (("grid.png", "rows = images; input | recon | s=-1 .. s=1 | composed"),
                       ("sweep.gif", f"{len(STRENGTHS)} frames, one per strength"),
                       ("metrics.json", "mean |edited - reconstruction| and PSNR vs input per strength"),
                       ("run.json", "settings and versions"),
                       ("direction_text.safetensors", f"try: hspace info {out / 'direction_text.safetensors'}"),
                       ("inputs/", "the procedural input images")):
        say(f"  {name:<28} {what}")


def _toy_world_missing() -> str:
    """'' when toy-faces, the toy CLIP and the probe are all trained; else what is missing."""
    from ..toyworld.clip_train import CLIP_DIR
    from ..toyworld.models import toy_faces_available
    from ..toyworld.probe import PROBE_DIR

    missing = []
    if not toy_faces_available():
        missing.append("toy-faces model (hspace toyworld train-unet)")
    if not (CLIP_DIR / "model.safetensors").is_file():
        missing.append("toy CLIP (hspace toyworld train-clip)")
    if not (PROBE_DIR / "model.safetensors").is_file():
        missing.append("attribute probe (hspace toyworld train-probe)")
    return ", ".join(missing)


def _toy_demo(out: Path, overwrite: bool, start: float, steps: int) -> None:
    from ..backbones.registry import load_backbone
    from ..directions import save_direction
    from ..io import save_image
    from ..outputs import make_grid, run_record, save_gif, write_json
    from ..toyworld.clip_train import load_toy_clip
    from ..toyworld.demo import DEMO_TRAINED, DemoSettings, run_toy_demo
    from ..toyworld.probe import load_probe

    say("hspace demo on the built-in toy world: toy-faces (a diffusion model trained by this repository), "
        "its small CLIP and attribute probe, all offline.")
    backbone, encoder, probe = load_backbone("toy-faces"), load_toy_clip(), load_probe()
    settings = DemoSettings(steps=steps)
    res = run_toy_demo(backbone, encoder, probe, settings, progress=common.progress(), log=notice)
    inputs = [save_image(img, out / "inputs" / f"face_{i}.png") for i, img in enumerate(res.images)]
    trained_file = save_direction(res.directions[DEMO_TRAINED.name], out / f"direction_{DEMO_TRAINED.name}.safetensors",
                                  overwrite=overwrite)
    labels = ["input", "recon"]
    for name in res.edits:
        labels += [f"{name} {s:+g}" for s in settings.strengths]
    labels.append("+".join(settings.compose))
    rows = []
    for i in range(len(res.images)):
        row = [res.images[i], res.reconstructions[i]]
        for batches in res.edits.values():
            row += [b[i] for b in batches]
        rows.append(row + [res.composed[i]])
    make_grid(rows, labels=labels).save(out / "grid.png")
    frames = []
    for j, strength in enumerate(settings.strengths):
        frame_rows = [[res.edits[name][j][i] for name in res.edits] for i in range(len(res.images))]
        frames.append(make_grid(frame_rows, labels=[f"{name} s={strength:+.1f}" for name in res.edits]))
    save_gif(frames, out / "sweep.gif", duration_ms=500, bounce=True)
    write_json(res.metrics, out / "metrics.json")
    seconds = time.perf_counter() - start
    write_json(run_record(settings, command="demo", model="toy-faces", backbone_id=backbone.backbone_id,
                          inputs=[str(p) for p in inputs], trained_direction=str(trained_file),
                          stage_seconds=res.seconds, seconds=round(seconds, 1)), out / "run.json")
    say(f"done in {seconds:.0f} s. Everything is in {out}/:")
    for name, what in (("grid.png", "rows = faces; input | recon | each direction at s=-1 .. 1 | composed"),
                       ("sweep.gif", f"{len(settings.strengths)} frames, one per strength"),
                       ("metrics.json", "per direction and strength: success, preservation, probe FID"),
                       ("run.json", "settings and versions"),
                       (trained_file.name, f"try: hspace info {trained_file}"),
                       ("inputs/", "the input faces")):
        say(f"  {name:<28} {what}")
    for name, d in res.metrics["directions"].items():
        last = d["strengths"][-1]
        say(f"  {name:<10} at s=+1: target reached on {last.get('success_rate') or 0:.0%} of eligible faces, "
            f"worst other factor kept on {min(last.get('preservation', {'-': 0}).values()):.0%}")
