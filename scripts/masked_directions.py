"""Shipped toy directions with their dh confined to a region of h: does a local edit keep more?

h on toy-faces is an 8x8 grid over the 64x64 face (one cell = 8x8 pixels; the eyes sit in rows
3-4, a hat in rows 0-2). Each shipped direction is applied at strength 1 as ``check`` applies it
(100 DDIM steps, bf16 generation, float32 inversion, ``check``'s held-out faces), with dh
multiplied by a 0/1 mask over the grid, and judged by the probe. A direction whose side effects
come from the cells away from its target would keep more under the mask. Example::

    python scripts/masked_directions.py --plan '{"glasses": ["all", "eyes", "eyes+"], "hat": ["top"]}' \\
        --n 100 --threads 2 --cache /tmp/latents100.pt

Masks (rows x columns of the 8x8 grid, end exclusive): all (no mask), eyes (3-5 x 1-7), eyes+
(2-6 x 0-8), top (0-3 x 0-8), topsides (rows 0-3 and columns 0 and 7).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn


def _box(rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(8, 8)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


MASKS = {
    "all": torch.ones(8, 8),
    "eyes": _box((3, 5), (1, 7)),
    "eyes+": _box((2, 6), (0, 8)),
    "top": _box((0, 3), (0, 8)),
    "topsides": ((_box((0, 3), (0, 8)) + _box((0, 8), (0, 1)) + _box((0, 8), (7, 8))) > 0).float(),
}


class MaskedDirection(nn.Module):
    """``dh * mask``: the wrapped direction's edit confined to the mask's cells of h."""

    def __init__(self, direction: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.direction, self.meta = direction, direction.meta
        self.register_buffer("mask", mask)

    def forward(self, h: torch.Tensor, t: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.direction(h, t, temb) * self.mask.to(h.dtype)


def main() -> None:
    from hspace.backbones.registry import load_backbone
    from hspace.directions import load_direction
    from hspace.editor import EditConfig, Editor
    from hspace.toyworld.directions import TOY_DIRECTIONS, evaluate_direction, shipped_direction_path
    from hspace.toyworld.probe import EVAL_SEED, load_probe, render_eval_set
    from hspace.toyworld.quality import DIRECTION_CHECK_STEPS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", required=True, help='JSON: {"direction": ["mask", ...], ...}')
    ap.add_argument("--n", type=int, default=100, help="held-out faces (check's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, help="inverted latents: read if present, else written")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    plan = json.loads(args.plan)
    for name, masks in plan.items():
        if name not in TOY_DIRECTIONS or not set(masks) <= set(MASKS):
            raise SystemExit(f"unknown direction or mask in {name}: {masks}; directions {list(TOY_DIRECTIONS)}, masks {list(MASKS)}")
    torch.set_num_threads(args.threads)
    backbone, probe = load_backbone("toy-faces"), load_probe()
    real, _ = render_eval_set(args.n, EVAL_SEED)
    steps = DIRECTION_CHECK_STEPS
    editor = Editor(backbone, EditConfig(n_inv_steps=steps, n_steps=steps, batch_size=25, precision="bf16",
                                         cache_latents=False, progress=False))
    if args.cache and args.cache.is_file():
        latents = torch.load(args.cache, weights_only=True)
    else:
        latents = editor.invert(real)
        if args.cache:
            torch.save(latents, args.cache)
    results = []
    for name, masks in plan.items():
        direction = load_direction(shipped_direction_path(name), backbone)
        for mask in masks:
            t0 = time.perf_counter()
            rep = evaluate_direction(editor, probe, MaskedDirection(direction, MASKS[mask]), latents, real,
                                     TOY_DIRECTIONS[name].judged_as)
            kept = {f: round(p["rate"], 2) for f, p in rep["preservation"].items()}
            results.append({"direction": name, "mask": mask, "success": rep["success_rate"],
                            "worst_kept": rep["min_preserved"], "worst_factor": rep["worst_factor"], "kept": kept})
            print(f"{name:12s} {mask:9s} reach {rep['success_rate']:.2f} worst kept {rep['min_preserved']:.2f} "
                  f"({rep['worst_factor']}) {kept} {time.perf_counter() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "ddim_steps": steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
