"""Does the choice of training faces change where glasses are missed? (docs/toyworld.md, "Which faces glasses miss")

Trains the glasses direction with the shipped recipe (t_edit 300, lr 0.125, 20 faces of the
training seed) on one of three face choices, and judges it at strength 1 on three sets of 100
faces (``check``'s and validation faces 0-99 and 100-199, 100 DDIM steps, bf16, as
``scripts/direction_by_face.py``, whose ``--cache-dir`` latents it reuses or writes):

* ``first``: the first 20 faces, as the shipped recipe (7 of them already have glasses);
* ``eligible``: the first 20 faces without glasses;
* ``closed``: 20 faces without glasses, half with closed eyes (the weak spot).

Example::

    python scripts/glasses_training_faces.py eligible --cache-dir /tmp/latents
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("faces", choices=("first", "eligible", "closed"))
    ap.add_argument("--lr", type=float, default=0.125)
    ap.add_argument("--w-off", type=float, default=0.0)
    ap.add_argument("--cache-dir", type=Path, help="inverted judging faces (as direction_by_face.py keeps them)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from hspace.backbones.registry import load_backbone
    from hspace.editor import EditConfig, Editor
    from hspace.evaluation.factors import evaluate_toy_edit
    from hspace.toyworld.clip_train import load_toy_clip
    from hspace.toyworld.dataset import render_faces
    from hspace.toyworld.directions import TOY_DIRECTIONS, TRAIN_SEED, DirectionRecipe, train_direction
    from hspace.toyworld.faces import factors_for
    from hspace.toyworld.probe import load_probe

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from direction_by_face import inverted_set

    torch.set_num_threads(args.threads)
    backbone, clip, probe = load_backbone("toy-faces"), load_toy_clip(), load_probe()
    spec = TOY_DIRECTIONS["glasses"]
    pool = [factors_for(TRAIN_SEED, i) for i in range(200)]
    if args.faces == "eligible":
        chosen = [f for f in pool if not f.glasses][:20]
    elif args.faces == "closed":
        closed = [f for f in pool if not f.glasses and not f.eyes_open][:10]
        opened = [f for f in pool if not f.glasses and f.eyes_open][:10]
        chosen = [f for pair in zip(closed, opened) for f in pair]
    else:
        chosen = pool[:20]
    images = render_faces(chosen)
    recipe = DirectionRecipe(t_edit=300, lr=args.lr, w_off=args.w_off)
    latents = Editor(backbone, EditConfig(n_inv_steps=recipe.n_inv_steps, n_steps=recipe.n_steps, batch_size=20,
                                          cache_latents=False, progress=False)).invert(images)
    t0 = time.perf_counter()
    direction = train_direction(backbone, clip, spec, recipe, latents, images, progress=False).direction
    print(f"glasses trained on {args.faces} faces (lr {args.lr:g}, w_off {args.w_off:g}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    editor = Editor(backbone, EditConfig(n_inv_steps=100, n_steps=100, batch_size=25, precision="bf16",
                                         cache_latents=False, progress=False))
    for spec_set in ("check", "val", "val:100"):
        label, _, _, faces, judged = inverted_set(editor, spec_set, 100, args.cache_dir)
        edited = editor.edit(judged, [(direction, 1.0)]).images.clamp(-1, 1)
        rep = evaluate_toy_edit(probe, faces, edited, spec.judged_as, 1.0)
        kept = {f: round(p["rate"], 2) for f, p in rep["preservation"].items()}
        worst = min(kept, key=kept.get)
        print(f"  {label}: reached {rep['success']['rate']:.2f}, worst kept {kept[worst]:.2f} ({worst}) {kept}", flush=True)


if __name__ == "__main__":
    main()
