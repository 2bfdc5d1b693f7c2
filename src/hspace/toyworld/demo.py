"""The main job on the built-in world (``hspace demo``): real models, real edits, measured.

:func:`run_toy_demo` samples held-out toy faces as the "real" inputs, DDIM-inverts them with
``toy-faces``, trains a short direction from text with the small CLIP, edits with it and with
the shipped directions at strengths -1 .. 1, composes two shipped directions, and measures every
edit with the attribute probe (target success, preservation of the other factors, probe FID
against held-out faces). The CLI writes the pictures and the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .directions import TOY_DIRECTIONS, ToyDirection, face_images, shipped_direction_path

__all__ = ["DemoSettings", "DemoResult", "DEMO_TRAINED", "run_toy_demo"]

#: The direction the demo trains from text (not among the shipped ones, so it shows something new).
#: Its rate is sized for the v-prediction toy-faces, as the shipped directions' are (TOY_DIRECTIONS).
DEMO_TRAINED = ToyDirection("beard", "a face", "a face with a beard", "beard", lr=2.0)
DEMO_SEED = 3_000_017  # input faces: held out from every training set


@dataclass
class DemoSettings:
    n_images: int = 6
    steps: int = 40
    strengths: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    shipped: tuple[str, ...] = ("smiling", "glasses")
    compose: tuple[str, str] = ("smiling", "glasses")
    n_real: int = 200
    precision: str = "bf16"  # editing only; inversion is always float32
    seed: int = 0


@dataclass
class DemoResult:
    images: torch.Tensor
    reconstructions: torch.Tensor
    edits: dict[str, list[torch.Tensor]]  # direction name -> one image batch per strength
    composed: torch.Tensor
    metrics: dict[str, Any]
    directions: dict[str, Any] = field(default_factory=dict)  # name -> Direction
    seconds: dict[str, float] = field(default_factory=dict)


def run_toy_demo(backbone, encoder, probe, settings: DemoSettings = DemoSettings(), progress: bool = True,
                 log: Callable[[str], None] = print, checkpoint: Optional[str] = None) -> DemoResult:
    """Run the demo (see the module docstring); ``log`` receives one line per stage."""
    from ..directions import load_direction
    from ..editor import EditConfig, Editor
    from ..evaluation.factors import evaluate_toy_edit
    from ..metrics import psnr
    from .directions import DirectionRecipe, recipe_for, train_direction
    from .probe import EVAL_SEED, probe_fid

    s = settings
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    images = face_images(DEMO_SEED, s.n_images)
    editor = Editor(backbone, EditConfig(n_inv_steps=s.steps, n_steps=s.steps, cache_latents=False, seed=s.seed,
                                         batch_size=s.n_images, precision=s.precision, progress=progress))
    latents = editor.invert(images)
    recon = editor.reconstruct(latents)
    seconds["invert_reconstruct"] = time.perf_counter() - t
    log(f"1/4 inverted (float32) and reconstructed ({s.precision}) {s.n_images} held-out toy faces ({s.steps} DDIM steps, "
        f"PSNR {float(psnr(recon, images).mean()):.1f} dB)")

    t = time.perf_counter()
    recipe = recipe_for(DEMO_TRAINED, DirectionRecipe(n_images=s.n_images, n_steps=s.steps, n_inv_steps=s.steps))
    trained = train_direction(backbone, encoder, DEMO_TRAINED, recipe, latents, images, checkpoint=checkpoint,
                              progress=progress)
    seconds["train"] = time.perf_counter() - t
    log(f"2/4 trained {DEMO_TRAINED.source!r} -> {DEMO_TRAINED.target!r} with the toy CLIP on these faces "
        f"({trained.steps} steps, {seconds['train']:.0f} s)")

    directions: dict[str, Any] = {DEMO_TRAINED.name: trained.direction}
    for name in s.shipped:
        path = shipped_direction_path(name)
        if path is None:
            log(f"   shipped direction {name!r} missing; skipped (train it: hspace toyworld train-directions --only {name})")
            continue
        directions[name] = load_direction(path, backbone)
    t = time.perf_counter()
    edits = {name: [o.images.clamp(-1, 1) for o in editor.sweep(latents, d, s.strengths)] for name, d in directions.items()}
    pair = [n for n in s.compose if n in directions]
    composed = editor.edit(latents, [(directions[n], 1.0) for n in pair]).images.clamp(-1, 1) if len(pair) == 2 else recon
    seconds["edit"] = time.perf_counter() - t
    log(f"3/4 edited with {list(directions)} at strengths {list(s.strengths)}"
        + (f" and composed {pair[0]} + {pair[1]}" if len(pair) == 2 else ""))

    t = time.perf_counter()
    real = face_images(EVAL_SEED, s.n_real, start=20_000)
    judged = {DEMO_TRAINED.name: DEMO_TRAINED.judged_as, **{n: TOY_DIRECTIONS[n].judged_as for n in s.shipped}}
    per_direction: dict[str, Any] = {}
    for name, batches in edits.items():
        rows = []
        for strength, x in zip(s.strengths, batches):
            row: dict[str, Any] = {"strength": strength, "probe_fid_vs_real": probe_fid(probe, x, real),
                                   "psnr_vs_input_db": float(psnr(x, images).mean())}
            if strength != 0:
                rep = evaluate_toy_edit(probe, images, x, judged[name], strength)
                row.update(success_rate=rep["success"]["rate"], n_eligible=rep["success"]["n_eligible"],
                           preservation={f: p["rate"] for f, p in rep["preservation"].items()},
                           passes=rep["passes"], failing=rep["failing"])
            rows.append(row)
        per_direction[name] = {"trained_here": name == DEMO_TRAINED.name, "judged_as": judged[name],
                               "source_text": directions[name].meta.source_text,
                               "target_text": directions[name].meta.target_text, "strengths": rows}
    comp: dict[str, Any] = {"members": pair}
    if len(pair) == 2:
        for n in pair:
            rep = evaluate_toy_edit(probe, images, composed, judged[n], 1.0)
            comp[n] = {"success_rate": rep["success"]["rate"], "n_eligible": rep["success"]["n_eligible"]}
        comp["probe_fid_vs_real"] = probe_fid(probe, composed, real)
    metrics = {
        "model": backbone.backbone_id, "clip": getattr(encoder, "name", "?"), "n_images": s.n_images,
        "ddim_steps": s.steps, "precision_edit": s.precision,
        "reconstruction": {"psnr_db": float(psnr(recon, images).mean()), "probe_fid_vs_real": probe_fid(probe, recon, real)},
        "probe_fid_inputs_vs_real": probe_fid(probe, images, real),
        "directions": per_direction, "composed": comp,
        "note": (f"{s.n_images} images: success and preservation rates move in steps of 1/{s.n_images}, and probe FID "
                 f"on so few images is dominated by its small-sample bias (compare it with probe_fid_inputs_vs_real). "
                 "`hspace toyworld check` measures the shipped directions on 100 held-out faces."),
    }
    seconds["measure"] = time.perf_counter() - t
    log(f"4/4 measured every edit with the attribute probe ({seconds['measure']:.0f} s)")
    return DemoResult(images, recon, edits, composed, metrics, directions, {k: round(v, 1) for k, v in seconds.items()})
