"""Section 4, robustness: the same amount of random noise hurts far less in h than in eps.

During the editing interval of the first direction (t >= its t_edit), Gaussian noise is added
either to h (the estimate P_t uses is then dec(h + z)) or to that estimate itself (e + z'),
asymmetrically in both cases. Both get the **same L2 norm per image and step**: r times the
mean |h_t| of the unedited trajectory, for each size r in ``config.noise_sizes``. Quality is the
probe FID to real faces; preservation is the share of discrete factors left as they were.
"""

from __future__ import annotations

import torch

from ..sampler import Phases
from .context import AnalysisContext
from .factors import mean_std, preservation, probe_fd
from .section import Section

__all__ = ["robustness", "scaled_noise"]


def scaled_noise(shape: torch.Size | tuple[int, ...], norm: float, seed: int) -> torch.Tensor:
    """Gaussian noise ``shape`` (batch first), each item rescaled to L2 norm ``norm`` (seeded)."""
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return z * (norm / z.flatten(1).norm(dim=1).clamp_min(1e-12)).reshape(-1, *([1] * (len(shape) - 1)))


def robustness(ctx: AnalysisContext) -> Section:
    """Run section 4 (see the module docstring)."""
    d0 = ctx.directions[0]
    t_edit = d0.t_edit
    zero = ctx.edit([(d0, 0.0)], record=True)  # exactly the unedited trajectory, with |h_t| recorded
    h_norm = {t: float(v.mean()) for t, v in zero.record.h_norm.items()}
    base_seed = 1_000 * (ctx.config.seed + 1)
    fid_real = probe_fd(ctx.input_features, ctx.reference_features)
    fid_recon = probe_fd(ctx.recon_run.features, ctx.reference_features)
    rows = []
    for k, r in enumerate(ctx.config.noise_sizes):
        row = {"size": r}
        for space in ("h", "eps"):
            def norm_at(t, r=r):
                return r * h_norm[int(t[0].item())]

            if space == "h":
                def h_shift(h, t, temb, i, k=k, norm_at=norm_at):
                    return scaled_noise(h.shape, norm_at(t), base_seed + 100 * k + i).to(h)
                run = ctx.run(("noise", space, r), f"noise in h, r={r:g}", phases=Phases(t_edit=t_edit), h_shift=h_shift,
                              record=True)
            else:
                def eps_shift(eps, t, i, k=k, norm_at=norm_at):
                    return scaled_noise(eps.shape, norm_at(t), base_seed + 100 * k + i + 50).to(eps)
                run = ctx.run(("noise", space, r), f"noise in eps, r={r:g}", phases=Phases(t_edit=t_edit),
                              eps_shift=eps_shift, record=True)
            pres = preservation(ctx.recon_reading, run.reading)
            row[space] = {
                "probe_fid": probe_fd(run.features, ctx.reference_features),
                "preservation": mean_std(pres)[0],
                "smile_abs_change": float((run.reading.decoded["smile"] - ctx.recon_reading.decoded["smile"]).abs().mean()),
                "image_change": float(ctx.change(run).mean()),
                "noise_norm_mean": float(sum(r * v for v in h_norm.values()) / max(len(h_norm), 1)),
                "eps_change_norm_mean": float(torch.stack([v.flatten(1).norm(dim=1).mean() for v in run.record.d_eps.values()]).mean())
                if run.record.d_eps else 0.0,
            }
        rows.append(row)
    last = rows[-1]
    summary = (f"at noise norm {last['size']:g} x |h| (largest size): probe FID {last['h']['probe_fid']:.2f} with the noise "
               f"in h vs {last['eps']['probe_fid']:.2f} in eps (reconstruction {fid_recon:.2f}, real faces {fid_real:.2f}); "
               f"factors preserved {last['h']['preservation']:.0%} vs {last['eps']['preservation']:.0%}")
    return Section(
        key="robustness",
        claim="Random noise in h keeps image quality and content; the same amount of noise in eps destroys them.",
        summary=summary,
        data={"t_edit": t_edit, "t_edit_of": d0.name, "sizes_are": "noise L2 norm / mean |h_t| of the unedited trajectory",
              "h_norm_per_t": h_norm, "probe_fid_reconstruction": fid_recon, "probe_fid_real_inputs": fid_real,
              "n_reference": int(len(ctx.reference_features)), "rows": rows},
        notes=[f"probe FID from {ctx.config.n_images} images against {len(ctx.reference_features)} real faces: "
               "compare values within this run, not with other runs of other sizes"],
    )
