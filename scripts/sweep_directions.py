"""Sweep the toy directions' training recipe (learning rate, editing interval, training faces).

Each configuration trains one direction with the small CLIP (``train_direction``, the shipped
files' code path) and judges it at strength 1 on held-out *validation* faces: a seed that neither
training nor ``hspace toyworld check`` uses, so choosing a recipe here does not tune it to the
faces the bar is reported on. One JSON line per configuration goes to ``OUT/results-<shard>.jsonl``
as it finishes, and one summary line to stdout; ``--save-files`` also keeps each direction file
and a picture of 12 validation faces (source, edit). (A lent device brings back only so many
files: the run of 2026-11-26 saved both for 55 configurations and got none back, only its logs.)

Made for a lent GPU (several shards side by side: the small U-Net leaves a GPU launch-bound), and
runs on a CPU too, slowly. Example (4 shards on one GPU, stop starting new work after 420 s)::

    for i in 0 1 2 3; do python scripts/sweep_directions.py --device cuda --shard $i/4 \
        --deadline-s 420 --out /tmp/sweep & done; wait
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

VAL_SEED = 4_000_037  # validation faces: not the directions' training seed, not check's EVAL_SEED
#: the rates the grid is centred on: the shipped ones when the sweep of 2026-11-26 ran (t_edit 500)
BASE_LR = {"smiling": 1.0, "glasses": 0.25, "blond": 2.0, "eyes_closed": 0.5, "hat": 2.0}


def configs(names: list[str]) -> list[dict]:
    """The grid, most informative first: the editing interval at each direction's current rate,
    then rates around it, then more training faces."""
    out: list[dict] = []
    seen: set[str] = set()

    def add(**c) -> None:
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)

    for t_edit, name in itertools.product((500, 300, 700), names):
        add(name=name, lr=BASE_LR[name], t_edit=t_edit, n_images=20, epochs=1, w_l1=3.0)
    for mult, t_edit, name in itertools.product((0.5, 2.0), (500, 300, 700), names):
        add(name=name, lr=BASE_LR[name] * mult, t_edit=t_edit, n_images=20, epochs=1, w_l1=3.0)
    for t_edit, name in itertools.product((500, 300), names):
        add(name=name, lr=BASE_LR[name], t_edit=t_edit, n_images=60, epochs=1, w_l1=3.0)
        add(name=name, lr=BASE_LR[name], t_edit=t_edit, n_images=20, epochs=1, w_l1=1.0)
        add(name=name, lr=BASE_LR[name], t_edit=t_edit, n_images=20, epochs=1, w_l1=10.0)
    for mult, name in itertools.product((0.25, 4.0), names):
        add(name=name, lr=BASE_LR[name] * mult, t_edit=500, n_images=20, epochs=1, w_l1=3.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shard", default="0/1", help="i/k: run configurations i, i+k, i+2k, ...")
    ap.add_argument("--names", nargs="*", default=list(BASE_LR))
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--val-steps", type=int, default=100, help="DDIM steps of the validation edit (check's default)")
    ap.add_argument("--deadline-s", type=float, default=float("inf"), help="start no configuration after this")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--save-files", action="store_true", help="keep each direction file and a picture")
    ap.add_argument("--configs", type=Path, help="a JSON list of configurations to run instead of the grid "
                    "(keys: name, lr, t_edit, n_images, epochs, w_l1; optional t_edit_max, edit_t_max, w_off, seed, kind)")
    ap.add_argument("--val-cache", type=Path, help="file for the inverted validation faces, made with the same --n-val and --val-steps (reused when it exists)")
    ap.add_argument("--list", action="store_true", help="print the grid and exit")
    args = ap.parse_args()
    grid = json.loads(args.configs.read_text()) if args.configs else configs(args.names)
    if args.list:
        for i, c in enumerate(grid):
            print(i, c)
        return

    from hspace.backbones.registry import load_backbone
    from hspace.directions import save_direction
    from hspace.editor import EditConfig, Editor
    from hspace.evaluation.factors import evaluate_toy_edit
    from hspace.outputs import make_grid
    from hspace.toyworld.clip_train import load_toy_clip
    from hspace.toyworld.directions import TOY_DIRECTIONS, DirectionRecipe, face_images, train_direction
    from hspace.toyworld.probe import load_probe

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    i_shard, k = map(int, args.shard.split("/"))
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    backbone = load_backbone("toy-faces", device=dev)
    encoder = load_toy_clip(device=dev)
    probe = load_probe()  # judges on the CPU
    val = face_images(VAL_SEED, args.n_val)
    val_editor = Editor(backbone, EditConfig(n_inv_steps=args.val_steps, n_steps=args.val_steps, batch_size=args.n_val,
                                             cache_latents=False, precision="bf16", progress=False))
    if args.val_cache is not None and args.val_cache.is_file():
        val_latents = torch.load(args.val_cache, weights_only=True).to(dev)
        if val_latents.shape != val.shape:
            raise SystemExit(f"{args.val_cache} holds {tuple(val_latents.shape)}, not {tuple(val.shape)}: delete it")
    else:
        val_latents = val_editor.invert(val.to(dev))
        if args.val_cache is not None:
            torch.save(val_latents.cpu(), args.val_cache)
    train_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    print(f"[{args.shard}] set up in {time.perf_counter() - t_start:.0f} s", flush=True)

    for idx in range(i_shard, len(grid), k):
        if time.perf_counter() - t_start > args.deadline_s:
            print(f"[{args.shard}] deadline: stopped before configuration {idx}", flush=True)
            break
        c = grid[idx]
        recipe = DirectionRecipe(n_images=c["n_images"], t_edit=c["t_edit"], lr=c["lr"], epochs=c["epochs"],
                                 w_l1=c["w_l1"], t_edit_max=c.get("t_edit_max"),
                                 edit_t_max=c.get("edit_t_max"), w_off=c.get("w_off", 0.0), seed=c.get("seed", 0),
                                 kind=c.get("kind", "implicit-ddpm"))
        if recipe.n_images not in train_cache:
            images = face_images(recipe.data_seed, recipe.n_images).to(dev)
            editor = Editor(backbone, EditConfig(n_inv_steps=recipe.n_inv_steps, n_steps=recipe.n_steps,
                                                 batch_size=recipe.n_images, cache_latents=False, progress=False))
            train_cache[recipe.n_images] = (editor.invert(images), images)
        latents, images = train_cache[recipe.n_images]
        spec = TOY_DIRECTIONS[c["name"]]
        t0 = time.perf_counter()
        res = train_direction(backbone, encoder, spec, recipe, latents, images, progress=False)
        train_s = time.perf_counter() - t0
        edited = val_editor.edit(val_latents, [(res.direction, 1.0)]).images.clamp(-1, 1).float().cpu()
        rep = evaluate_toy_edit(probe, val, edited, spec.judged_as, 1.0)
        kept = {f: round(p["rate"], 3) for f, p in rep["preservation"].items()}
        tag = f"{idx:03d}-{c['name']}-lr{c['lr']:g}-t{c['t_edit']}-n{c['n_images']}x{c['epochs']}-l1{c['w_l1']:g}" + (
            f"-max{c['t_edit_max']}" if c.get("t_edit_max") is not None else "") + (
            f"-edmax{c['edit_t_max']}" if c.get("edit_t_max") is not None else "") + (
            f"-off{c['w_off']:g}" if c.get("w_off") else "") + (f"-seed{c['seed']}" if c.get("seed") else "") + (
            f"-{c['kind']}" if c.get("kind", "implicit-ddpm") != "implicit-ddpm" else "")
        if args.save_files:
            save_direction(res.direction, args.out / f"{tag}.safetensors", overwrite=True)
            make_grid([[val[i], edited[i]] for i in range(min(12, len(val)))]).save(args.out / f"{tag}.png")
        row = {"idx": idx, **c, "tag": tag, "success": rep["success"]["rate"], "min_kept": min(kept.values()),
               "worst": min(kept, key=kept.get), "kept": kept, "train_s": round(train_s, 1),
               "total_s": round(time.perf_counter() - t0, 1), "device": str(dev),
               "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        with open(args.out / f"results-{i_shard}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{args.shard}] {tag}: success {row['success']:.2f}, worst kept {row['min_kept']:.2f} ({row['worst']}), "
              f"{row['total_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
