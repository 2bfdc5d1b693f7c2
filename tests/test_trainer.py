import pytest
import torch
from torch import nn

from hspace.directions import load_direction, save_direction
from hspace.objectives.base import ObjectiveOutput
from hspace.objectives.classifier import ClassifierObjective
from hspace.sampler import Phases, generate
from hspace.trainer import TrainConfig, Trainer


class Brightness(nn.Module):
    """A one-logit 'classifier': mean pixel value. Maximising it brightens P_edit."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


def brightness_objective():
    return ClassifierObjective(Brightness(), target_index=None)


class CountingBackbone:
    """Wraps a backbone and counts full forward calls (eps) made during training."""

    def __init__(self, inner):
        self.inner, self.eps_calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def eps(self, x, t):
        self.eps_calls += 1
        return self.inner.eps(x, t)


CFG = dict(t_edit=600, n_train_steps=10, direction_kind="global", lr=0.5, progress=False)


def _edited_brightness(backbone, direction, latents, ts):
    got = {}
    generate(backbone, latents, 10, delta=direction, phases=Phases(t_edit=600),
             callback=lambda s: got.__setitem__(s.t, s.x0.mean().item()))
    return [got[t] for t in ts]


def test_training_moves_the_objective(tame_backbone):
    import copy

    trainer = Trainer(tame_backbone, brightness_objective(), TrainConfig(**dict(CFG, direction_kind="implicit-ddpm", lr=5.0), epochs=2))
    initial = copy.deepcopy(trainer.direction)
    data = trainer.data_from_noise(2)
    out = trainer.train(data)
    assert out.steps == 2 * 2 * len(trainer.pairs)
    ts = [t for t, _ in trainer.pairs]
    assert ts[0] == 999 and ts[-1] >= 600 and ts == sorted(ts, reverse=True)
    before = _edited_brightness(tame_backbone, initial, data.latents, ts)
    after = _edited_brightness(tame_backbone, out.direction, data.latents, ts)
    # the objective (brightness of P_t(e~)) went up at every trained timestep
    assert all(b2 > b1 for b1, b2 in zip(before, after)), (before, after)
    assert after[0] > before[0] + 0.05, (before, after)
    assert out.direction.meta.t_edit == 600 and out.direction.meta.n_train_steps == 10
    assert out.direction.meta.extra["training"]["optimizer_steps"] == out.steps


def test_unedited_trajectory_is_computed_once(tame_backbone):
    bb = CountingBackbone(tame_backbone)
    trainer = Trainer(bb, brightness_objective(), TrainConfig(**CFG, epochs=3))
    data = trainer.data_from_latents(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                                     torch.zeros(2, 3, 32, 32))
    before = bb.eps_calls
    assert before == len(trainer.pairs)  # one pass down to t_edit for the whole batch
    trainer.train(data)
    assert bb.eps_calls == before  # training itself never recomputes the source trajectory


class PerImageTarget:
    """Objective whose per-image state matters: pull P_edit towards each image's own target."""

    name = "per-image-target"

    def prepare(self, source_images):
        return source_images.clone()

    def __call__(self, p_edit, p_src, state):
        per = (p_edit - state).pow(2).mean(dim=(1, 2, 3))
        return ObjectiveOutput(loss=per.mean(), terms={"mse": per.mean()})


def test_batch_of_two_is_the_mean_of_two_singles(tame_backbone):
    g = torch.Generator().manual_seed(1)
    lat, src = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    cfg = dict(CFG, n_train_steps=5, t_edit=900)

    def first_loss(sl, batch):
        tr = Trainer(tame_backbone, PerImageTarget(), TrainConfig(**cfg, batch_size=batch))
        return tr.train(tr.data_from_latents(lat[sl], src[sl])).losses[0]

    both = first_loss(slice(0, 2), 2)
    singles = [first_loss(slice(i, i + 1), 1) for i in range(2)]
    assert both == pytest.approx(sum(singles) / 2, rel=1e-5)
    assert singles[0] != pytest.approx(singles[1], rel=1e-3)


class Interrupt(Exception):
    pass


class InterruptAfter:
    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def prepare(self, s):
        return self.inner.prepare(s)

    def __call__(self, *a):
        self.calls += 1
        if self.calls > self.n:
            raise Interrupt
        return self.inner(*a)


def test_interrupted_training_resumes_to_the_same_result(tame_backbone, tmp_path):
    cfg = TrainConfig(**dict(CFG, direction_kind="implicit-ddpm"))
    lat = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    src = torch.zeros(3, 3, 32, 32)

    full = Trainer(tame_backbone, brightness_objective(), cfg)
    ref = full.train(full.data_from_latents(lat, src))

    ckpt = tmp_path / "run.ckpt.safetensors"
    t1 = Trainer(tame_backbone, InterruptAfter(brightness_objective(), len(full.pairs) + 2), cfg)
    with pytest.raises(Interrupt):
        t1.train(t1.data_from_latents(lat, src), checkpoint=ckpt)
    assert ckpt.exists()
    t2 = Trainer(tame_backbone, brightness_objective(), cfg)
    out = t2.train(t2.data_from_latents(lat, src), checkpoint=ckpt)
    assert out.resumed_from_step == len(full.pairs)
    assert out.losses == pytest.approx(ref.losses, rel=1e-6)
    for (k, a), (_, b) in zip(ref.direction.state_dict().items(), out.direction.state_dict().items()):
        assert torch.equal(a, b), k

    with pytest.raises(FileExistsError, match="resume"):
        Trainer(tame_backbone, brightness_objective(), cfg).train(t2.data_from_latents(lat, src), checkpoint=ckpt, resume=False)
    other = TrainConfig(**dict(CFG, direction_kind="implicit-ddpm", lr=0.1))
    with pytest.raises(ValueError, match="other settings"):
        Trainer(tame_backbone, brightness_objective(), other).train(t2.data_from_latents(lat, src), checkpoint=ckpt)


def test_trained_direction_file_round_trip(tame_backbone, tmp_path):
    tr = Trainer(tame_backbone, brightness_objective(), TrainConfig(**dict(CFG, direction_kind="per-step"),
                                                                     source_text="dark", target_text="bright"))
    out = tr.train(tr.data_from_noise(1))
    path = tmp_path / "bright.safetensors"
    save_direction(out.direction, path)
    back = load_direction(path, backbone=tame_backbone)
    assert back.meta.target_text == "bright" and back.meta.t_edit == 600
    h = torch.randn(1, *tame_backbone.h_shape)
    t = torch.tensor([999.0])
    assert torch.equal(back(h, t, None), out.direction(h, t, None))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="direction_kind"):
        TrainConfig(direction_kind="pca")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="t_edit"):
        TrainConfig(t_edit=1200)


class RecordingObjective(nn.Module):
    """Brightness, recording the largest |P_t(e~)| it is shown."""

    def __init__(self):
        super().__init__()
        self.inner, self.seen = brightness_objective(), []

    def prepare(self, sources):
        return self.inner.prepare(sources)

    def forward(self, p_edit, x0_src, state):
        self.seen.append(p_edit.detach().abs().max().item())
        return self.inner(p_edit, x0_src, state)


def test_data_from_noise_clips_where_the_model_config_asks(tiny_backbone):
    from hspace.backbones.diffusers_unet import DiffusersUNetBackbone

    # a random U-Net is no denoiser: unclipped, its P_t leave [-1, 1] by far
    plain = Trainer(tiny_backbone, brightness_objective(), TrainConfig(**CFG)).data_from_noise(2)
    assert not plain.clip_x0 and max(v.abs().max().item() for v in plain.x0_src.values()) > 1.5
    clipping = DiffusersUNetBackbone(tiny_backbone.unet, schedule_config={"clip_sample": True})
    objective = RecordingObjective()
    trainer = Trainer(clipping, objective, TrainConfig(**CFG))
    data = trainer.data_from_noise(2)
    assert data.clip_x0
    assert torch.equal(data.latents, plain.latents)
    b = trainer.config.batch_size  # batched as the trainer does: a random U-Net amplifies rounding
    expected = torch.cat([generate(clipping, data.latents[i : i + b], CFG["n_train_steps"], clip_x0=True) for i in range(0, 2, b)])
    assert torch.equal(data.sources, expected)
    assert all(v.abs().max().item() <= 1.0 for v in data.x0_src.values())
    trainer.train(data)
    assert objective.seen and max(objective.seen) <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_where_the_backbone_runs(precision):
    # the direction and every tensor of the loop follow the backbone (the toy direction sweep
    # on an H100 failed before: the direction stayed on the CPU, under CPU autocast)
    from conftest import TameBackbone, make_tiny_unet

    cfg = TrainConfig(**dict(CFG, direction_kind="implicit-ddpm", precision=precision))
    runs = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        backbone = TameBackbone(make_tiny_unet()).to(device)
        trainer = Trainer(backbone, brightness_objective(), cfg)
        out = trainer.train(trainer.data_from_noise(2))
        assert all(p.device.type == device for p in out.direction.parameters())
        runs[device] = out.losses
    assert len(runs["cpu"]) == len(runs["cuda"]) > 0
    tol = 1e-3 if precision == "fp32" else 5e-2  # same start and data; kernels differ in the last bits
    assert runs["cuda"] == pytest.approx(runs["cpu"], rel=tol, abs=tol)


def test_training_band_starts_from_the_unedited_trajectory(tame_backbone, tmp_path):
    # t_edit_max: train only where t_edit <= t <= t_edit_max, from the unedited x_t at the band's top
    cfg = TrainConfig(**dict(CFG, t_edit=300, t_edit_max=700, direction_kind="implicit-ddpm", lr=5.0))
    trainer = Trainer(tame_backbone, brightness_objective(), cfg)
    assert trainer.train_ts and 300 <= min(trainer.train_ts) and max(trainer.train_ts) <= 700
    assert [t for t, _ in trainer.pairs] == sorted(trainer.train_ts, reverse=True)
    data = trainer.data_from_noise(2)
    seen = {}
    generate(tame_backbone, data.latents, 10, callback=lambda s: seen.__setitem__(s.t, s.x_t))
    assert data.x_top is not None and torch.allclose(data.x_top, seen[max(trainer.train_ts)], atol=1e-5)
    out = trainer.train(data)
    assert out.steps == 2 * len(trainer.train_ts) and out.direction.meta.t_edit_max == 700
    path = save_direction(out.direction, tmp_path / "band.safetensors")
    assert load_direction(path, tame_backbone).meta.t_edit_max == 700
    # the paper's interval (no band) starts at x_T and keeps checkpoints' identity as before
    plain = Trainer(tame_backbone, brightness_objective(), TrainConfig(**dict(CFG, t_edit=300)))
    assert max(plain.train_ts) == 999
    assert plain.data_from_noise(1).x_top is None and "t_edit_max" not in plain.config.identity()
    with pytest.raises(ValueError, match="t_edit_max"):
        TrainConfig(**dict(CFG, t_edit=600, t_edit_max=500))
