"""Speed, FLOPs and memory of hspace's edit and training loops against the reference way.

    python benchmarks/bench_edit.py [--quick] [--out results.json] [--skip-malloc]

"Ours" is the library itself (``hspace.sampler.invert`` / ``generate``, ``hspace.trainer.Trainer``).
"Reference way" is written here, with the same backbone encode/decode and step functions,
doing the work the official Asyrp code does:

* edit: both decoders at *every* generation step (also below t_edit, where they agree);
* training: the unedited trajectory's P_src recomputed by an extra full forward at every
  step, the source image's CLIP embedding recomputed at every step, e computed with grad
  mode on (backbone frozen, as in the official code).

So the only difference is the work done. Equal output is checked (max abs diff of the
edited images, the training losses). The model is a small randomly initialised diffusers
``UNet2DModel`` (64x64); the glibc malloc experiment uses a bigger one (256x256).
Peak memory is measured in a fresh subprocess per configuration (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.directions import ImplicitDirection
from hspace.encoders import build_tiny_clip
from hspace.objectives import make_clip_objective
from hspace.perf import malloc_env, tune_malloc
from hspace.sampler import Phases, asymmetric_step, direction_term, generate, invert, predict_x0
from hspace.schedule import abar_at, ddim_grid, generation_pairs
from hspace.trainer import TrainConfig, Trainer

T_EDIT = 500
SEED = 0


# ---------------------------------------------------------------------------------------
# models and data
# ---------------------------------------------------------------------------------------
def small_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(SEED)
    return UNet2DModel(
        sample_size=64, block_out_channels=(64, 128, 256, 256), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


def big_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(SEED)
    return UNet2DModel(
        sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=1,
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    )


def setup(batch: int):
    bb = DiffusersUNetBackbone(small_unet(), backbone_id="bench-small-64")
    torch.manual_seed(SEED + 1)
    direction = ImplicitDirection.for_backbone(bb, "ddpm").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(SEED + 2)
    # smooth random "images" in [-1, 1]
    x0 = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1, size=64, mode="bilinear")
    return bb, direction, x0


def objective():
    return make_clip_objective(build_tiny_clip(seed=SEED), "face", "smiling face")


# ---------------------------------------------------------------------------------------
# the reference way (official-code structure), on our backbone and step functions
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def ref_generate(bb, x_T, n_steps, delta, t_edit):
    """Both decoders at every step (separately, as the official U-Net does); edit only where t >= t_edit."""
    ac, x = bb.alphas_cumprod, x_T.float()
    for t, t_next in generation_pairs(ddim_grid(n_steps, ac.shape[0] - 1)):
        tt = torch.full((x.shape[0],), float(t))
        enc = bb.encode(x, tt)
        eps = bb.decode(enc)
        h2 = enc.h + delta(enc.h, tt, enc.temb) if t >= t_edit else enc.h
        eps_edit = bb.decode(enc, h2)
        x = asymmetric_step(x, eps, eps_edit, abar_at(ac, t), abar_at(ac, t_next)).x_next
    return x


def ref_train(bb, obj, direction, pairs, latents, sources, lr):
    """Official-style training loop: P_src and the source CLIP embedding recomputed at every step."""
    ac = bb.alphas_cumprod
    opt = torch.optim.SGD([p for p in direction.parameters() if p.requires_grad], lr=lr, momentum=0.0)
    direction.train()
    x = latents.float()
    x_src = latents.float()
    losses, times = [], []
    for t, t_next in pairs:
        t0 = time.perf_counter()
        a, a_next = abar_at(ac, t), abar_at(ac, t_next)
        tt = torch.full((x.shape[0],), float(t))
        state = obj.prepare(sources)  # source image's CLIP embedding, every step
        with torch.no_grad():  # unedited trajectory, every step (one extra full forward)
            eps_s = bb.eps(x_src, tt).float()
            p_src = predict_x0(x_src, eps_s, a)
            x_src = a_next.sqrt() * p_src + direction_term(eps_s, a_next)
        enc = bb.encode(x, tt)  # grad mode on (the backbone is frozen)
        eps = bb.decode(enc).float()
        dh = direction(enc.h, tt, enc.temb)
        eps_edit = bb.decode(enc, enc.h + dh).float()
        p_edit = predict_x0(x, eps_edit, a)
        out = obj(p_edit, p_src, state)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
        x = a_next.sqrt() * p_edit.detach() + direction_term(eps.detach(), a_next)
        times.append(time.perf_counter() - t0)
    return losses, times


# ---------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------
def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def med(xs):
    return float(statistics.median(xs)) if xs else float("nan")


EDIT_VARIANTS = ("ours", "ours_joint", "ours_bf16", "ref")


def edit_gen(variant, bb, x_T, n, delta):
    if variant == "ref":
        return ref_generate(bb, x_T, n, delta, T_EDIT)
    return generate(bb, x_T, n, delta=delta, phases=Phases(t_edit=T_EDIT, t_boost=0),
                    joint_decode=variant == "ours_joint", precision="bf16" if variant == "ours_bf16" else "fp32")


def bench_edits(batch, n, repeats, log):
    bb, delta, x0 = setup(batch)
    invert(bb, x0[:1], 2)  # warm-up
    edit_gen("ours", bb, torch.randn(1, 3, 64, 64), 4, delta)
    edit_gen("ours_bf16", bb, torch.randn(1, 3, 64, 64), 4, delta)
    inv_t, gen_t = [], {v: [] for v in EDIT_VARIANTS}
    outs = {}
    for r in range(repeats):
        inv, s = timed(lambda: invert(bb, x0, n))
        inv_t.append(s)
        order = EDIT_VARIANTS if r % 2 == 0 else EDIT_VARIANTS[::-1]
        for v in order:
            outs[v], s = timed(lambda: edit_gen(v, bb, inv.latents, n, delta))
            gen_t[v].append(s)
        log(f"  edit B={batch} repeat {r}: inversion {inv_t[-1]:.2f}s, generation "
            + ", ".join(f"{v} {gen_t[v][-1]:.2f}s" for v in EDIT_VARIANTS))
    res = {"batch": batch, "n_inv": n, "n_gen": n, "t_edit": T_EDIT, "repeats": repeats,
           "inversion_s": med(inv_t), "inversion_all_s": inv_t}
    for v in EDIT_VARIANTS:
        res[v] = {"generation_s": med(gen_t[v]), "generation_all_s": gen_t[v], "edit_s": med(inv_t) + med(gen_t[v]),
                  "edit_min_s": min(inv_t) + min(gen_t[v]), "generation_min_s": min(gen_t[v])}
    res["max_abs_diff_ours_vs_ref"] = float((outs["ours"] - outs["ref"]).abs().max())
    res["max_abs_diff_ours_joint_vs_ref"] = float((outs["ours_joint"] - outs["ref"]).abs().max())
    res["max_abs_diff_bf16_vs_fp32"] = float((outs["ours_bf16"] - outs["ours"]).abs().max())
    res["latents"] = inv.latents  # reused by the training benchmark (dropped before JSON)
    res["sources"] = x0
    return res


def bench_train(batch, latents, sources, t_edit, repeats, log):
    bb, _, _ = setup(1)
    obj = objective()
    cfg = TrainConfig(t_edit=t_edit, n_train_steps=40, batch_size=batch, progress=False, seed=SEED)
    ours_step, ref_step, prep_t, ref_steps_all = [], [], [], []
    res = {"batch": batch, "t_edit": t_edit}
    for r in range(repeats):
        # ours: the library's Trainer, P_src and source embeddings cached
        tr = Trainer(bb, obj, cfg)
        init = copy.deepcopy(tr.direction)
        data, s = timed(lambda: tr.data_from_latents(latents, sources))
        prep_t.append(s)
        out, s = timed(lambda: tr.train(data))
        ours_step.append(s / out.steps)
        steps = out.steps
        # reference way, from the same initial direction
        losses, times = ref_train(bb, obj, init, tr.pairs, latents, sources, cfg.lr)
        ref_step.append(sum(times) / len(times))
        ref_steps_all.append(times)
        log(f"  train B={batch} repeat {r}: {steps} steps, ours {ours_step[-1]:.3f}s/step "
            f"(+ cache {prep_t[-1]:.2f}s once), ref {ref_step[-1]:.3f}s/step")
        res["loss_first_ours"], res["loss_first_ref"] = out.losses[0], losses[0]
        res["loss_first_abs_diff"] = abs(out.losses[0] - losses[0])
        res["loss_max_abs_diff_all_steps"] = max(abs(a - b) for a, b in zip(out.losses, losses))
    res.update(steps=steps, repeats=repeats, ours_step_s=med(ours_step), ref_step_s=med(ref_step),
               ref_step_min_s=min(min(x) for x in ref_steps_all), ref_step_median_of_steps_s=med([y for x in ref_steps_all for y in x]),
               ours_cache_prep_s=med(prep_t), ours_all=ours_step, ref_all=ref_step)
    # one epoch over these images: ours pays the cache once (one no-grad forward per step)
    res["ours_step_s_incl_cache_1epoch"] = res["ours_step_s"] + res["ours_cache_prep_s"] / steps
    return res


# ---------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------
def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def bench_flops(n):
    bb, delta, x0 = setup(1)
    x = torch.randn(1, 3, 64, 64)
    tt = torch.full((1,), 500.0)
    with torch.no_grad():
        enc = bb.encode(x, tt)
        E = count_flops(lambda: bb.encode(x, tt))
        D = count_flops(lambda: bb.decode(enc))
        Fd = count_flops(lambda: delta(enc.h, tt, enc.temb))
    seq = ddim_grid(n, 999)
    n_edit = sum(1 for t, _ in generation_pairs(seq) if t >= T_EDIT)
    n_other = len(generation_pairs(seq)) - n_edit
    F = E + D
    floor = n * F + n_edit * (E + 2 * D + Fd) + n_other * F
    ref_model = n * F + n_edit * (E + 2 * D + Fd) + n_other * (E + 2 * D)
    with torch.no_grad():
        inv = invert(bb, x0, n)
        ours = count_flops(lambda: (invert(bb, x0, n), edit_gen("ours", bb, inv.latents, n, delta)))
        ours_joint = count_flops(lambda: (invert(bb, x0, n), edit_gen("ours_joint", bb, inv.latents, n, delta)))
        ref = count_flops(lambda: (invert(bb, x0, n), edit_gen("ref", bb, inv.latents, n, delta)))
    params = sum(p.numel() for p in bb.unet.parameters())
    return {"params": params, "encode_gflop": E / 1e9, "decode_gflop": D / 1e9, "f_t_gflop": Fd / 1e9,
            "forward_gflop": F / 1e9, "decoder_share": D / F, "n_edit_steps": n_edit, "n_other_steps": n_other,
            "floor_gflop": floor / 1e9, "ref_model_gflop": ref_model / 1e9,
            "ours_gflop": ours / 1e9, "ours_joint_gflop": ours_joint / 1e9, "ref_gflop": ref / 1e9,
            "ours_over_floor": ours / floor, "ref_over_floor": ref / floor}


# ---------------------------------------------------------------------------------------
# peak memory, one fresh subprocess per configuration
# ---------------------------------------------------------------------------------------
def _vm_hwm_kib() -> int:
    """Peak RSS of this process since the last reset (VmHWM, KiB)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _reset_hwm() -> None:
    # ru_maxrss survives fork + exec (a child reports its parent's peak), so reset and read
    # the kernel's high-water mark instead (Linux: writing 5 to clear_refs resets VmHWM).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child_mem(what, batch, n):
    bb, delta, x0 = setup(batch)
    with torch.no_grad():
        lat = invert(bb, x0, n).latents
    obj = objective() if what.startswith("train") else None
    _reset_hwm()
    base = _vm_hwm_kib()
    if what.startswith("edit_"):
        v = what[len("edit_"):]
        invert(bb, x0, n)
        edit_gen(v, bb, lat, n, delta)
    elif what == "train_ours":
        tr = Trainer(bb, obj, TrainConfig(t_edit=T_EDIT, n_train_steps=n, batch_size=batch, progress=False))
        tr.train(tr.data_from_latents(lat, x0))
    elif what == "train_ref":
        tr = Trainer(bb, obj, TrainConfig(t_edit=T_EDIT, n_train_steps=n, batch_size=batch, progress=False))
        ref_train(bb, obj, tr.direction, tr.pairs, lat, x0, 0.5)
    peak = _vm_hwm_kib()
    print(json.dumps({"what": what, "batch": batch, "base_mib": base / 1024, "peak_mib": peak / 1024,
                      "delta_mib": (peak - base) / 1024}))


def run_child(args, env=None):
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# glibc malloc effect on a bigger model
# ---------------------------------------------------------------------------------------
def child_malloc(reps, in_process):
    if in_process:
        tune_malloc()
    u = big_unet().eval()
    x, t = torch.randn(1, 3, 256, 256), torch.tensor([500.0])
    times = []
    with torch.no_grad():
        u(x, t)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(reps):
            _, s = timed(lambda: u(x, t))
            times.append(s)
        f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"params": sum(p.numel() for p in u.parameters()), "forward_s": med(times), "all_s": times,
                      "minor_faults_per_forward": (f1 - f0) / reps,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_malloc(reps, rounds, log):
    env_keys = list(malloc_env())
    base_env = {k: v for k, v in os.environ.items() if k not in env_keys}
    res = {"default": [], "env": [], "mallopt": []}
    for r in range(rounds):
        for name, env, extra in (("default", None, []), ("env", malloc_env(), []), ("mallopt", None, ["--in-process"])):
            full = {**base_env, **(env or {})}
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", "malloc", "--reps", str(reps), *extra],
                               capture_output=True, text=True, env=full)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-3000:])
            res[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
            log(f"  malloc {name}: {res[name][-1]['forward_s']:.3f}s/forward, "
                f"{res[name][-1]['minor_faults_per_forward']:.0f} faults/forward, peak {res[name][-1]['peak_mib']:.0f} MiB")
    out = {k: {"forward_s": med([d["forward_s"] for d in v]),
               "minor_faults_per_forward": med([d["minor_faults_per_forward"] for d in v]),
               "peak_mib": med([d["peak_mib"] for d in v])} for k, v in res.items()}
    out["params"] = res["default"][0]["params"]
    out["speedup_env"] = out["default"]["forward_s"] / out["env"]["forward_s"]
    out["speedup_mallopt"] = out["default"]["forward_s"] / out["mallopt"]["forward_s"]
    return out


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def machine():
    load = os.getloadavg()
    return {"date": _dt.datetime.now().isoformat(timespec="minutes"), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": load,
            "malloc_env_set": {k: os.environ.get(k) for k in malloc_env()}}


def markdown(R):
    L = []
    m = R["machine"]
    L.append(f"Measured {m['date']}, {m['cpu_count']}-core CPU, torch {m['torch']}, {m['torch_threads']} threads, "
             f"load average at start {m['loadavg_start'][0]:.2f} / end {R['loadavg_end'][0]:.2f}"
             f"{' (quick mode)' if R['quick'] else ''}.")
    fl = R["flops"]
    L.append(f"\nModel: UNet2DModel 64x64, blocks (64,128,256,256), 1 layer/block, attention at 16x16 and 8x8; "
             f"{fl['params'] / 1e6:.1f} M params, {fl['forward_gflop']:.2f} GFLOP/forward at batch 1 "
             f"(encode {fl['encode_gflop']:.2f}, decode {fl['decode_gflop']:.2f} = {100 * fl['decoder_share']:.0f} %; "
             f"f_t {fl['f_t_gflop']:.3f}); h = [256, 8, 8]. Direction: random-init implicit f_t (DDPM style).\n")
    L.append("### Seconds per edit (inversion + generation, median)\n")
    L.append("| batch | steps inv+gen | inversion s | ours (default: separate decodes) | ours (joint_decode=True) | ours bf16+CL edit part | reference way | speed-up ours vs ref | speed-up generation only | bf16 vs ref |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for e in R["edit"]:
        o, s, b, r = e["ours"], e["ours_joint"], e["ours_bf16"], e["ref"]
        L.append(f"| {e['batch']} | {e['n_inv']}+{e['n_gen']} | {e['inversion_s']:.2f} | {o['edit_s']:.2f} | {s['edit_s']:.2f} | "
                 f"{b['edit_s']:.2f} | {r['edit_s']:.2f} | {r['edit_s'] / o['edit_s']:.2f}x | "
                 f"{r['generation_s'] / o['generation_s']:.2f}x | {r['edit_s'] / b['edit_s']:.2f}x |")
    L.append("\nMin over repeats (less sensitive to other load), edit s: " + "; ".join(
        f"B={e['batch']}: ours {e['ours']['edit_min_s']:.2f}, ours_joint {e['ours_joint']['edit_min_s']:.2f}, "
        f"bf16 {e['ours_bf16']['edit_min_s']:.2f}, ref {e['ref']['edit_min_s']:.2f} "
        f"({e['ref']['edit_min_s'] / e['ours']['edit_min_s']:.2f}x)" for e in R["edit"]))
    L.append("\nEqual output (fp32, max |ours - ref|): " + "; ".join(
        f"B={e['batch']}: default {e['max_abs_diff_ours_vs_ref']:.2e}, joint {e['max_abs_diff_ours_joint_vs_ref']:.2e}, "
        f"bf16 vs fp32 {e['max_abs_diff_bf16_vs_fp32']:.2e}" for e in R["edit"]))
    L.append("\n### Seconds per training step (tiny CLIP, directional + L1, median)\n")
    L.append("| batch | steps | ours s/step | ours incl. one-time P_src cache (1 epoch) | reference way s/step | speed-up | speed-up incl. cache | first loss ours / ref | max loss diff (all steps) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for t in R["train"]:
        L.append(f"| {t['batch']} | {t['steps']} | {t['ours_step_s']:.3f} | {t['ours_step_s_incl_cache_1epoch']:.3f} | "
                 f"{t['ref_step_s']:.3f} | {t['ref_step_s'] / t['ours_step_s']:.2f}x | "
                 f"{t['ref_step_s'] / t['ours_step_s_incl_cache_1epoch']:.2f}x | {t['loss_first_ours']:.6f} / "
                 f"{t['loss_first_ref']:.6f} | {t['loss_max_abs_diff_all_steps']:.1e} |")
    L.append("\n### U-Net FLOPs per edit (batch 1, FlopCounterMode)\n")
    L.append("| | GFLOP | x floor |")
    L.append("|---|---|---|")
    L.append(f"| floor: {R['n']} inv x F + {fl['n_edit_steps']} edit x (E + 2D + f_t) + {fl['n_other_steps']} other x F | {fl['floor_gflop']:.1f} | 1.00 |")
    L.append(f"| ours (default) | {fl['ours_gflop']:.1f} | {fl['ours_over_floor']:.3f} |")
    L.append(f"| ours (joint_decode=True) | {fl['ours_joint_gflop']:.1f} | {fl['ours_joint_gflop'] / fl['floor_gflop']:.3f} |")
    L.append(f"| reference way | {fl['ref_gflop']:.1f} | {fl['ref_over_floor']:.3f} |")
    L.append("\n### Peak memory (ru_maxrss, fresh subprocess each)\n")
    L.append("| configuration | batch | RSS before MiB | peak MiB | peak - before MiB |")
    L.append("|---|---|---|---|---|")
    for d in R["memory"]:
        L.append(f"| {d['what']} | {d['batch']} | {d['base_mib']:.0f} | {d['peak_mib']:.0f} | {d['delta_mib']:.0f} |")
    if R.get("malloc"):
        mm = R["malloc"]
        L.append(f"\n### glibc malloc, bigger model (256x256, blocks 128,128,256,256,512,512, {mm['params'] / 1e6:.1f} M params, batch 1, fp32 forward)\n")
        L.append("| malloc setting | s/forward | minor page faults/forward | peak RSS MiB |")
        L.append("|---|---|---|---|")
        for k, label in (("default", "glibc default"), ("env", "MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_=2147483647 (env)"),
                         ("mallopt", "hspace.perf.tune_malloc() (mallopt in-process)")):
            L.append(f"| {label} | {mm[k]['forward_s']:.3f} | {mm[k]['minor_faults_per_forward']:.0f} | {mm[k]['peak_mib']:.0f} |")
    L.append("\n### Targets\n")
    for line in R["targets"]:
        L.append(f"- {line}")
    return "\n".join(L)


def targets(R):
    out = []
    for e in R["edit"]:
        sp = e["ref"]["edit_s"] / e["ours"]["edit_s"]
        out.append(f"edit B={e['batch']}: ours {sp:.2f}x faster than ref (target >= 1.25x: {'MET' if sp >= 1.25 else 'NOT MET'}); "
                   f"equal output max diff {e['max_abs_diff_ours_vs_ref']:.1e} ({'OK' if e['max_abs_diff_ours_vs_ref'] < 1e-4 else 'NOT OK'})")
    for t in R["train"]:
        sp = t["ref_step_s"] / t["ours_step_s"]
        out.append(f"train B={t['batch']}: ours {sp:.2f}x faster per step (target >= 1.6x: {'MET' if sp >= 1.6 else 'NOT MET'}); "
                   f"first loss diff {t['loss_first_abs_diff']:.1e}")
    mem = {(d["what"], d["batch"]): d["peak_mib"] for d in R["memory"]}
    for (what, b), peak in sorted(mem.items()):
        if what in ("edit_ours", "train_ours"):
            ref = mem.get((what.replace("ours", "ref"), b))
            if ref is not None:
                out.append(f"peak memory {what} B={b}: {peak:.0f} MiB vs ref {ref:.0f} MiB "
                           f"({'no more' if peak <= ref * 1.02 else 'MORE'} than ref, 2 % tolerance)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (about 2 minutes)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--skip-malloc", action="store_true", help="skip the glibc malloc experiment on the big model")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child == "mem":
        return child_mem(a.what, a.batch, a.steps)
    if a._child == "malloc":
        return child_malloc(a.reps, a.in_process)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_all = time.perf_counter()
    R = {"quick": a.quick, "machine": machine()}
    n = 20 if a.quick else 40
    R["n"] = n
    log(f"load average {R['machine']['loadavg_start']}")
    log("edits ...")
    R["edit"] = [bench_edits(1, n, 1 if a.quick else 3, log), bench_edits(8, n, 1 if a.quick else 2, log)]
    log("training ...")
    t_edit_train = 800 if a.quick else 750
    R["train"] = []
    for e in R["edit"]:
        R["train"].append(bench_train(e["batch"], e["latents"], e["sources"], t_edit_train, 1 if a.quick else 2, log))
    for e in R["edit"]:
        e.pop("latents"), e.pop("sources")
    log("flops ...")
    R["flops"] = bench_flops(n)
    log("memory (subprocesses) ...")
    R["memory"] = []
    mem_batches = (8,)
    for b in mem_batches:
        for what in ("edit_ours", "edit_ours_joint", "edit_ours_bf16", "edit_ref", "train_ours", "train_ref"):
            if a.quick and what in ("edit_ours_joint", "edit_ours_bf16"):
                continue
            R["memory"].append(run_child(["--_child", "mem", "--what", what, "--batch", str(b), "--steps", "10"]))
            log(f"  {R['memory'][-1]}")
    if not a.skip_malloc:
        log("glibc malloc (subprocesses, big model) ...")
        R["malloc"] = bench_malloc(2 if a.quick else 3, 1 if a.quick else 2, log)
    R["loadavg_end"] = os.getloadavg()
    R["seconds_total"] = time.perf_counter() - t_all
    R["targets"] = targets(R)
    md = markdown(R)
    print(md)
    print(f"\n(total benchmark time {R['seconds_total']:.0f} s)")
    if a.out:
        Path(a.out).write_text(json.dumps(R, indent=2, default=float))


if __name__ == "__main__":
    main()
