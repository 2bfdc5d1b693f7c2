"""Seconds per training step of a toy-faces U-Net recipe: eager against ``torch.compile``.

    python benchmarks/bench_train_unet.py                              # toy-faces-1group, 1 thread
    python benchmarks/bench_train_unet.py --recipe toy-faces --threads 2 --steps 20
    python benchmarks/bench_train_unet.py --device cuda --modes eager compile

One step is ``hspace.toyworld.train_unet.optimisation_step``, what ``hspace toyworld train-unet``
runs per step (loss with the recipe's low-frequency term at its last weight, backward, gradient
clipping, AdamW), on a fixed random batch; the data loader and the EMA update are not timed. Each mode starts from the same seeded weights; the first step (compilation for
``compile``) is reported apart, then ``--warmup`` steps are dropped and ``--steps`` timed.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from hspace.perf import tune_malloc
from hspace.toyworld.train_unet import RECIPES, build_unet, make_scheduler, optimisation_step


def time_mode(mode: str, recipe_name: str, device: str, steps: int, warmup: int) -> tuple[float, float]:
    """(first-step seconds, mean seconds per later step) for ``mode`` in {eager, compile}."""
    recipe = RECIPES[recipe_name]()
    unet = build_unet(recipe.unet).to(device).train()
    model = torch.compile(unet) if mode == "compile" else unet
    acp = make_scheduler().alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, betas=tuple(recipe.adam_betas))
    g = torch.Generator().manual_seed(0)
    size = recipe.image_size
    x0 = (torch.rand(recipe.batch_size, 3, size, size, generator=g) * 2 - 1).to(device)
    # time the steps where the low-frequency term is on at its last weight (the costlier loss)
    at = max([recipe.lowfreq_from_step] + [s for s, _ in recipe.lowfreq_schedule])

    def step() -> None:
        t = torch.randint(0, len(acp), (recipe.batch_size,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        optimisation_step(model, opt, recipe, at, x0, t, noise, acp, bf16=recipe.precision == "bf16")
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="toy-faces-1group", choices=sorted(RECIPES))
    ap.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    print(f"recipe {args.recipe}, device {args.device}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| mode | first step s | s / step |\n|---|---|---|")
    for mode in args.modes:
        first, per_step = time_mode(mode, args.recipe, args.device, args.steps, args.warmup)
        print(f"| {mode} | {first:.1f} | {per_step:.3f} |", flush=True)


if __name__ == "__main__":
    main()
