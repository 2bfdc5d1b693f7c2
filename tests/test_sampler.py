import pytest
import torch
from safetensors.torch import load_file

from hspace.sampler import Phases, asymmetric_step, ddim_step, generate, invert, predict_x0
from hspace.schedule import abar_at, default_alphas_cumprod


class ClosedFormBackbone:
    """The exact eps-predictor for data ~ N(0, s^2 I), split so that h = x_t.

    For that data, eps*(x_t, t) = sqrt(1 - a) x_t / (a s^2 + 1 - a) with a = abar_t: a perfect
    denoiser in closed form (diffusers' scheduler tests use a closed-form model the same way),
    so sampler trajectories are stable and their exact behaviour is known.
    """

    backbone_id = "closed-form"
    image_size = 8
    in_channels = 3
    h_shape = (3, 8, 8)
    temb_dim = 1
    s = 0.5
    device = torch.device("cpu")  # the Backbone protocol's: where inputs go (the Editor moves them there)

    def __init__(self):
        self.alphas_cumprod = default_alphas_cumprod()

    def encode(self, x_t, t):
        from hspace.backbones.base import Encoded

        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x_t.shape[0])
        return Encoded(h=x_t, skips=(), temb=t[:, None], t=t)

    def decode(self, enc, h=None):
        h = enc.h if h is None else h
        a = self.alphas_cumprod[enc.t.long()].reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * h / (a * self.s**2 + 1 - a)

    def eps(self, x_t, t):
        return self.decode(self.encode(x_t, t))


GOLDEN_CASES = [
    ("edit_t999_eta0", 0.0),
    ("edit_t486_eta1", 1.0),
    ("below_tedit_t0_to_minus1", 0.0),
    ("inversion_t0_to_t25", 0.0),
]


@pytest.mark.parametrize("family", ["ddpm_small", "adm_small"])
@pytest.mark.parametrize("case,eta", GOLDEN_CASES)
def test_step_matches_golden(reference_dir, family, case, eta):
    d = load_file(str(reference_dir / family / "ddim_step.safetensors"))
    ac = load_file(str(reference_dir / "schedule_float32.safetensors"))["alphas_cumprod"]
    assert torch.equal(ac, default_alphas_cumprod())
    x_t = d["x_t"]
    t, t_next = int(d[f"{case}.t"][0]), int(d[f"{case}.t_next"][0])
    eps = d[f"{case}.eps_raw"][:, :3]
    eps_edit = d[f"{case}.eps_edit_raw"][:, :3] if f"{case}.eps_edit_raw" in d else eps
    noise = d.get(f"{case}.z")
    out = asymmetric_step(x_t, eps, eps_edit, abar_at(ac, t), abar_at(ac, t_next), eta, noise=noise)
    # P_t divides by sqrt(abar_t) (0.006 at t=999), so float32 rounding of the ~1e2 intermediate
    # shows up as ~1e-4; scale the absolute tolerance the same way (README: atol ~ 1.3e-5 / sqrt(abar)).
    x0_atol = max(1e-5, 2e-6 / abar_at(ac, t).sqrt().item())
    torch.testing.assert_close(out.x0, d[f"{case}.x0_t"], rtol=1e-6, atol=x0_atol)
    torch.testing.assert_close(out.x_next, d[f"{case}.x_next"], rtol=1e-6, atol=1e-5)


def test_inversion_converges_to_probability_flow_map():
    """For N(0, s^2) data the exact inversion is x_T = x0 sqrt(abar_T s^2 + 1 - abar_T) / s;
    DDIM's discretisation error must shrink ~linearly with the step count, and the
    reconstruction must return to x0 as closely."""
    bb = ClosedFormBackbone()
    x0 = 0.5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a_T = bb.alphas_cumprod[-1]
    exact = x0 * (a_T * bb.s**2 + 1 - a_T).sqrt() / bb.s
    errors = {}
    for n in (100, 1000):
        inv = invert(bb, x0, n_steps=n)
        rec = generate(bb, inv.latents, n_steps=n)
        errors[n] = ((inv.latents - exact).abs().max().item(), (rec - x0).abs().max().item())
    assert errors[1000][0] < errors[100][0] / 5 and errors[1000][0] < 0.02, errors
    assert errors[1000][1] < errors[100][1] / 5 and errors[1000][1] < 0.02, errors


def test_zero_direction_equals_plain_reconstruction(tiny_backbone):
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    inv = invert(tiny_backbone, x0, n_steps=10)
    plain = generate(tiny_backbone, inv.latents, n_steps=10)
    zero = lambda h, t, temb: torch.zeros_like(h)  # noqa: E731
    edited = generate(tiny_backbone, inv.latents, n_steps=10, delta=zero, phases=Phases(t_edit=500), joint_decode=False)
    assert torch.equal(edited, plain)
    joint = generate(tiny_backbone, inv.latents, n_steps=10, delta=zero, phases=Phases(t_edit=500), joint_decode=True)
    # a batch of 2B may round differently from B in the last bit; random weights amplify that
    assert ((joint - plain).abs().max() / plain.abs().max()) < 1e-5


def test_asymmetric_moves_far_more_than_symmetric():
    """Theorem 1, measured: the same dh shifted into both P_t and D_t nearly cancels."""
    bb = ClosedFormBackbone()
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(4, 3, 8, 8, generator=g)
    dh = 0.5 * torch.randn(1, 3, 8, 8, generator=g)
    delta = lambda h, t, temb: dh.expand_as(h)  # noqa: E731
    base = generate(bb, x_T, n_steps=40)
    asym = generate(bb, x_T, n_steps=40, delta=delta, phases=Phases(t_edit=400))
    sym = generate(bb, x_T, n_steps=40, delta=delta, phases=Phases(t_edit=400), shift="symmetric")
    d_asym = (asym - base).abs().mean().item()
    d_sym = (sym - base).abs().mean().item()
    assert d_asym > 5 * d_sym, (d_asym, d_sym)


def test_direction_only_applied_in_editing_interval():
    bb = ClosedFormBackbone()
    seen = []

    def delta(h, t, temb):
        seen.append(int(t[0]))
        return torch.ones_like(h)

    generate(bb, torch.zeros(1, 3, 8, 8), n_steps=10, delta=delta, phases=Phases(t_edit=500))
    assert seen == [999, 888, 777, 666, 555]


def test_batch_of_two_equals_two_batches_of_one(tiny_backbone):
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    dh = 0.5 * torch.randn(1, *tiny_backbone.h_shape, generator=g)
    delta = lambda h, t, temb: dh.expand_as(h)  # noqa: E731
    ph = Phases(t_edit=400, t_boost=200)
    both = generate(tiny_backbone, x_T, n_steps=10, delta=delta, phases=ph,
                    generator=[torch.Generator().manual_seed(i) for i in range(2)])
    singles = torch.cat([
        generate(tiny_backbone, x_T[i : i + 1], n_steps=10, delta=delta, phases=ph,
                 generator=[torch.Generator().manual_seed(i)])
        for i in range(2)
    ])
    assert ((both - singles).abs().max() / singles.abs().max()) < 1e-5


def test_boosting_phase_is_stochastic_and_seeded(tiny_backbone):
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ph = Phases(t_boost=300)
    a = generate(tiny_backbone, x_T, n_steps=10, phases=ph, generator=torch.Generator().manual_seed(1))
    b = generate(tiny_backbone, x_T, n_steps=10, phases=ph, generator=torch.Generator().manual_seed(1))
    c = generate(tiny_backbone, x_T, n_steps=10, phases=ph, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_step_rejects_noise_with_eta_zero():
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="eta = 0"):
        ddim_step(x, x, 0.5, 0.6, eta=0.0, noise=x)


def test_predict_x0_inverts_forward_noising():
    g = torch.Generator().manual_seed(0)
    x0, e = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    a = torch.tensor(0.3)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * e
    torch.testing.assert_close(predict_x0(x_t, e, a), x0, rtol=1e-5, atol=1e-5)


def test_bf16_generation_close_to_fp32(tiny_backbone):
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = generate(tiny_backbone, x_T, n_steps=5)
    b = generate(tiny_backbone, x_T, n_steps=5, precision="bf16")
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() < 0.1 * a.abs().mean()


def test_clip_x0_bounds_the_prediction_and_keeps_the_direction_term():
    x = torch.full((1, 3, 4, 4), 0.5)
    eps = torch.full((1, 3, 4, 4), -2.0)  # P_t far above 1 at small abar
    a, a_next = torch.tensor(0.01), torch.tensor(0.02)
    free = ddim_step(x, eps, a, a_next)
    clipped = ddim_step(x, eps, a, a_next, clip_x0=True)
    assert free.x0.max() > 1 and torch.equal(clipped.x0, free.x0.clamp(-1, 1))
    # x_next = sqrt(a') clip(P_t) + D_t(e) with the unclipped e (as diffusers' DDIM)
    expected = a_next.sqrt() * free.x0.clamp(-1, 1) + (1 - a_next).sqrt() * eps
    assert torch.allclose(clipped.x_next, expected)
    edited = asymmetric_step(x, eps, eps * 0.5, a, a_next, clip_x0=True)
    assert edited.x0.abs().max() <= 1


def test_model_clips_x0_follows_the_scheduler_config(tiny_backbone):
    from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
    from hspace.sampler import model_clips_x0

    assert not model_clips_x0(tiny_backbone)  # no config: the paper's models never clip
    assert not model_clips_x0(ClosedFormBackbone())
    unet = tiny_backbone.unet
    assert model_clips_x0(DiffusersUNetBackbone(unet, schedule_config={"clip_sample": True}))
    assert not model_clips_x0(DiffusersUNetBackbone(unet, schedule_config={"clip_sample": False}))


def test_sampling_clips_only_when_asked(tiny_backbone):
    from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
    from hspace.editor import EditConfig, Editor

    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = []
    generate(tiny_backbone, noise, 5, clip_x0=True, callback=lambda s: seen.append(s.x0.abs().max().item()))
    assert max(seen) <= 1.0
    cfg = EditConfig(n_inv_steps=5, n_steps=5, progress=False, cache_latents=False)
    clipping = Editor(DiffusersUNetBackbone(tiny_backbone.unet, schedule_config={"clip_sample": True}), cfg)
    assert torch.equal(clipping.sample(noise), generate(tiny_backbone, noise, 5, clip_x0=True))
    # reconstruction of inverted latents never clips
    assert torch.equal(clipping.reconstruct(noise), generate(tiny_backbone, noise, 5))


def _diffusers_ddim_std(bb, noise, n_steps, eta):
    """Sample std of diffusers' own DDIMScheduler (the reference) driven by the same exact model."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(n_steps)
    x, g = noise.clone(), torch.Generator().manual_seed(5)
    for t in sched.timesteps:
        x = sched.step(bb.eps(x, torch.full((x.shape[0],), int(t))), t, x, eta=eta, generator=g).prev_sample
    return x.std().item()


def test_stochastic_sampling_matches_diffusers_ddim_eta():
    """Editor.sample(eta=1) is diffusers' DDIM with eta = 1: with an exact denoiser for data
    ~ N(0, s^2) its samples have diffusers' spread at 50 steps (0.44 there, below s: coarse
    ancestral steps shrink it; eta = 0 gives 0.47, so the amount of added noise is what is
    tested) and s itself at 1000 steps."""
    from hspace.editor import EditConfig, Editor

    bb = ClosedFormBackbone()
    noise = torch.randn(512, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def editor(steps, seed=0):
        return Editor(bb, EditConfig(n_inv_steps=steps, n_steps=steps, progress=False, cache_latents=False,
                                     batch_size=512, seed=seed))

    ancestral = editor(50).sample(noise, eta=1.0)
    assert ancestral.std().item() == pytest.approx(_diffusers_ddim_std(bb, noise, 50, 1.0), rel=0.015)
    # (our grid starts at t = 999, diffusers' at 980: a 0.1 % difference in the spread)
    assert editor(50).sample(noise).std().item() == pytest.approx(_diffusers_ddim_std(bb, noise, 50, 0.0), rel=0.005)
    assert editor(1000).sample(noise, eta=1.0).std().item() == pytest.approx(bb.s, rel=0.015)
    # seeded per image (seed + i): reproducible, and the same image whatever the batch
    assert torch.equal(editor(50).sample(noise[:4], eta=1.0), ancestral[:4])
    assert torch.allclose(editor(50, seed=3).sample(noise[3:4], eta=1.0), ancestral[3:4], atol=1e-6)
    with pytest.raises(ValueError, match="eta"):
        editor(50).sample(noise, eta=1.5)
