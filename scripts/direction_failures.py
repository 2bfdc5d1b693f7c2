"""Face by face: which other factors a toy direction changes, and pictures of the worst faces.

``hspace toyworld check`` reports, per factor, the share of faces that keep it. This asks the
other question: on how many faces does an edit change nothing else, and on how many does it
redraw the whole face? It edits the same 100 held-out faces as ``check`` (EVAL_SEED, 100 DDIM
steps, strength 1), reads source and edit with the probe, and writes per direction the histogram
of "other factors changed", the count per factor, and ``<name>-worst.png`` (source,
reconstruction, edit for the 8 faces with the most changes). Example::

    python scripts/direction_failures.py --out docs/results/direction-failures --names smiling glasses
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

POSE = ("dx", "dy", "scale", "tilt")


def changed(source: dict, edited: dict, skip: str | None, smile_step: float) -> list[str]:
    """The factors (pose aside, ``skip`` aside) whose probe reading differs between two faces."""
    out = []
    for k, v in source.items():
        if k == skip or k in POSE:
            continue
        if (abs(v - edited[k]) > smile_step) if k == "smile" else (v != edited[k]):
            out.append(k)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folder", type=Path, help="direction files (default: the shipped ones)")
    ap.add_argument("--names", nargs="*", help="directions (default: all five)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from hspace.backbones.registry import load_backbone
    from hspace.directions import load_direction
    from hspace.editor import EditConfig, Editor
    from hspace.evaluation.factors import SMILE_STEP, resolve_toy_target
    from hspace.outputs import make_grid
    from hspace.toyworld.directions import TOY_DIRECTIONS, shipped_direction_path
    from hspace.toyworld.probe import EVAL_SEED, load_probe, render_eval_set
    from hspace.toyworld.quality import DIRECTION_CHECK_STEPS

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    backbone, probe = load_backbone("toy-faces"), load_probe()
    real, _ = render_eval_set(100, EVAL_SEED)
    editor = Editor(backbone, EditConfig(n_inv_steps=DIRECTION_CHECK_STEPS, n_steps=DIRECTION_CHECK_STEPS,
                                         batch_size=25, precision="bf16", cache_latents=False))
    latents = editor.invert(real)
    recon = editor.reconstruct(latents).clamp(-1, 1)
    src = probe.predict_factors(real)
    report = {"n": len(real), "ddim_steps": DIRECTION_CHECK_STEPS,
              "reconstruction_faces_changed": sum(bool(changed(a, b, None, SMILE_STEP))
                                                  for a, b in zip(src, probe.predict_factors(recon))),
              "directions": {}}
    for name in args.names or list(TOY_DIRECTIONS):
        target = resolve_toy_target(TOY_DIRECTIONS[name].judged_as, 1.0)
        path = shipped_direction_path(name, args.folder)
        if path is None:
            raise SystemExit(f"no direction file for {name!r} in {args.folder or 'the shipped folder'}")
        edited = editor.edit(latents, [(load_direction(path, backbone), 1.0)]).images.clamp(-1, 1)
        per_face = [changed(a, b, target.factor, SMILE_STEP) for a, b in zip(src, probe.predict_factors(edited))]
        counts = [len(c) for c in per_face]
        per_factor: dict[str, int] = {}
        for c in per_face:
            for k in c:
                per_factor[k] = per_factor.get(k, 0) + 1
        worst = sorted(range(len(real)), key=lambda i: -counts[i])[:8]
        make_grid([[real[i], recon[i], edited[i]] for i in worst], labels=["source", "reconstruction", name]
                  ).save(args.out / f"{name}-worst.png")
        report["directions"][name] = {
            "file": str(path), "faces_by_other_factors_changed": {str(c): counts.count(c) for c in sorted(set(counts))},
            "faces_per_factor_changed": dict(sorted(per_factor.items(), key=lambda kv: -kv[1])),
            "worst_faces": {str(i): per_face[i] for i in worst}}
        print(name, json.dumps(report["directions"][name]["faces_by_other_factors_changed"]),
              json.dumps(report["directions"][name]["faces_per_factor_changed"]), flush=True)
    (args.out / "failures.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
