"""``hspace toyworld``: the built-in offline world of procedural cartoon faces with known factors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import OVERWRITE_HELP, fail, handle_errors, notice, parse_int_list, say

HELP = """The built-in offline world: procedural 64x64 cartoon faces whose attributes are known
(smile, eyes open, glasses, hair colour and style, skin tone, face shape, hat, beard, background,
pose). Image i of seed S is always the same, so every claim about an edit can be measured.
"""

SAMPLE_HELP = """Write N toy faces as PNGs plus their ground truth.

\b
Writes into OUT:
  000000.png, 000001.png, ...  image i is item (seed, start + i)
  labels.jsonl                 one JSON object per image: file, seed, index, every factor,
                               a caption with varied wording and a full description
  factors.json                 each factor's type and range or values, and the label vector layout

\b
Examples:
  hspace toyworld sample --n 100 --out faces/
  hspace toyworld sample --n 1000 --out faces/ --seed 3 --size 128
"""


toyworld_app = typer.Typer(
    name="toyworld",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    from . import toyworld_build  # noqa: F401  (adds train-directions and check to toyworld_app)

    app.add_typer(toyworld_app, name="toyworld", help=HELP,
                  short_help="Offline toy world: cartoon faces with known attributes.")


@toyworld_app.command("sample", help=SAMPLE_HELP, short_help="Write N toy faces as PNGs + labels.jsonl + factors.json.")
@handle_errors
def sample_command(
    n: Annotated[int, typer.Option("--n", "-n", help="Number of images.")] = 100,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (created; must be empty unless --overwrite).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Dataset seed (>= 0): image i is a pure function of (seed, i).")] = 0,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    supersample: Annotated[int, typer.Option("--supersample", help="Drawing resolution factor for anti-aliasing.")] = 4,
    start: Annotated[int, typer.Option("--start", help="First item index (to write a dataset in parts).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
) -> None:
    from ..outputs import prepare_output_dir
    from ..toyworld.captions import caption_for, describe
    from ..toyworld.faces import FACTORS, factors_for, render, vector_names

    if out is None:
        raise fail("no output folder: pass --out DIR")
    if n < 1:
        raise fail(f"--n must be >= 1, got {n}")
    if seed < 0 or start < 0:
        raise fail(f"--seed and --start must be >= 0, got seed={seed}, start={start}")
    if not 8 <= size <= 1024:
        raise fail(f"--size must be between 8 and 1024, got {size}")
    if not 1 <= supersample <= 8:
        raise fail(f"--supersample must be between 1 and 8, got {supersample}")
    folder = prepare_output_dir(out, overwrite=overwrite)

    t0 = time.perf_counter()
    with (folder / "labels.jsonl").open("w", encoding="utf-8") as labels:
        for i in range(n):
            index = start + i
            f = factors_for(seed, index)
            name = f"{i:06d}.png"
            render(f, size=size, supersample=supersample).save(folder / name)
            record = {"file": name, "seed": seed, "index": index, **f.to_dict(),
                      "caption": caption_for(seed, index, f), "description": describe(f)}
            labels.write(json.dumps(record) + "\n")
    meta = {
        "generator": "hspace.toyworld.faces",
        "seed": seed, "start": start, "n": n, "size": size, "supersample": supersample,
        "factors": FACTORS,
        "label_vector": {"compact": vector_names(False), "one_hot": vector_names(True),
                         "doc": "hspace.toyworld.factors_to_vector(f, one_hot=...) order"},
        "item": "image i of this folder is hspace.toyworld.factors_for(seed, start + i) rendered at size",
    }
    (folder / "factors.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    dt = time.perf_counter() - t0
    notice(f"rendered {n} faces in {dt:.1f} s ({n / max(dt, 1e-9):.0f} images/s)")
    say(f"wrote {n} images, labels.jsonl and factors.json to {folder}")


TRAIN_UNET_HELP = """Train the built-in `toy-faces` diffusion model (a small diffusers UNet2DModel) on toy faces.

\b
The committed recipe (docs/toyworld.md): 64x64, widths 32/64/128/192, h = mid-block [192, 8, 8],
v-prediction, linear betas 1e-4..0.02, T=1000, AdamW 3e-4, batch 32, EMA 0.999, bf16
autocast (fp32 master weights). Checkpoints (safetensors + JSON) are written every --checkpoint-minutes and on
stop; the finished EMA model is exported in float16 to the shipped folder
(src/hspace/data/models/toy-faces), where `--model toy-faces` finds it.

\b
Examples:
  hspace toyworld train-unet                          # the shipped model, from scratch
  hspace toyworld train-unet --resume                 # continue a stopped run exactly
  hspace toyworld train-unet --max-minutes 30         # stop cleanly after 30 min (then --resume)
  hspace toyworld train-unet --recipe tiny --steps 20 --checkpoint-dir /tmp/ck --out /tmp/tiny  # smoke run
"""


@toyworld_app.command("train-unet", help=TRAIN_UNET_HELP,
                      short_help="Train the built-in toy-faces diffusion model (resumable).")
@handle_errors
def train_unet_command(
    recipe_name: Annotated[str, typer.Option("--recipe", help="Recipe: toy-faces (the shipped model: v-prediction, 1 norm group, 4500 steps), toy-faces-eps (the eps model shipped until 2026-11-26), toy-faces-1group (eps, 1 norm group + the low-frequency term, 7000 steps), toy-faces-v-32groups (v with the eps model's 32 norm groups), toy-faces-deep-h (eps; no attention at 16 px, a wider 8x8 level: tried for an h that carries more of the edits, it did not), toy-faces-skipdrop (the shipped model fine-tuned with half the faces' skips dropped: h then carries every edit, and directions keep less; docs/toyworld.md) or tiny (smoke runs).")] = "toy-faces",
    steps: Annotated[Optional[int], typer.Option("--steps", help="Total training steps (default: the recipe's; may be raised on --resume).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --checkpoint-dir.")] = False,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop cleanly with a checkpoint after this many minutes.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Checkpoint folder (default ~/.cache/hspace/toyworld/unet-ckpt).")] = None,
    checkpoint_minutes: Annotated[float, typer.Option("--checkpoint-minutes", help="Write a checkpoint every this many minutes.")] = 10.0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Export folder for the finished EMA model (default: the shipped toy-faces folder).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda[:i].")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="torch threads (0: torch's default). 1 is the default: with 2 on a busy 2-core machine OpenMP spin-waits (measured 13.9 vs 1.6 s/step); try 2 only on an idle machine.")] = 1,
    precision: Annotated[Optional[str], typer.Option("--precision", help="bf16 (autocast, fp32 master weights) or fp32.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Override the recipe's batch size (changes the recipe: no --resume across it).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Override the recipe's learning rate (changes the recipe, so it needs --out).")] = None,
    skip_dropout: Annotated[Optional[float], typer.Option("--skip-dropout", help="Override the recipe's skip dropout probability (0 <= P < 1; changes the recipe, so it needs --out). For toy-faces-skipdrop, 0 is the plain fine-tune it is compared with.")] = None,
    skip_dropout_blocks: Annotated[Optional[str], typer.Option("--skip-dropout-blocks", metavar="I,J,...", help="Override which decoder up blocks lose their skip inputs under skip dropout: indices into unet.up_blocks, coarsest first (toy-faces: 0 = 8 px, 1 = 16, 2 = 32, 3 = 64); changes the recipe, so it needs --out.")] = None,
    data_workers: Annotated[int, typer.Option("--data-workers", help="Processes that render batches ahead (0: one thread, enough on a CPU). A GPU trains faster than one core renders (about 500 faces/s): give it several.")] = 0,
    export_unfinished: Annotated[bool, typer.Option("--export-unfinished", help="Export the EMA model to --out also when the run stops early (--max-minutes, Ctrl-C); training.json records the steps done. Needs --out.")] = False,
) -> None:
    from ..toyworld.train_unet import RECIPES, default_checkpoint_dir, shipped_model_dir, train_unet

    if recipe_name not in RECIPES:
        raise fail(f"unknown --recipe {recipe_name!r}; choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[recipe_name]()
    blocks = parse_int_list(skip_dropout_blocks, "--skip-dropout-blocks") if skip_dropout_blocks is not None else None
    # (option, recipe field, value given): each changes the recipe, is applied to it, and is repeated
    # in the command that continues a stopped run
    overrides = [(flag, name, given) for flag, name, given in (
        ("--steps", "steps", steps), ("--batch-size", "batch_size", batch_size), ("--precision", "precision", precision),
        ("--skip-dropout", "skip_dropout", skip_dropout), ("--skip-dropout-blocks", "skip_dropout_blocks", blocks),
        ("--lr", "lr", lr)) if given is not None]
    changed = [flag for flag, name, given in overrides if given != getattr(recipe, name)]
    if changed and out is None:
        raise fail(f"{', '.join(changed)} change the recipe, so the model would not be the shipped one: pass --out DIR "
                   "(only the committed recipe exports into the shipped folder)")
    if steps is not None and steps < 1:
        raise fail(f"--steps must be >= 1, got {steps}")
    for _, name, given in overrides:
        setattr(recipe, name, given)
    if max_minutes is not None and max_minutes <= 0:
        raise fail(f"--max-minutes must be > 0, got {max_minutes}")
    if data_workers < 0:
        raise fail(f"--data-workers must be >= 0, got {data_workers}")
    if export_unfinished and out is None:
        raise fail("--export-unfinished needs --out: an unfinished model never replaces the shipped one")
    if out is None:
        if recipe_name != "toy-faces":
            raise fail(f"--recipe {recipe_name} needs an explicit --out (the shipped folder is for the toy-faces recipe)")
        out = shipped_model_dir()
    if checkpoint_dir is None:
        checkpoint_dir = default_checkpoint_dir() if recipe_name == "toy-faces" else default_checkpoint_dir().with_name(f"unet-ckpt-{recipe_name}")
    try:
        recipe.validate()
        res = train_unet(recipe, checkpoint_dir=checkpoint_dir, out_dir=out, resume=resume, max_minutes=max_minutes,
                         checkpoint_every_minutes=checkpoint_minutes, device=device, threads=threads or None,
                         progress=True, data_workers=data_workers, export_unfinished=export_unfinished)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        raise fail(str(e)) from e
    if res.losses:
        tail = res.losses[-min(50, len(res.losses)):]
        notice(f"{len(res.losses)} steps in {res.seconds:.0f} s ({len(res.losses) / max(res.seconds, 1e-9):.3f} steps/s), "
               f"mean loss of the last {len(tail)}: {sum(tail) / len(tail):.4f}")
    if res.finished:
        say(f"trained {res.step} steps ({res.train_seconds_total / 60:.1f} min in all); model exported to {res.exported}")
    else:
        if res.exported is not None:
            say(f"exported the unfinished EMA model (step {res.step} of {recipe.steps}) to {res.exported}")
        again = ["hspace toyworld train-unet", "--resume"]
        if recipe_name != "toy-faces":
            again.append(f"--recipe {recipe_name}")
        again += [f"{flag} {','.join(map(str, given)) if isinstance(given, tuple) else given}" for flag, _, given in overrides]
        if checkpoint_dir != default_checkpoint_dir():
            again.append(f"--checkpoint-dir {checkpoint_dir}")
        if out != shipped_model_dir():
            again.append(f"--out {out}")
        say(f"stopped at step {res.step} of {recipe.steps}; checkpoint {res.checkpoint}; "
            f"continue with: {' '.join(again)}")


# --------------------------------------------------------------------------- evaluation models (probe, small CLIP)

TRAIN_PROBE_HELP = """Train the toy-world attribute probe (a small CNN predicting every factor), evaluate it on
held-out faces and export it (fp16 safetensors + config.json) to src/hspace/data/models/toy-probe.

\b
Recipe: 2000 steps x batch 64 of procedural faces (seed 0), AdamW 2e-3, cosine, bf16 autocast +
channels_last, mild blur/noise augmentation; 1 rendering worker + --threads torch threads. About
10-12 minutes on the 2-core development CPU. The evaluation (held-out seed, --eval-n faces) is
written to eval.json next to the checkpoint and into the exported config.json.

\b
Examples:
  hspace toyworld train-probe                       # train, evaluate, export
  hspace toyworld train-probe --max-minutes 5       # stop cleanly; continue with --resume
  hspace toyworld train-probe --resume
"""

TRAIN_CLIP_HELP = """Train the toy-world CLIP (a real transformers CLIPModel + CLIPTokenizer with a vocabulary made
from the caption words) contrastively on faces and captions, evaluate zero-shot caption choice on
held-out faces, and export it (save_pretrained, fp16) to src/hspace/data/models/toy-clip, where
`hspace.toyworld.clip_train.load_toy_clip()` / TransformersCLIP(<folder>) load it.

\b
Recipe: ViT 64x64 / patch 8 / width 128 / 4 layers, text width 128 / 4 layers / 48 positions,
3000 steps x batch 128 (half of each batch: a face and its one-factor twin, smile and face-shape
twins 6x as often), Gaussian noise (std up to 0.5) on half the images, AdamW 1e-3, cosine, bf16
autocast. About 45 minutes on 1 thread of the 2-core development CPU.

\b
Examples:
  hspace toyworld train-clip
  hspace toyworld train-clip --max-minutes 20       # stop cleanly; continue with --resume
  hspace toyworld train-clip --resume
"""


def _toy_ckpt_dir(name: str) -> Path:
    import os

    base = os.environ.get("HSPACE_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "hspace"
    return root / "toyworld" / name


@toyworld_app.command("train-probe", help=TRAIN_PROBE_HELP,
                      short_help="Train + evaluate + export the toy attribute probe (resumable).")
@handle_errors
def train_probe_command(
    steps: Annotated[int, typer.Option("--steps", help="Total training steps (the schedule).")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 64,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --checkpoint-dir.")] = False,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop cleanly with a checkpoint after this many minutes.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Checkpoint folder (default ~/.cache/hspace/toyworld/probe-ckpt).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Export folder (default: the shipped toy-probe folder).")] = None,
    eval_n: Annotated[int, typer.Option("--eval-n", help="Held-out faces for the evaluation.")] = 2000,
    workers: Annotated[int, typer.Option("--workers", help="Rendering worker processes (0: render in the training process).")] = 1,
    threads: Annotated[int, typer.Option("--threads", help="torch threads for training.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="bf16 (autocast + channels_last) or fp32.")] = "bf16",
) -> None:
    import torch

    from ..toyworld.probe import (PROBE_DIR, AttributeProbe, ProbeTrainSettings, evaluate_probe, export_probe,
                                  load_training_checkpoint, train_probe, write_json_atomic)

    if steps < 1 or batch_size < 1 or eval_n < 10 or threads < 1 or workers < 0:
        raise fail("need --steps >= 1, --batch-size >= 1, --eval-n >= 10, --threads >= 1, --workers >= 0")
    torch.set_num_threads(threads)
    s = ProbeTrainSettings(steps=steps, batch_size=batch_size, workers=workers, precision=precision)
    ckpt = (checkpoint_dir or _toy_ckpt_dir("probe-ckpt")) / "probe.safetensors"
    try:
        res = train_probe(s, ckpt, max_minutes=max_minutes, resume=resume, log=notice)
    except (ValueError, FileExistsError) as e:
        raise fail(str(e)) from e
    notice(f"{res['examples_per_s_this_run']:.0f} examples/s in this run")
    if not res["finished"]:
        say(f"stopped at step {res['step']} of {steps}; checkpoint {ckpt}; continue with: "
            f"hspace toyworld train-probe --resume" + (f" --checkpoint-dir {checkpoint_dir}" if checkpoint_dir else ""))
        return
    model = AttributeProbe(s.config)
    record, _ = load_training_checkpoint(ckpt, model)
    ev = evaluate_probe(model.eval(), n=eval_n)
    write_json_atomic(ev, ckpt.parent / "eval.json")
    for name, b in ev["bars"].items():
        notice(f"{name}: {b['value']:.4f} (bar {b['bar']}) {'ok' if b['passed'] else 'BELOW BAR'}")
    folder = export_probe(model, out or PROBE_DIR, info={"eval": ev, "training": record})
    say(f"probe trained ({record['seconds'] / 60:.1f} min), bars {'met' if ev['passed'] else 'NOT met'}; exported to {folder}")


@toyworld_app.command("train-clip", help=TRAIN_CLIP_HELP,
                      short_help="Train + evaluate + export the toy CLIP (resumable).")
@handle_errors
def train_clip_command(
    steps: Annotated[int, typer.Option("--steps", help="Total training steps (the schedule).")] = 3000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size (pairs).")] = 128,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --checkpoint-dir.")] = False,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop cleanly with a checkpoint after this many minutes.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Checkpoint folder (default ~/.cache/hspace/toyworld/clip-ckpt).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Export folder (default: the shipped toy-clip folder).")] = None,
    eval_n: Annotated[int, typer.Option("--eval-n", help="Held-out faces for the zero-shot evaluation.")] = 300,
    workers: Annotated[int, typer.Option("--workers", help="Rendering worker processes (0: render in the training process).")] = 1,
    threads: Annotated[int, typer.Option("--threads", help="torch threads for training.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="bf16 (autocast) or fp32.")] = "bf16",
    aux_weight: Annotated[float, typer.Option("--aux-weight", help="Weight of the auxiliary factor loss on the image embedding (0: contrastive only).")] = 0.5,
    hard_factor_weight: Annotated[float, typer.Option("--hard-factor-weight", help="How much more often twins of the hard factors (smile, face shape) are drawn.")] = 6.0,
    noise_aug: Annotated[float, typer.Option("--noise-aug", help="Largest std of the Gaussian noise added to half of each batch's images (0: none), so the CLIP reads noisy P_t.")] = 0.5,
) -> None:
    import torch

    from ..toyworld.clip_train import CLIP_DIR, ClipSettings, evaluate_zero_shot, export_clip, load_toy_clip, train_clip
    from ..toyworld.probe import write_json_atomic

    if steps < 1 or batch_size < 2 or eval_n < 10 or threads < 1 or workers < 0 or aux_weight < 0 \
            or hard_factor_weight <= 0 or not 0 <= noise_aug <= 2:
        raise fail("need --steps >= 1, --batch-size >= 2, --eval-n >= 10, --threads >= 1, --workers >= 0, "
                   "--aux-weight >= 0, --hard-factor-weight > 0, 0 <= --noise-aug <= 2")
    torch.set_num_threads(threads)
    s = ClipSettings(steps=steps, batch_size=batch_size, workers=workers, precision=precision, aux_weight=aux_weight,
                     hard_factor_weight=hard_factor_weight, noise_aug=noise_aug)
    folder = checkpoint_dir or _toy_ckpt_dir("clip-ckpt")
    ckpt = folder / "clip.safetensors"
    try:
        res = train_clip(s, ckpt, tokenizer_dir=folder / "tokenizer", max_minutes=max_minutes, resume=resume, log=notice)
    except (ValueError, FileExistsError) as e:
        raise fail(str(e)) from e
    notice(f"{res['pairs_per_s_this_run']:.0f} pairs/s in this run")
    if not res["finished"]:
        say(f"stopped at step {res['step']} of {steps}; checkpoint {ckpt}; continue with: "
            f"hspace toyworld train-clip --resume" + (f" --checkpoint-dir {checkpoint_dir}" if checkpoint_dir else ""))
        return
    record = json.loads(ckpt.with_suffix(".json").read_text(encoding="utf-8"))
    target = export_clip(res["model"], res["tokenizer"], out or CLIP_DIR, info={"training": record})
    # judge the exported float16 files, not the float32 model in memory: what ships is what is
    # measured (the smile bar has been decided by one face of 300, and fp16 rounding moves that)
    ev = evaluate_zero_shot(load_toy_clip(target), n=eval_n)
    ev["evaluated"] = "the exported files"
    write_json_atomic(ev, folder / "eval.json")
    info_path = target / "hspace_toy_clip.json"
    write_json_atomic({**json.loads(info_path.read_text(encoding="utf-8")), "zero_shot": ev}, info_path)
    for style, acc in ev["accuracy"].items():
        notice(f"zero-shot ({style} captions): " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    say(f"toy CLIP trained ({record['seconds'] / 60:.1f} min), zero-shot min accuracy "
        + ", ".join(f"{k} {v:.2f}" for k, v in ev["min"].items()) + f"; exported to {target}")
