import pytest
import torch

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone, alphas_cumprod_from_scheduler_config
from hspace.schedule import default_alphas_cumprod

from conftest import make_tiny_unet

BLOCK_LAYOUTS = {
    "plain": {},
    "resnet-updown": dict(
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    ),
    "skip": dict(
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
    ),
    "learned-variance": dict(out_channels=6),
    "fourier-centered": dict(time_embedding_type="fourier", center_input_sample=True),
    "no-mid": dict(mid_block_type=None),
    "two-layers": dict(layers_per_block=2, add_attention=False),
}


@pytest.mark.parametrize("layout", sorted(BLOCK_LAYOUTS))
def test_encode_decode_equals_forward(layout):
    unet = make_tiny_unet(**BLOCK_LAYOUTS[layout])
    bb = DiffusersUNetBackbone(unet)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([999.0, 17.0]) if layout != "fourier-centered" else torch.tensor([0.7, 0.2])
    with torch.no_grad():
        expected = unet(x, t).sample[:, :3]
        enc = bb.encode(x, t)
        got = bb.decode(enc)
    assert enc.h.shape[1:] == bb.h_shape
    assert enc.temb.shape == (2, bb.temb_dim)
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_decode_uses_given_h(tiny_backbone):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enc = tiny_backbone.encode(x, torch.tensor([500]))
        e0 = tiny_backbone.decode(enc)
        e1 = tiny_backbone.decode(enc, enc.h + 1.0)
    assert (e1 - e0).abs().max() > 1e-3


def test_schedule_from_config():
    ac = alphas_cumprod_from_scheduler_config({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000})
    assert torch.equal(ac, default_alphas_cumprod())
    cos = alphas_cumprod_from_scheduler_config({"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000})
    assert cos.shape == (1000,) and not torch.allclose(cos, ac)
    assert torch.equal(alphas_cumprod_from_scheduler_config(None), default_alphas_cumprod())


def test_class_conditional_refused():
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusersUNetBackbone(make_tiny_unet(num_class_embeds=4))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_non_eps_models_give_eps_as_diffusers_schedulers_read_them(prediction_type):
    """A v (or x0) model's output is turned into eps: P_t built from it must equal diffusers'
    own DDIMScheduler's pred_original_sample for the same raw output."""
    from diffusers import DDIMScheduler

    from hspace.sampler import ddim_step

    config = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
              "prediction_type": prediction_type, "clip_sample": False}
    unet = make_tiny_unet()
    bb = DiffusersUNetBackbone(unet, schedule_config=config)
    sched = DDIMScheduler(**config)
    sched.set_timesteps(50)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t = int(sched.timesteps[10])
    with torch.no_grad():
        raw = unet(x, torch.tensor([t, t])).sample
        eps = bb.eps(x, t)
        ref = sched.step(raw, t, x)
    a = bb.alphas_cumprod[t]
    a_next = bb.alphas_cumprod[t - 1000 // 50]
    ours = ddim_step(x, eps, a, a_next)
    assert torch.allclose(ours.x0, ref.pred_original_sample, atol=1e-4), (ours.x0 - ref.pred_original_sample).abs().max()
    assert torch.allclose(ours.x_next, ref.prev_sample, atol=1e-4), (ours.x_next - ref.prev_sample).abs().max()
    assert not torch.allclose(eps, raw, atol=1e-2)  # the conversion is not the identity


def test_v_model_decodes_edited_h_and_stacked_encodings():
    """The input a v model needs travels with the encoding: an edited h, a repeated encoding and
    the sampler's joint decode all convert with their own x_t."""
    from hspace.sampler import decode_pair

    bb = DiffusersUNetBackbone(make_tiny_unet(), schedule_config={"prediction_type": "v_prediction"})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        enc = bb.encode(x, torch.tensor([600, 200]))
        h_edit = enc.h + 0.5
        alone = bb.decode(enc), bb.decode(enc, h_edit)
        joint = decode_pair(bb, enc, h_edit, joint=True)
        twice = bb.decode(enc.repeat(2))
    assert enc.x_t is x
    for a, b in zip(alone, joint):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(twice, torch.cat([alone[0], alone[0]]), atol=1e-5)
    assert (alone[1] - alone[0]).abs().max() > 1e-3


def test_unknown_prediction_type_refused():
    with pytest.raises(ValueError, match="prediction_type 'x' .* not supported"):
        DiffusersUNetBackbone(make_tiny_unet(), backbone_id="m", schedule_config={"prediction_type": "x"})
