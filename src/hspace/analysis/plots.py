"""One matplotlib figure per section, written as PNG (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .section import Section  # noqa: E402

__all__ = ["plot_section", "PLOTTERS"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _placeholder(section: Section, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{section.title}\nnot measured: {section.reason}", ha="center", va="center", wrap=True, fontsize=10)
    return _save(fig, path)


def _homogeneity(s: Section, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = np.inf, -np.inf
    for name, v in s.data["per_direction"].items():
        x, y = np.array(v["own_change"]), np.array(v["borrowed_change"])
        ax.scatter(x, y, label=f"{name} ({v['target']})", alpha=0.8)
        if x.size:
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="same change")
    ax.set_xlabel("score change with the image's own dh")
    ax.set_ylabel("score change with image A's dh")
    ax.set_title("1. Homogeneity (one point per image B)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _linearity(s: Section, path: Path) -> Path:
    per = s.data["per_direction"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, v in per.items():
        xs = np.array([r["strength"] for r in v["rows"]])
        m = np.array([r["score_change_mean"] for r in v["rows"]])
        sd = np.array([r["score_change_std"] for r in v["rows"]])
        line = axes[0].errorbar(xs, m, yerr=sd, marker="o", capsize=3, label=f"{name} (R² {v['r2_means']:.2f})")
        axes[0].plot(xs, v["slope"] * xs + v["intercept"], "--", color=line[0].get_color(), lw=1)
        axes[1].plot(xs, [r["image_change"] for r in v["rows"]], marker="o", label=name)
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].axvline(0, color="grey", lw=0.5)
    axes[0].set_xlabel("strength s")
    axes[0].set_ylabel("target score change (mean ± std)")
    axes[0].set_title("2. Linearity: factor vs strength, linear fit")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("strength s")
    axes[1].set_ylabel("mean |x - reconstruction|")
    axes[1].set_title("image change vs strength")
    return _save(fig, path)


def _composition(s: Section, path: Path) -> Path:
    rows = s.data["pairs"]
    fig, ax = plt.subplots(figsize=(max(5, 2.5 * len(rows) + 2), 4))
    labels, alone, both, cross = [], [], [], []
    for r in rows:
        for k in ("a", "b"):
            labels.append(f"{r[k]}\n(in {r['a']}+{r['b']})")
            alone.append(r[f"{k}_change_alone"])
            both.append(r[f"{k}_change_combined"])
            cross.append(r[f"{k}_change_from_other_alone"])
    x = np.arange(len(labels))
    ax.bar(x - 0.27, alone, 0.27, label="its direction alone")
    ax.bar(x, both, 0.27, label="both directions summed")
    ax.bar(x + 0.27, cross, 0.27, label="the other direction alone")
    ax.set_xticks(x, labels, fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("target score change")
    ax.set_title("3. Composition")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _robustness(s: Section, path: Path) -> Path:
    rows = s.data["rows"]
    r = [row["size"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for space, style in (("h", "o-"), ("eps", "s-")):
        axes[0].plot(r, [row[space]["probe_fid"] for row in rows], style, label=f"noise in {space}")
        axes[1].plot(r, [row[space]["preservation"] for row in rows], style, label=f"noise in {space}")
    axes[0].axhline(s.data["probe_fid_reconstruction"], color="grey", ls="--", lw=1, label="reconstruction")
    axes[0].axhline(s.data["probe_fid_real_inputs"], color="k", ls=":", lw=1, label="real faces")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("noise norm / |h_t|")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("probe FID to real faces (lower is better)")
    axes[1].set_ylabel("share of factors unchanged")
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].set_title("4. Robustness: quality")
    axes[1].set_title("factor preservation")
    return _save(fig, path)


def _consistency(s: Section, path: Path) -> Path:
    per = s.data["per_direction"]
    n = max(len(per), 1)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * n + 4.5, 4), squeeze=False)
    for ax, (name, v) in zip(axes[0], per.items()):
        m = np.array(v["cosine_matrix"])
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ts = v["timesteps"]
        step = max(1, len(ts) // 6)
        ax.set_xticks(range(0, len(ts), step), [ts[i] for i in range(0, len(ts), step)], fontsize=7)
        ax.set_yticks(range(0, len(ts), step), [ts[i] for i in range(0, len(ts), step)], fontsize=7)
        ax.set_title(f"{name}: cos(dh_t, dh_s)", fontsize=9)
        ax.set_xlabel("t")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[0][-1]
    names = [k for k, v in per.items() if "own_change_mean" in v]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [per[k]["own_change_mean"] for k in names], 0.4, label="f_t (per step)")
    ax.bar(x + 0.2, [per[k]["global_change_mean"] for k in names], 0.4, label="one global dh")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("target score change")
    ax.set_title("5. editing with f_t vs global dh", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _asymmetry(s: Section, path: Path) -> Path:
    per = s.data["per_direction"]
    modes = ("asymmetric", "symmetric", "eps")
    names = list(per)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, mode in enumerate(modes):
        off = (k - 1) * 0.27
        axes[0].bar(x + off, [per[n][mode]["image_change"] for n in names], 0.27, label=mode)
        axes[1].bar(x + off, [per[n][mode]["score_change_mean"] for n in names], 0.27, label=mode)
    for ax, ylabel in zip(axes, ("mean |x - reconstruction|", "target score change")):
        ax.set_xticks(x, names)
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    axes[0].set_title("6. How much each step edits: image change")
    axes[1].set_title("attribute change")
    return _save(fig, path)


def _interval(s: Section, path: Path) -> Path:
    d = s.data
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rows, key, auto, label in ((axes[0], d["t_edit_sweep"], "t_edit", d["automatic"]["t_edit"], "t_edit (edit where t >= t_edit)"),
                                       (axes[1], d["t_boost_sweep"], "t_boost", d["automatic"]["t_boost"], f"t_boost (t_edit = {d['automatic']['t_edit']})")):
        t = [r[key] for r in rows]
        ax.plot(t, [r["success"] for r in rows], "o-", color="tab:blue", label="edit success")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.set_ylabel("edit success", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(t, [r["probe_fid"] for r in rows], "s--", color="tab:red", label="probe FID")
        ax2.set_ylabel("probe FID (lower is better)", color="tab:red")
        ax.axvline(auto, color="k", ls=":", lw=1.5)
        ax.annotate("automatic", (auto, 0.98), xytext=(3, 0), textcoords="offset points", fontsize=8, va="top")
    if d["direction_t_edit"]["value"] is not None:
        axes[0].axvline(d["direction_t_edit"]["value"], color="grey", ls="--", lw=1)
    axes[0].set_title(f"7. Editing interval ({d['direction']})")
    axes[1].set_title("quality boosting")
    return _save(fig, path)


PLOTTERS: dict[str, Callable[[Section, Path], Path]] = {
    "homogeneity": _homogeneity, "linearity": _linearity, "composition": _composition, "robustness": _robustness,
    "consistency": _consistency, "asymmetry": _asymmetry, "interval": _interval,
}


def plot_section(section: Section, folder: Path) -> Path:
    """Write ``section``'s figure into ``folder`` as ``section.plot_file``; a labelled placeholder when skipped."""
    path = Path(folder) / section.plot_file
    if section.status != "measured":
        return _placeholder(section, path)
    return PLOTTERS[section.key](section, path)
