"""Seconds and peak memory of one edit and one training step on the real-size 256x256 models.

    python benchmarks/bench_real_size.py [--quick] [--models ddpm,adm] [--out real_size.json]
                                         [--threads N] [--tuned-malloc]

Models (random weights, the real architectures; no weights are downloaded):

* ``ddpm``: the original DDPM 'simple' U-Net of CelebA-HQ 256 (``DDPM_CELEBAHQ_256``, the
  architecture of ``google/ddpm-ema-celebahq-256`` / ``ddpm:celebahq-256``), 113.7 M params;
* ``adm``: the P2-weighting ADM U-Net (``adm:p2-celebahq-256``), 93.6 M params.

Configurations, each in a fresh subprocess (so ``ru_maxrss`` is that configuration's peak):

* ``edit_fp32``: DDIM inversion (float32) + generation with an implicit f_t direction
  (t_edit 500, t_boost 0), everything float32;
* ``edit_bf16``: the same, generation under bf16 autocast with channels_last *inputs* only
  (conv weights left contiguous: the library before ``prepare_backbone_for``);
* ``edit_bf16_cl``: the same, with the weights converted to channels_last once
  (``hspace.precision.prepare_backbone_for``, what ``Editor`` does now for bf16). Inversion
  stays float32 and runs on the channels_last weights; its latents are compared with
  ``edit_fp32``'s (same seeded weights and image);
* ``train_fp32`` / ``train_bf16`` / ``train_bf16_cl``: ``hspace.trainer.Trainer`` steps
  (e with no grad, e~ with grad through the decoder and f_t, CLIP directional + L1 loss with
  the built-in tiny CLIP, SGD step). The tiny CLIP (32 px input, 2 layers) costs a few ms; a
  real ViT-B/16 would add roughly a forward + backward at 224 px per step (not included).

Timing: after a short warm-up (one float32 forward, and for bf16 one bf16 forward, so that
oneDNN's one-time kernel creation is not counted; its cost is reported as ``warmup_s``).
Per-step times come from the sampler's callback. ``--quick`` runs 4+4 steps (training: 1
step) and **extrapolates** to 40+40 from the mean seconds per inversion step, per editing
step and per plain step (labelled "extrapolated" in the table).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

T_EDIT = 500
SEED = 0
MODELS = ("ddpm", "adm")
EDIT_CONFIGS = ("edit_fp32", "edit_bf16", "edit_bf16_cl")
TRAIN_CONFIGS = ("train_fp32", "train_bf16", "train_bf16_cl")
N_FULL = 40
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
def build(model: str):
    torch.manual_seed(SEED)
    if model == "ddpm":
        from hspace.backbones.ddpm_simple import DDPM_CELEBAHQ_256, DDPM_SCHEDULE_CONFIG, build_ddpm_simple_unet
        from hspace.backbones.diffusers_unet import DiffusersUNetBackbone

        unet = build_ddpm_simple_unet(DDPM_CELEBAHQ_256)
        bb = DiffusersUNetBackbone(unet, backbone_id="ddpm:celebahq-256 (random weights)", schedule_config=DDPM_SCHEDULE_CONFIG)
        kind = "ddpm"
    elif model == "adm":
        from hspace.backbones.adm import ADMBackbone, build_adm_unet
        from hspace.backbones.checkpoints import LINEAR_SCHEDULE, P2_256

        bb = ADMBackbone(build_adm_unet(P2_256), backbone_id="adm:p2-celebahq-256 (random weights)", schedule_config=LINEAR_SCHEDULE)
        kind = "adm"
    else:
        raise ValueError(model)
    return bb, kind


def image(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + 2)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1, size=size, mode="bilinear")


def n_params(bb) -> int:
    return sum(p.numel() for p in bb.parameters())


def weights_channels_last(bb) -> bool:
    w4 = [p for p in bb.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    return bool(w4) and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)


# ---------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------
class StepClock:
    """Callback that records seconds per sampler step and its phase."""

    def __init__(self):
        self.reset()
        self.steps: list[tuple[str, float, float]] = []

    def reset(self):
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def __call__(self, info):
        now, cpu = time.perf_counter(), time.process_time()
        self.steps.append((info.phase, now - self.last, cpu - self.last_cpu))
        self.last, self.last_cpu = now, cpu

    def by_phase(self, cpu: bool = False) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for ph, s, c in self.steps:
            out.setdefault(ph, []).append(c if cpu else s)
        return out


def _mean(xs) -> float:
    xs = list(xs)
    return statistics.mean(xs) if xs else float("nan")


def child_edit(model: str, config: str, n: int, dump: str | None) -> dict:
    from hspace.directions import ImplicitDirection
    from hspace.precision import prepare_backbone_for
    from hspace.sampler import Phases, generate, invert

    t_start = time.perf_counter()
    bb, kind = build(model)
    torch.manual_seed(SEED + 1)
    direction = ImplicitDirection.for_backbone(bb, kind).eval().requires_grad_(False)
    x0 = image(bb.image_size)
    precision = "fp32" if config == "edit_fp32" else "bf16"
    if config == "edit_bf16_cl":
        prepare_backbone_for("bf16", bb)  # what Editor(config.precision="bf16") does
    build_s = time.perf_counter() - t_start
    rss_model = rss_mib()
    # warm-up: one float32 forward (+ one bf16 forward) at the real size
    t0 = time.perf_counter()
    tt = torch.full((1,), 500.0)
    with torch.no_grad():
        bb.eps(x0, tt)  # float32 inversion kernels
    # one editing step (joint decode at batch 2, f_t) and one plain step at the generation precision
    generate(bb, torch.randn(1, 3, bb.image_size, bb.image_size), 2, delta=direction, phases=Phases(t_edit=T_EDIT),
             precision=precision)
    warmup_s = time.perf_counter() - t0

    inv_clock = StepClock()
    t0, c0 = time.perf_counter(), time.process_time()
    inv_clock.reset()
    lat = invert(bb, x0, n, callback=inv_clock).latents
    inversion_s, inversion_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    gen_clock = StepClock()
    t0, c0 = time.perf_counter(), time.process_time()
    gen_clock.reset()
    out = generate(bb, lat, n, delta=direction, phases=Phases(t_edit=T_EDIT, t_boost=0), precision=precision,
                   generator=torch.Generator().manual_seed(SEED), callback=gen_clock)
    generation_s, generation_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    phases, phases_cpu = gen_clock.by_phase(), gen_clock.by_phase(cpu=True)
    res = {
        "model": model, "config": config, "n_inv": n, "n_gen": n, "precision_generation": precision,
        "weights_channels_last": weights_channels_last(bb), "params": n_params(bb),
        "build_s": build_s, "warmup_s": warmup_s, "inversion_s": inversion_s, "generation_s": generation_s,
        "edit_s": inversion_s + generation_s,
        "inversion_cpu_s": inversion_cpu_s, "generation_cpu_s": generation_cpu_s,
        "inv_step_s": _mean(s for _, s, _ in inv_clock.steps),
        "edit_step_s": _mean(phases.get("editing", [])),
        "plain_step_s": _mean(phases.get("denoising", [])),
        "inv_step_cpu_s": _mean(c for _, _, c in inv_clock.steps),
        "edit_step_cpu_s": _mean(phases_cpu.get("editing", [])),
        "plain_step_cpu_s": _mean(phases_cpu.get("denoising", [])),
        "n_edit_steps": len(phases.get("editing", [])), "n_plain_steps": len(phases.get("denoising", [])),
        "rss_after_build_mib": rss_model, "peak_rss_mib": rss_mib(),
        "out_finite": bool(torch.isfinite(out).all()),
    }
    if dump:
        torch.save({"latents": lat, "out": out}, dump)
    return res


def child_train(model: str, config: str, n_steps: int) -> dict:
    from hspace.encoders import build_tiny_clip
    from hspace.objectives import make_clip_objective
    from hspace.schedule import ddim_grid
    from hspace.trainer import TrainConfig, Trainer

    t_start = time.perf_counter()
    bb, kind = build(model)
    precision = "fp32" if config == "train_fp32" else "bf16"
    obj = make_clip_objective(build_tiny_clip(seed=SEED), "face", "smiling face")
    g = torch.Generator().manual_seed(SEED + 3)
    s = bb.image_size
    latents = torch.randn(1, 3, s, s, generator=g)
    sources = image(s)
    build_s = time.perf_counter() - t_start
    rss_model = rss_mib()
    grid = ddim_grid(N_FULL, 999)

    def trainer(k: int) -> Trainer:
        cfg = TrainConfig(t_edit=grid[-k], n_train_steps=N_FULL, direction_kind=f"implicit-{kind}", precision=precision,
                          progress=False, seed=SEED, source_text="face", target_text="smiling face")
        if config == "train_bf16":  # the library before prepare_backbone_for: contiguous weights
            import hspace.trainer as tr_mod

            saved = tr_mod.prepare_backbone_for
            tr_mod.prepare_backbone_for = lambda p, b: b
            try:
                return Trainer(bb, obj, cfg)
            finally:
                tr_mod.prepare_backbone_for = saved
        return Trainer(bb, obj, cfg)

    # warm-up: one training step (kernel creation, autograd graph buffers)
    t0 = time.perf_counter()
    tr = trainer(1)
    tr.train(tr.data_from_latents(latents, sources))
    warmup_s = time.perf_counter() - t0
    tr = trainer(n_steps)
    t0 = time.perf_counter()
    data = tr.data_from_latents(latents, sources)  # P_src cache: one no-grad forward per step, once
    cache_s = time.perf_counter() - t0
    c0 = time.process_time()
    out = tr.train(data)
    train_cpu_s = time.process_time() - c0
    return {
        "model": model, "config": config, "precision": precision, "weights_channels_last": weights_channels_last(bb),
        "params": n_params(bb), "build_s": build_s, "warmup_s": warmup_s, "steps": out.steps,
        "step_s": out.seconds / out.steps, "step_cpu_s": train_cpu_s / out.steps, "cache_per_step_s": cache_s / out.steps,
        "direction": f"implicit-{kind}", "objective": "CLIP directional + L1 (tiny CLIP)",
        "first_loss": out.losses[0], "rss_after_build_mib": rss_model, "peak_rss_mib": rss_mib(),
    }


def run_child(args: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# extrapolation and report
# ---------------------------------------------------------------------------------------
def full_counts() -> tuple[int, int]:
    from hspace.schedule import ddim_grid, generation_pairs

    pairs = generation_pairs(ddim_grid(N_FULL, 999))
    n_edit = sum(1 for t, _ in pairs if t >= T_EDIT)
    return n_edit, len(pairs) - n_edit


def extrapolate(r: dict) -> dict:
    n_edit, n_plain = full_counts()
    out = {"extrapolated": r["n_inv"] != N_FULL}
    for sfx in ("_s", "_cpu_s"):
        if r["n_inv"] != N_FULL:
            inv = (N_FULL - 1) * r["inv_step" + sfx]
            gen = n_edit * r["edit_step" + sfx] + n_plain * r["plain_step" + sfx]
        else:
            inv, gen = r["inversion" + sfx], r["generation" + sfx]
        out.update({"inversion" + sfx: inv, "generation" + sfx: gen, "edit" + sfx: inv + gen})
    return out


def machine(threads: int, tuned: bool) -> dict:
    return {"date": _dt.datetime.now().isoformat(timespec="minutes"), "cpu_count": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg(), "tuned_malloc": tuned,
            "cpu_bf16_flags": cpu_bf16_flags()}


def cpu_bf16_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = sorted(f for f in flags if f in ("amx_bf16", "amx_tile", "avx512_bf16"))
    return ", ".join(found) or "none"


NAMES = {"ddpm": "DDPM CelebA-HQ 256 (diffusers UNet2DModel)", "adm": "P2 ADM 256 (guided-diffusion UNetModel)"}
LABEL = {"edit_fp32": "float32", "edit_bf16": "bf16 autocast, channels_last inputs only",
         "edit_bf16_cl": "bf16 autocast + channels_last weights", "train_fp32": "float32",
         "train_bf16": "bf16 autocast, channels_last inputs only", "train_bf16_cl": "bf16 autocast + channels_last weights"}


def markdown(R: dict) -> str:
    m = R["machine"]
    L = [f"Measured {m['date']}, {m['cpu_count']}-core CPU (bf16 CPU flags in /proc/cpuinfo: {m['cpu_bf16_flags']}), torch {m['torch']}, "
         f"{m['torch_threads']} torch thread(s), glibc malloc {'tuned (MALLOC_MMAP/TRIM_THRESHOLD_)' if m['tuned_malloc'] else 'default'}; "
         f"load average at start {m['loadavg_start'][0]:.2f}, end {R['loadavg_end'][0]:.2f}"
         f"{' -- QUICK MODE: 40+40-step times extrapolated from ' + str(R['n']) + '+' + str(R['n']) + ' steps' if R['quick'] else ''}.", ""]
    L.append("### One edit of one 256x256 image (40 inversion steps float32 + 40 generation steps, implicit f_t, t_edit 500)\n")
    L.append("Wall = elapsed seconds; CPU = this process's CPU seconds (user + sys). With 1 torch thread on a loaded "
             "machine, CPU seconds approximate the wall time the same run takes alone on one core.\n")
    L.append("| model | params | generation precision | inversion s wall / CPU | generation s wall / CPU | edit s (inv + gen) wall / CPU | s/inv step CPU | s/edit step CPU | s/plain step CPU | warm-up s | peak RSS MiB |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in R["edit"]:
        e = r["full"]
        x = " (extrap.)" if e["extrapolated"] else ""
        L.append(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {LABEL[r['config']]} | {e['inversion_s']:.1f} / {e['inversion_cpu_s']:.1f}{x} | "
                 f"{e['generation_s']:.1f} / {e['generation_cpu_s']:.1f}{x} | **{e['edit_s']:.1f} / {e['edit_cpu_s']:.1f}**{x} | "
                 f"{r['inv_step_cpu_s']:.2f} | {r['edit_step_cpu_s']:.2f} | {r['plain_step_cpu_s']:.2f} | "
                 f"{r['warmup_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    if R.get("checks"):
        L.append("")
        for model, c in R["checks"].items():
            L.append(f"- {model}: float32 inversion with channels_last weights vs contiguous weights: max |latent diff| "
                     f"{c['inv_latent_max_abs_diff_cl']:.2e}, relative L2 {c['inv_latent_rel_l2_cl']:.1e} (latent std "
                     f"{c['latent_std']:.2f}; contiguous weights in the bf16 run: {c['inv_latent_max_abs_diff_nocl']:.1e}). "
                     f"Edited image, bf16+CL vs fp32: relative L2 {c['out_rel_l2_bf16cl_vs_fp32']:.1e} (max |diff| "
                     f"{c['out_max_abs_diff_bf16cl_vs_fp32']:.3g}, mean |out| {c['out_abs_mean_fp32']:.3g}); bf16 CL inputs only vs "
                     f"bf16+CL weights: relative L2 {c['out_rel_l2_bf16_vs_bf16cl']:.1e}")
    L.append("\n### One training step (Trainer: e no-grad, e~ with grad, f_t, CLIP directional + L1 with the tiny CLIP, SGD)\n")
    L.append("| model | precision | s/step wall / CPU | + P_src cache per step, wall (once per image) | warm-up (first step) s | peak RSS MiB |")
    L.append("|---|---|---|---|---|---|")
    for r in R["train"]:
        L.append(f"| {r['model']} | {LABEL[r['config']]} | **{r['step_s']:.2f} / {r['step_cpu_s']:.2f}** | {r['cache_per_step_s']:.2f} | "
                 f"{r['warmup_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    L.append("")
    L.append("Targets: edit < 60 s with bf16 + channels_last; peak memory < 4 GB editing, < 8 GB training.")
    for t in R["targets"]:
        L.append(f"- {t}")
    return "\n".join(L)


def targets(R: dict) -> list[str]:
    out = []
    for r in R["edit"]:
        if r["config"] == "edit_bf16_cl":
            e = r["full"]
            out.append(f"{r['model']} edit bf16+CL: {e['edit_s']:.1f} s wall ({e['edit_cpu_s']:.1f} s CPU) -> "
                       f"{'met' if e['edit_s'] < 60 else 'NOT met'} (float32 inversion alone: {e['inversion_s']:.1f} s wall / "
                       f"{e['inversion_cpu_s']:.1f} s CPU; bf16 generation {e['generation_s']:.1f} s wall / {e['generation_cpu_s']:.1f} s CPU)")
        out.append(f"{r['model']} {r['config']} peak {r['peak_rss_mib'] / 1024:.2f} GiB -> "
                   f"{'met' if r['peak_rss_mib'] < 4 * 1024 else 'NOT met'} (< 4 GB)")
    for r in R["train"]:
        out.append(f"{r['model']} {r['config']} peak {r['peak_rss_mib'] / 1024:.2f} GiB -> "
                   f"{'met' if r['peak_rss_mib'] < 8 * 1024 else 'NOT met'} (< 8 GB)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4+4 steps (1 training step), extrapolated to 40+40")
    ap.add_argument("--models", default="ddpm,adm")
    ap.add_argument("--configs", default=",".join(EDIT_CONFIGS + TRAIN_CONFIGS))
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in the children (default: all cores if the 1-min load is < 0.5, else 1)")
    ap.add_argument("--tuned-malloc", action="store_true", help="start children with MALLOC_MMAP/TRIM_THRESHOLD_ raised")
    ap.add_argument("--out", default="bench_real_size.json")
    ap.add_argument("--md", default=None, help="also write the Markdown table here")
    ap.add_argument("--_child", nargs=3, metavar=("MODEL", "CONFIG", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--_dump", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a._child:
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
        model, config, n = a._child[0], a._child[1], int(a._child[2])
        res = child_edit(model, config, n, a._dump) if config.startswith("edit_") else child_train(model, config, n)
        print(json.dumps(res))
        return

    threads = a.threads or (os.cpu_count() if os.getloadavg()[0] < 0.5 else 1)
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    for k in MALLOC_ENV:
        env.pop(k, None)
    if a.tuned_malloc:
        env.update(MALLOC_ENV)
    n = 4 if a.quick else N_FULL
    train_steps = a.train_steps or (1 if a.quick else 3)
    configs = a.configs.split(",")
    R = {"quick": a.quick, "n": n, "t_edit": T_EDIT, "machine": machine(threads, a.tuned_malloc), "edit": [], "train": [],
         "checks": {}}

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        for model in a.models.split(","):
            dumps = {}
            for config in configs:
                if config.startswith("edit_"):
                    dumps[config] = os.path.join(tmp, f"{model}-{config}.pt")
                    r = run_child(["--_child", model, config, str(n), "--_dump", dumps[config]], env)
                    r["full"] = extrapolate(r)
                    r["loadavg_after"] = os.getloadavg()
                    R["edit"].append(r)
                    log(f"{model} {config}: inversion {r['inversion_s']:.1f}s, generation {r['generation_s']:.1f}s "
                        f"(40+40: {r['full']['edit_s']:.1f}s{' extrapolated' if r['full']['extrapolated'] else ''}), "
                        f"peak {r['peak_rss_mib']:.0f} MiB")
                else:
                    r = run_child(["--_child", model, config, str(train_steps)], env)
                    r["loadavg_after"] = os.getloadavg()
                    R["train"].append(r)
                    log(f"{model} {config}: {r['step_s']:.2f} s/step, peak {r['peak_rss_mib']:.0f} MiB")
            if {"edit_fp32", "edit_bf16_cl", "edit_bf16"} <= dumps.keys():
                d = {k: torch.load(v, weights_only=True) for k, v in dumps.items()}
                f32, cl, nocl = d["edit_fp32"], d["edit_bf16_cl"], d["edit_bf16"]
                def rel(a, b):
                    return float((a - b).norm() / b.norm())

                R["checks"][model] = {
                    "inv_latent_rel_l2_cl": rel(cl["latents"], f32["latents"]),
                    "out_rel_l2_bf16cl_vs_fp32": rel(cl["out"], f32["out"]),
                    "out_rel_l2_bf16_vs_bf16cl": rel(nocl["out"], cl["out"]),
                    "out_abs_mean_fp32": float(f32["out"].abs().mean()),
                    "inv_latent_max_abs_diff_cl": float((cl["latents"] - f32["latents"]).abs().max()),
                    "inv_latent_max_abs_diff_nocl": float((nocl["latents"] - f32["latents"]).abs().max()),
                    "latent_std": float(f32["latents"].std()),
                    "out_max_abs_diff_bf16cl_vs_fp32": float((cl["out"] - f32["out"]).abs().max()),
                    "out_mean_abs_diff_bf16cl_vs_fp32": float((cl["out"] - f32["out"]).abs().mean()),
                    "out_max_abs_diff_bf16_vs_bf16cl": float((cl["out"] - nocl["out"]).abs().max()),
                }
                log(f"{model} checks: {R['checks'][model]}")
    R["loadavg_end"] = os.getloadavg()
    R["targets"] = targets(R)
    md = markdown(R)
    R["markdown"] = md
    Path(a.out).write_text(json.dumps(R, indent=2))
    if a.md:
        Path(a.md).write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
