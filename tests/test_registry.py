"""hspace.backbones.registry: built-in names, local diffusers folders, hub ids (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from conftest import make_tiny_unet
from hspace.backbones import registry
from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.backbones.registry import (
    BUILTIN_MODELS,
    ModelNotAvailableError,
    list_models,
    load_backbone,
    register_builtin,
)
from hspace.schedule import default_alphas_cumprod


@pytest.fixture
def x_t() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3.0, 700.0])


@pytest.fixture
def offline_hub(monkeypatch, tmp_path: Path) -> Path:
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


# ---------------------------------------------------------------- built-ins


def test_tiny_random_is_deterministic_and_leaves_global_rng(x_t):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_backbone("tiny-random")
    assert torch.equal(torch.rand(3), expected_next), "building tiny-random consumed the global RNG"
    b = load_backbone("tiny-random")
    assert isinstance(a, DiffusersUNetBackbone)
    assert a.backbone_id == "tiny-random" and a.h_shape == (64, 8, 8) and a.image_size == 32
    assert a.unet.config.block_out_channels == (32, 64, 64)
    assert torch.equal(a.alphas_cumprod, default_alphas_cumprod())
    with torch.no_grad():
        ea, eb = a.eps(*x_t), b.eps(*x_t)
    assert torch.equal(ea, eb)
    assert torch.isfinite(ea).all() and ea.std() > 0.05  # random, not degenerate
    assert not any(p.requires_grad for p in a.parameters())
    assert "random" in list_models()["tiny-random"].lower()


def test_register_builtin_and_list(monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS", dict(BUILTIN_MODELS))
    made = []

    def factory():
        made.append(1)
        return DiffusersUNetBackbone(make_tiny_unet(), backbone_id="whatever")

    registry.register_builtin("my-toy", "a test model", factory)
    assert registry.list_models()["my-toy"] == "a test model"
    bb = registry.load_backbone("my-toy")
    assert made == [1] and bb.backbone_id == "my-toy"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_builtin("my-toy", "again", factory)
    registry.register_builtin("my-toy", "replaced", factory, replace=True)
    assert registry.list_models()["my-toy"] == "replaced"
    with pytest.raises(ValueError, match="slash"):
        register_builtin("org/name", "looks like a hub id", factory)


def test_unknown_name_lists_builtins_and_forms():
    with pytest.raises(ValueError) as info:
        load_backbone("no-such-model")
    msg = str(info.value)
    assert "no-such-model" in msg and "tiny-random" in msg and "hub id" in msg and "folder" in msg


def test_missing_explicit_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_backbone(str(tmp_path / "does-not-exist"))


def test_bad_device_and_dtype():
    with pytest.raises(ValueError, match="dtype"):
        load_backbone("tiny-random", dtype=torch.int64)
    with pytest.raises(ValueError, match="dtype"):
        load_backbone("tiny-random", dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_backbone("tiny-random", device="cuda")


def test_dtype_casts_unet_but_not_schedule():
    bb = load_backbone("tiny-random", dtype="bf16")
    assert bb.unet.dtype == torch.bfloat16 and bb.alphas_cumprod.dtype == torch.float32


# ---------------------------------------------------------------- local folders


def _save_unet_folder(folder: Path, unet: UNet2DModel, scheduler: DDPMScheduler | None) -> None:
    unet.save_pretrained(folder, safe_serialization=True)
    if scheduler is not None:
        scheduler.save_config(folder)


def test_local_unet_folder_roundtrip(tmp_path: Path, x_t):
    unet = make_tiny_unet(seed=4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=1e-4, beta_end=0.02)
    folder = tmp_path / "my model"
    _save_unet_folder(folder, unet, sched)
    assert (folder / "diffusion_pytorch_model.safetensors").is_file() and (folder / "scheduler_config.json").is_file()

    bb = load_backbone(str(folder))
    assert bb.backbone_id == str(folder.resolve())
    with torch.no_grad():
        expected = unet(*x_t).sample
        got = bb.eps(*x_t)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the schedule comes from the folder's scheduler config (not the default linear one)
    torch.testing.assert_close(bb.alphas_cumprod, sched.alphas_cumprod.float())
    assert not torch.allclose(bb.alphas_cumprod, default_alphas_cumprod())
    # Path objects work too
    assert load_backbone(folder).backbone_id == str(folder.resolve())


def test_local_pipeline_folder(tmp_path: Path, x_t):
    unet = make_tiny_unet(seed=5)
    sched = DDPMScheduler(num_train_timesteps=500, beta_start=1e-4, beta_end=0.03)
    root = tmp_path / "pipe"
    unet.save_pretrained(root / "unet")
    sched.save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"],
    }))
    bb = load_backbone(str(root))
    assert bb.alphas_cumprod.shape == (500,)
    torch.testing.assert_close(bb.alphas_cumprod, sched.alphas_cumprod.float())
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(*x_t), unet(*x_t).sample, rtol=0, atol=0)


def test_local_folder_without_scheduler_uses_default(tmp_path: Path):
    folder = tmp_path / "unet_only"
    _save_unet_folder(folder, make_tiny_unet(), None)
    bb = load_backbone(str(folder))
    assert torch.equal(bb.alphas_cumprod, default_alphas_cumprod())


def test_folder_that_is_not_a_unet(tmp_path: Path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError) as info:
        load_backbone(str(junk))
    msg = str(info.value)
    assert str(junk) in msg and "config.json" in msg and "model_index.json" in msg and "model.pt" in msg

    other = tmp_path / "vae"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match=r"AutoencoderKL.*UNet2DModel"):
        load_backbone(str(other))

    no_weights = tmp_path / "no_weights"
    make_tiny_unet().save_config(no_weights)
    with pytest.raises(ValueError, match=r"no weights.*diffusion_pytorch_model.safetensors"):
        load_backbone(str(no_weights))

    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        load_backbone(str(a_file))


# ---------------------------------------------------------------- hub ids


def test_hub_id_offline_not_cached_message(offline_hub: Path):
    with pytest.raises(ModelNotAvailableError) as info:
        load_backbone("google/ddpm-ema-celebahq-256")
    err = info.value
    assert isinstance(err, RuntimeError)
    msg = str(err)
    assert "google/ddpm-ema-celebahq-256" in msg
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        assert f in msg
    assert "hf download google/ddpm-ema-celebahq-256" in msg and "huggingface-cli download" in msg
    assert "HF_HOME" in msg and "--model" in msg and str(offline_hub) in msg
    assert "Traceback" not in msg and len(msg.splitlines()) <= 5 and len(msg) < 800
    assert not (offline_hub / "hub").exists() or not any((offline_hub / "hub").rglob("*.safetensors"))


def test_hub_id_from_prepopulated_cache(offline_hub: Path, x_t):
    """A model already in the hub cache (as `hf download` leaves it) loads offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = offline_hub / "hub" / "models--someorg--tiny-ddpm"
    snap = repo_dir / "snapshots" / commit
    unet = make_tiny_unet(seed=9)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_end=0.015)
    _save_unet_folder(snap, unet, sched)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)

    bb = load_backbone("someorg/tiny-ddpm")
    assert bb.backbone_id == "someorg/tiny-ddpm"
    torch.testing.assert_close(bb.alphas_cumprod, sched.alphas_cumprod.float())
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(*x_t), unet(*x_t).sample, rtol=0, atol=0)


def test_hub_download_network_error_becomes_model_not_available(monkeypatch, tmp_path: Path):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(registry, "_hub_offline", lambda: False)
    calls = []

    def fake_snapshot_download(repo_id, *, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelNotAvailableError) as info:
        load_backbone("google/ddpm-ema-church-256")
    assert calls == [True, False]  # cache first, then one real download attempt
    msg = str(info.value)
    assert "google/ddpm-ema-church-256" in msg and "download failed" in msg and "ConnectionError" in msg
    assert "hf download google/ddpm-ema-church-256" in msg


def test_hub_repo_not_found_says_so(monkeypatch, tmp_path: Path):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(registry, "_hub_offline", lambda: False)

    def fake_snapshot_download(repo_id, *, local_files_only=False, **kwargs):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # skip the HTTP-response constructor
        err.args = ("404 Client Error: Repository Not Found",)
        raise err

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelNotAvailableError, match=r"no such repository.*private/gated"):
        load_backbone("someone/typo-model")
