"""Per-face DDIM inversion + reconstruction PSNR of several diffusion models on the same held-out
faces (those of `hspace toyworld check`): how many faces each model fails to reconstruct, not only
the mean that `check --only inversion` reports.

    python scripts/inversion_by_face.py toy-faces /tmp/candidate [...] --n 16 --steps 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hspace.backbones.registry import load_backbone
from hspace.editor import EditConfig, Editor
from hspace.metrics import psnr
from hspace.toyworld.probe import EVAL_SEED, render_eval_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="toy-faces or exported model folders")
    ap.add_argument("--n", type=int, default=16, help="held-out faces")
    ap.add_argument("--steps", type=int, default=100, help="DDIM steps each way")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the per-face numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    real, _ = render_eval_set(args.n, EVAL_SEED)
    out = {}
    for name in args.models:
        t0 = time.perf_counter()
        config = EditConfig(n_inv_steps=args.steps, n_steps=args.steps, cache_latents=False, batch_size=args.n,
                            progress=False)  # as `check --only inversion`
        ed = Editor(load_backbone(name), config)
        p = psnr(ed.reconstruct(ed.invert(real)), real)
        out[name] = [round(float(v), 2) for v in p]
        print(f"{name}: mean {p.mean():.2f} dB, median {p.median():.2f}, min {p.min():.2f}, "
              f"{int((p < 30).sum())}/{args.n} faces under 30 dB ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"n": args.n, "steps": args.steps, "psnr_db": out}, f, indent=1)


if __name__ == "__main__":
    main()
