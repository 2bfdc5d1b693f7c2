"""Which faces a toy direction reaches: its success and side effects grouped by each source factor.

``check`` reports one rate per direction; this splits it by the faces' ground-truth factors (skin
tone, hat, hair colour, beard, pose scale, ...) for one or more face sets, to see why a direction
reaches less on one set than on another. Faces are inverted and edited as ``check`` does (100
DDIM steps, bf16 generation, strength 1) and read by the probe. Example (the glasses file on
``check``'s faces and on the validation faces)::

    python scripts/direction_by_face.py glasses src/hspace/data/directions/toy-faces/glasses.safetensors \\
        --set check --set val --set val:100 --cache-dir /tmp/latents --out /tmp/glasses-by-face.json \
        --picture eyes_open=False

``--picture GROUP`` also writes ``<out stem>-<set>-<GROUP>.png``: source and edit of up to 16
eligible faces of that group, with what the probe read on the edit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from direction_failures import POSE, changed  # noqa: E402  (the same per-face test as that script)

#: pose factors, grouped into bins of their value
POSE_BINS = {"scale": (0.0, 0.97, 1.03, 9.0), "tilt": (-99.0, -4.0, 4.0, 99.0)}
#: factors that are not shown per value (continuous or pose handled by POSE_BINS)
SKIP = {"smile", *POSE}


def face_set(spec: str) -> tuple[str, int, int]:
    """``check`` (the check's held-out seed) or ``val[:START]`` (the sweep's validation seed)."""
    from hspace.toyworld.probe import EVAL_SEED

    from sweep_directions import VAL_SEED

    name, _, start = spec.partition(":")
    if name not in ("check", "val"):
        raise SystemExit(f"--set {spec!r}: use check, val or val:START")
    return spec, EVAL_SEED if name == "check" else VAL_SEED, int(start or 0)


def inverted_set(editor, spec: str, n: int, cache_dir: Path | None):
    """``(label, seed, start, images, latents)`` of face set ``spec`` (see :func:`face_set`), its
    latents read from / kept in ``cache_dir`` when given (one file per set)."""
    from hspace.toyworld.directions import face_images

    label, seed, start = face_set(spec)
    images = face_images(seed, n, start=start)
    cache = cache_dir / f"latents-{seed}-{start}-{n}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        latents = torch.load(cache, weights_only=True)
    else:
        latents = editor.invert(images)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(latents, cache)
    return label, seed, start, images, latents


def groups_of(factors) -> list[tuple[str, str]]:
    """(factor, value label) pairs a face belongs to."""
    out = []
    for k, v in asdict(factors).items():
        if k in POSE_BINS:
            edges = POSE_BINS[k]
            for lo, hi in zip(edges, edges[1:]):
                if lo <= v < hi:
                    out.append((k, f"[{lo:g}, {hi:g})"))
        elif k not in SKIP:
            out.append((k, str(v)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="the toy direction it is judged as (glasses, smiling, ...)")
    ap.add_argument("file", type=Path)
    ap.add_argument("--set", dest="sets", action="append", required=True, help="check, val or val:START (repeatable)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--cache-dir", type=Path, help="keep inverted faces here (one file per set)")
    ap.add_argument("--out", type=Path, help="write the table as JSON too")
    ap.add_argument("--picture", help="a group such as eyes_open=False: picture its faces (needs --out)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.picture and not args.out:
        raise SystemExit("--picture needs --out (the picture is written beside it)")

    from hspace.backbones.registry import load_backbone
    from hspace.directions import load_direction
    from hspace.editor import EditConfig, Editor
    from hspace.outputs import make_grid
    from hspace.evaluation.factors import SMILE_STEP, resolve_toy_target
    from hspace.toyworld.directions import TOY_DIRECTIONS
    from hspace.toyworld.faces import factors_for
    from hspace.toyworld.probe import load_probe
    from hspace.toyworld.quality import DIRECTION_CHECK_STEPS

    torch.set_num_threads(args.threads)
    backbone, probe = load_backbone("toy-faces"), load_probe()
    direction = load_direction(args.file, backbone)
    target = resolve_toy_target(TOY_DIRECTIONS[args.name].judged_as, 1.0)
    editor = Editor(backbone, EditConfig(n_inv_steps=DIRECTION_CHECK_STEPS, n_steps=DIRECTION_CHECK_STEPS,
                                         batch_size=25, precision="bf16", cache_latents=False, progress=False))
    report = {}
    for spec in args.sets:
        label, seed, start, images, latents = inverted_set(editor, spec, args.n, args.cache_dir)
        edited = editor.edit(latents, [(direction, 1.0)]).images.clamp(-1, 1)
        before, after = probe.predict_factors(images), probe.predict_factors(edited)
        stats: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # eligible, reached, kept all
        shown: list[tuple[int, str]] = []
        for i, (a, b) in enumerate(zip(before, after)):
            if target.factor == "smile" or a[target.factor] == target.value:
                continue  # only the plain targets here; the face already has it
            reached = b[target.factor] == target.value
            lost = changed(a, b, target.factor, SMILE_STEP)  # the other factors the edit changed
            kept = not lost
            groups = groups_of(factors_for(seed, start + i))
            if args.picture and any(f"{k}={v}" == args.picture for k, v in groups) and len(shown) < 16:
                shown.append((i, ("reached" if reached else "missed") + (f"; {', '.join(lost)}" if lost else "")))
            for g in [("all", ""), *groups]:
                s = stats[g]
                s[0] += 1
                s[1] += reached
                s[2] += kept
        rows = {f"{k}={v}" if v else k: {"n": s[0], "reached": round(s[1] / s[0], 2), "kept_all": round(s[2] / s[0], 2)}
                for (k, v), s in sorted(stats.items())}
        report[label] = rows
        if args.picture:
            if not shown:
                print(f"  (no eligible face in group {args.picture} on {label})")
            else:
                half = (len(shown) + 1) // 2
                cells = [[images[i], edited[i]] for i, _ in shown]
                rows_img = [cells[k] + (cells[k + half] if k + half < len(cells) else []) for k in range(half)]
                path = args.out.with_name(f"{args.out.stem}-{label.replace(':', '-')}-{args.picture}.png")
                make_grid(rows_img, labels=["source", args.name, "source", args.name]).save(path)
                print(f"  {path}: " + "; ".join(f"face {start + i}: {what}" for i, what in shown))
        print(f"\n{args.name} on {label} (seed {seed}, faces {start}..{start + args.n - 1}): "
              f"reached {rows['all']['reached']:.2f}, every other factor kept {rows['all']['kept_all']:.2f} "
              f"(n={rows['all']['n']})", flush=True)
        for key, r in rows.items():
            if key != "all":
                print(f"  {key:28s} n={r['n']:3d}  reached {r['reached']:.2f}  kept all {r['kept_all']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"name": args.name, "file": str(args.file), "sets": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
