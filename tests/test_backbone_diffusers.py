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
