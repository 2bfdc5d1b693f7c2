"""Seconds per training step with the off-axis CLIP penalty, the P_edit embedding shared or not.

The directional loss and the off-axis penalty score the same P_edit in each training step. Since
2026-11-27 (fourteenth session) the directional loss hands its image embedding to the penalty
(``CLIPDirectionalLoss.share_edit_embedding``), so the CLIP image encoder runs once per step on
P_edit instead of twice. This times ``Trainer.train`` on the built-in ``toy-faces`` with
``toy-clip`` ("face" -> "face with glasses", t_edit 300, 40 DDIM steps, lr 0.125, w_off 6) with
sharing on and off, alternating, in one process, and prints a Markdown table. Example::

    python benchmarks/bench_off_axis.py --faces 4 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=4, help="training faces (each gives about 28 SGD steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--w-off", type=float, default=6.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hspace.backbones.registry import load_backbone
    from hspace.editor import EditConfig, Editor
    from hspace.encoders import load_encoder
    from hspace.objectives import make_clip_objective
    from hspace.toyworld.dataset import render_faces
    from hspace.toyworld.faces import factors_for
    from hspace.trainer import TrainConfig, Trainer

    backbone = load_backbone("toy-faces")
    clip = load_encoder("toy-clip")
    images = render_faces([factors_for(11, i) for i in range(args.faces)])
    latents = Editor(backbone, EditConfig(n_inv_steps=40, n_steps=40, cache_latents=False, progress=False)).invert(images)
    objective = make_clip_objective(clip, "face", "face with glasses", w_off=args.w_off)
    directional = objective.objectives[0]
    config = TrainConfig(t_edit=300, lr=0.125, source_text="face", target_text="face with glasses", progress=False)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, float] = {}
    steps = 0
    for _ in range(args.repeats):
        for share in (False, True):
            directional.share_edit_embedding = share
            trainer = Trainer(backbone, objective, config)
            data = trainer.data_from_latents(latents, images)
            t0 = time.perf_counter()
            result = trainer.train(data)
            seconds[share].append(time.perf_counter() - t0)
            steps = result.steps
            losses[share] = result.losses[-1]
    print(f"toy-faces + toy-clip, {args.faces} faces, {steps} SGD steps per run, w_off {args.w_off:g}, "
          f"{args.threads} threads, median of {args.repeats}\n")
    print("| P_edit embedding | s per run | s per step | last loss |")
    print("|---|---|---|---|")
    for share, label in ((False, "encoded twice (before)"), (True, "shared (now)")):
        med = statistics.median(seconds[share])
        print(f"| {label} | {med:.2f} | {med / steps:.4f} | {losses[share]:.6f} |")
    print(f"\nspeed-up {statistics.median(seconds[False]) / statistics.median(seconds[True]):.2f}x")


if __name__ == "__main__":
    main()
