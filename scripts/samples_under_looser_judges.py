"""How many of a model's samples would pass a looser validity judge: the data for deciding the judge.

The samples bar asks for >= 90 % of 200 samples (50 DDIM steps) judged valid faces. The shipped
judge (:class:`hspace.toyworld.quality.FaceValidity`) asks each sample to match the rendering of
the probe's reading as closely as real faces match theirs (threshold 2x their 99th percentile,
0.030); a 3-pixel blur of a real face already fails it. This script samples as ``check --only
base`` does (same seed, steps and clipping), measures every sample's render error once, and
reports the share under thresholds set by degraded real faces: the median and the worst render
error of real faces after a 3-pixel and a 5-pixel box blur, and after Gaussian noise of std 0.05.
It judges nothing by itself; it says how far each looser rule would move the rate. Example::

    python scripts/samples_under_looser_judges.py --model toy-faces --n 200 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """A k x k box blur with replicated edges (k odd)."""
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


def main() -> None:
    from hspace.backbones.registry import load_backbone
    from hspace.editor import EditConfig, Editor
    from hspace.toyworld.directions import face_images
    from hspace.toyworld.probe import EVAL_SEED, load_probe
    from hspace.toyworld.quality import FaceValidity

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-faces", help="toy-faces or an exported model folder")
    ap.add_argument("--n", type=int, default=200, help="samples (the bar's 200)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (the bar's 50)")
    ap.add_argument("--n-real", type=int, default=32, help="real faces per degradation")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (check's 0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backbone = load_backbone(args.model)
    validity = FaceValidity(load_probe())
    # the same noise and sampler as check_base_model: seed, 50 DDIM steps, P_t clipped as configured
    noise = torch.randn(args.n, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(args.seed))
    editor = Editor(backbone, EditConfig(n_inv_steps=args.steps, n_steps=args.steps, batch_size=50, cache_latents=False,
                                         progress=False))
    errors = validity.errors(editor.sample(noise).clamp(-1, 1))
    real = face_images(EVAL_SEED, args.n_real, start=20_000)  # a block no check or calibration uses
    g = torch.Generator().manual_seed(1)
    degraded = {"real faces": real, "3-px box blur": box_blur(real, 3), "5-px box blur": box_blur(real, 5),
                "noise std 0.05": (real + 0.05 * torch.randn(real.shape, generator=g)).clamp(-1, 1)}
    rows = []
    for name, images in degraded.items():
        e = validity.errors(images)
        for stat, value in (("median", float(e.median())), ("worst", float(e.max()))):
            rows.append({"reference": f"{name}, {stat}", "threshold": round(value, 4),
                         "samples_under": round(float((errors <= value).float().mean()), 3)})
    rows.insert(0, {"reference": "the shipped judge", "threshold": round(validity.threshold, 4),
                    "samples_under": round(float((errors <= validity.threshold).float().mean()), 3)})
    q = torch.quantile(errors, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))
    out = {"model": args.model, "n": args.n, "ddim_steps": args.steps, "seed": args.seed,
           "sample_render_error_quantiles": dict(zip(("10", "25", "50", "75", "90"), [round(float(v), 4) for v in q])),
           "judges": rows, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{args.model}: {args.n} samples, render error quantiles 10/25/50/75/90 %: "
          + " / ".join(f"{v:.3f}" for v in q))
    for r in rows:
        print(f"  threshold {r['threshold']:.4f} ({r['reference']}): {r['samples_under']:.1%} of samples under it")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
