"""Mean-difference directions (two image sets -> per-step dh): exactness on a tiny U-Net, files,
the CLI, and one real edit on the built-in toy-faces world judged by its probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hspace.cli.main import app
from hspace.directions import PerStepDirection, load_direction, mean_difference_direction, save_direction
from hspace.sampler import direction_term, predict_x0
from hspace.schedule import abar_at, ddim_grid


def _latents(bb, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, bb.in_channels, bb.image_size, bb.image_size, generator=g)


@torch.no_grad()
def test_first_two_steps_are_the_difference_of_mean_h(tiny_backbone):
    bb = tiny_backbone
    a, b = _latents(bb, 3, 0), _latents(bb, 2, 1)
    d = mean_difference_direction(bb, a, b, n_steps=10, t_edit=500, batch_size=2)
    grid = ddim_grid(10, 999)  # ascending
    assert d.timesteps == [t for t in grid if t >= 500]

    def h_at(x, t):
        return bb.encode(x, torch.full((x.shape[0],), float(t))).h.float()

    t0, t1 = grid[-1], grid[-2]  # the first two steps from the top
    torch.testing.assert_close(d.step_tensor(t0), h_at(b, t0).mean(0) - h_at(a, t0).mean(0))

    def step(x):  # one plain DDIM step from t0 to t1, as the trajectory takes it
        eps = bb.eps(x, torch.full((x.shape[0],), float(t0))).float()
        return abar_at(bb.alphas_cumprod, t1).sqrt() * predict_x0(x, eps, abar_at(bb.alphas_cumprod, t0)) + \
            direction_term(eps, abar_at(bb.alphas_cumprod, t1))

    torch.testing.assert_close(d.step_tensor(t1), h_at(step(b), t1).mean(0) - h_at(step(a), t1).mean(0),
                               atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_symmetry_batching_and_a_set_against_itself(tiny_backbone):
    bb = tiny_backbone
    a, b = _latents(bb, 3, 0), _latents(bb, 4, 1)
    ab = mean_difference_direction(bb, a, b, n_steps=6, t_edit=300, batch_size=4)
    ba = mean_difference_direction(bb, b, a, n_steps=6, t_edit=300, batch_size=1)
    for t in ab.timesteps:
        torch.testing.assert_close(ab.step_tensor(t), -ba.step_tensor(t), atol=1e-5, rtol=1e-4)
        assert ab.step_tensor(t).abs().max() > 1e-3  # different sets do differ
    same = mean_difference_direction(bb, a, a.flip(0), n_steps=6, t_edit=300)
    assert all(same.step_tensor(t).abs().max() < 1e-5 for t in same.timesteps)


def test_meta_file_round_trip_and_refusals(tiny_backbone, tmp_path):
    bb = tiny_backbone
    a, b = _latents(bb, 2, 0), _latents(bb, 2, 1)
    d = mean_difference_direction(bb, a, b, n_steps=4, t_edit=500, target_text="with a hat")
    assert isinstance(d, PerStepDirection)
    assert d.meta.kind == "per-step" and d.meta.t_edit == 500 and d.meta.n_train_steps == 4
    assert d.meta.target_text == "with a hat" and d.meta.extra["mean_difference"]["to_images"] == 2
    back = load_direction(save_direction(d, tmp_path / "d.safetensors"), bb)
    for t in d.timesteps:
        torch.testing.assert_close(back.step_tensor(t), d.step_tensor(t))
    with pytest.raises(ValueError, match="empty"):
        mean_difference_direction(bb, a[:0], b)
    with pytest.raises(ValueError, match="to_latents must be"):
        mean_difference_direction(bb, a, b[:, :, :16, :16])
    with pytest.raises(ValueError, match="leaves no step"):
        mean_difference_direction(bb, a, b, n_steps=4, t_edit=1000)


def _write_images(folder, seed: int, n: int = 2):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_cli_writes_a_direction_and_refuses_bad_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path / "cache"))
    plain, hats = _write_images(tmp_path / "plain", 0), _write_images(tmp_path / "hats", 1, 3)
    out = tmp_path / "d.safetensors"
    args = ["difference", "-m", "tiny-random", "--from", str(plain), "--to", str(hats), "-o", str(out),
            "--steps", "4", "--inv-steps", "4", "--t-edit", "400"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    d = load_direction(out)
    assert d.meta.kind == "per-step" and d.meta.t_edit == 400 and len(d.meta.extra["to_inputs"]) == 3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    both = CliRunner().invoke(app, ["difference", "-m", "tiny-random", "--from", str(plain), "--to", str(plain / "0.png"),
                                    "-o", str(tmp_path / "x.safetensors")])
    assert both.exit_code == 2 and "both --from and --to" in both.output
    assert not (tmp_path / "x.safetensors").exists()


@torch.no_grad()
def test_per_image_h_matches_the_sums_and_single_image_runs(tiny_backbone):
    from hspace.directions.mean_difference import h_along_trajectories

    bb = tiny_backbone
    x = _latents(bb, 3, 2)
    each = h_along_trajectories(bb, x, 6, 300, batch_size=2, reduce="none")
    sums = h_along_trajectories(bb, x, 6, 300, batch_size=3)
    assert set(each) == set(sums) and all(each[t].shape == (3, *bb.h_shape) for t in each)
    alone = h_along_trajectories(bb, x[1:2], 6, 300)
    for t in each:
        torch.testing.assert_close(each[t].sum(0), sums[t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(each[t][1], alone[t], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="reduce"):
        h_along_trajectories(bb, x, 6, 300, reduce="mean")


def test_measure_runs_a_trained_style_direction_under_bf16(tiny_backbone):
    """A measure that runs a network (the paper's f_t) on the step's bf16 h, as the h-oracle check does."""
    from hspace.directions import ImplicitDirection
    from hspace.directions.mean_difference import h_along_trajectories

    bb = tiny_backbone
    f_t = ImplicitDirection.for_backbone(bb, "ddpm")
    x = _latents(bb, 2, 3)
    with torch.no_grad():
        norms = h_along_trajectories(bb, x, 4, 500, precision="bf16", reduce="none",
                                     measure=lambda enc: f_t(enc.h, enc.t, enc.temb).float().flatten(1).norm(dim=1))
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in norms.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
def test_mean_difference_runs_where_the_backbone_runs(tiny_backbone):
    # latents on the CPU, the backbone on the GPU (`hspace difference --device cuda`)
    import copy

    a, b = _latents(tiny_backbone, 3, 0), _latents(tiny_backbone, 2, 1)
    cpu = mean_difference_direction(tiny_backbone, a, b, n_steps=6, t_edit=500)
    gpu = mean_difference_direction(copy.deepcopy(tiny_backbone).to("cuda"), a, b, n_steps=6, t_edit=500)
    for t in cpu.timesteps:
        torch.testing.assert_close(gpu.step_tensor(t).cpu(), cpu.step_tensor(t), atol=1e-3, rtol=1e-3)
