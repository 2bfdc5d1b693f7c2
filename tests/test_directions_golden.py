"""f_t against the official DeltaBlock outputs (reference/asyrp-official, README sections 1-4).

Tolerance: rtol=1e-5, atol=2e-5 for network tensors, as the golden README recommends.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hspace.directions import (
    DirectionFileError,
    ImplicitDirection,
    import_official,
    load_direction,
    save_direction,
)

pytestmark = pytest.mark.golden

TOL = dict(rtol=1e-5, atol=2e-5)
CHECKPOINTS = {
    # name in deltablock_golden -> (file, variant)
    "smiling": ("smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth", "ddpm"),
    "dog_happy": ("dog_happy_LC_dog_t999_ninv40_ngen40_0.pth", "adm"),
}


def _import(reference_dir, name: str) -> ImplicitDirection:
    return import_official(
        reference_dir / "checkpoints" / CHECKPOINTS[name][0],
        backbone_id=f"official/{name}",
        h_shape=(512, 8, 8),
        temb_dim=512,
        n_train_steps=40,
        t_edit=513,
        target_text=name,
    )


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_official_checkpoint_reproduces_delta_h(reference_dir, name):
    golden = load_file(reference_dir / "deltablock_golden.safetensors")
    direction = _import(reference_dir, name)
    assert direction.variant == CHECKPOINTS[name][1]
    assert direction.meta.kind == f"implicit-{CHECKPOINTS[name][1]}"
    with torch.no_grad():
        dh = direction(golden[f"{name}.h"], golden["timesteps_999_500"], golden[f"{name}.temb"])
    torch.testing.assert_close(dh, golden[f"{name}.delta_h"], **TOL)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_imported_checkpoint_survives_our_file_format(reference_dir, tmp_path, name):
    golden = load_file(reference_dir / "deltablock_golden.safetensors")
    direction = load_direction(save_direction(_import(reference_dir, name), tmp_path / f"{name}.safetensors"))
    assert direction.meta.n_train_steps == 40 and direction.meta.t_edit == 513
    assert direction.meta.extra["imported_from"] == CHECKPOINTS[name][0]
    with torch.no_grad():
        dh = direction(golden[f"{name}.h"], golden["timesteps_999_500"], golden[f"{name}.temb"])
    torch.testing.assert_close(dh, golden[f"{name}.delta_h"], **TOL)


def test_ddpm_variant_parameter_count():
    direction = ImplicitDirection("ddpm", channels=512, temb_dim=512)
    assert sum(p.numel() for p in direction.parameters()) == 788_992


@pytest.mark.parametrize("family,variant", [("ddpm_small", "ddpm"), ("adm_small", "adm")])
def test_reduced_model_edit_layer(reference_dir, family, variant):
    io = load_file(reference_dir / family / "io.safetensors")
    direction = ImplicitDirection(variant, channels=64, temb_dim=128)
    direction.load_official_state_dict(load_file(reference_dir / family / "edit_layer0_state_dict.safetensors"))
    with torch.no_grad():
        with_t = direction(io["h"], io["t"], io["temb"])
        without_t = direction(io["h"], io["t"], None)
    torch.testing.assert_close(with_t, io["edit.delta_h"], **TOL)
    torch.testing.assert_close(without_t, io["edit_ignore_timestep.delta_h"], **TOL)
    # The flag form of ignore_timestep gives the same as temb=None.
    flagged = ImplicitDirection(variant, 64, 128, ignore_timestep=True)
    flagged.load_official_state_dict(direction.block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(flagged(io["h"], io["t"], io["temb"]), io["edit_ignore_timestep.delta_h"], **TOL)


def test_import_rejects_wrong_backbone_shape(reference_dir):
    with pytest.raises(DirectionFileError) as err:
        import_official(
            reference_dir / "checkpoints" / CHECKPOINTS["smiling"][0],
            backbone_id="x",
            h_shape=(256, 8, 8),
            temb_dim=512,
            n_train_steps=40,
        )
    msg = str(err.value)
    assert "smiling_LC_CelebA_HQ" in msg and "512 channels" in msg and "[256, 8, 8]" in msg
