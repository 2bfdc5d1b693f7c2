"""Judge direction files edited in an editing band (``EditConfig.t_edit_max``) on validation faces.

The file is used as it is (trained with or without a band); only the edit stops at ``t_edit_max``
(999: no band). Same validation faces and judging as ``scripts/sweep_directions.py``. Example::

    python scripts/band_at_edit.py smiling:src/hspace/data/directions/toy-faces/smiling.safetensors:700 \\
        --val-cache /tmp/val100.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME:FILE:T_EDIT_MAX (NAME: the toy direction it is judged as)")
    ap.add_argument("--val-cache", type=Path, help="inverted validation faces (as sweep_directions.py writes them)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--start", type=int, default=0, help="first validation face (100 from here; another --val-cache per start)")
    args = ap.parse_args()

    from hspace.backbones.registry import load_backbone
    from hspace.directions import load_direction
    from hspace.editor import EditConfig, Editor
    from hspace.evaluation.factors import evaluate_toy_edit
    from hspace.toyworld.directions import TOY_DIRECTIONS, face_images
    from hspace.toyworld.probe import load_probe

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sweep_directions import VAL_SEED

    torch.set_num_threads(args.threads)
    backbone, probe = load_backbone("toy-faces"), load_probe()
    val = face_images(VAL_SEED, 100, start=args.start)
    base = dict(n_inv_steps=100, n_steps=100, batch_size=25, precision="bf16", cache_latents=False, progress=False)
    if args.val_cache is not None and args.val_cache.is_file():
        latents = torch.load(args.val_cache, weights_only=True)
    else:
        latents = Editor(backbone, EditConfig(**base)).invert(val)
        if args.val_cache is not None:
            torch.save(latents, args.val_cache)
    for run in args.runs:
        name, path, top = run.rsplit(":", 2)
        editor = Editor(backbone, EditConfig(**base, t_edit_max=None if int(top) >= 999 else int(top)))
        edited = editor.edit(latents, [(load_direction(path, backbone), 1.0)]).images.clamp(-1, 1)
        rep = evaluate_toy_edit(probe, val, edited, TOY_DIRECTIONS[name].judged_as, 1.0)
        kept = {f: round(p["rate"], 2) for f, p in rep["preservation"].items()}
        worst = min(kept, key=kept.get)
        print(f"{name} {path} t <= {top}: success {rep['success']['rate']:.2f}, worst kept {kept[worst]:.2f} ({worst}) "
              f"{kept}", flush=True)


if __name__ == "__main__":
    main()
