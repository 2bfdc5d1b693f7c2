"""The on-disk caches are keyed by the model's weights, not only its name."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_unet

from hspace.backbones.diffusers_unet import DiffusersUNetBackbone
from hspace.cache import LatentCache, weights_digest
from hspace.editor import EditConfig, Editor
from hspace.sampler import invert


def test_weights_digest_follows_the_values_not_the_memory_layout():
    a = DiffusersUNetBackbone(make_tiny_unet(0), backbone_id="same/name")
    b = DiffusersUNetBackbone(make_tiny_unet(0), backbone_id="other/name")
    assert weights_digest(a) == weights_digest(b)
    b.to(memory_format=torch.channels_last)  # what bf16 editing does to the weights
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        w = next(b.parameters())
        w[(0,) * w.dim()] += 1e-3
    assert weights_digest(a) != weights_digest(b)
    with pytest.raises(TypeError, match="cache_latents=False"):
        weights_digest(object())  # type: ignore[arg-type]


def test_latent_cache_keeps_models_with_one_name_apart(tmp_path):
    image, latent = torch.zeros(3, 32, 32), torch.ones(3, 32, 32)
    LatentCache("toy-faces", "weights-a", root=tmp_path).put(image, 10, latent)
    assert torch.equal(LatentCache("toy-faces", "weights-a", root=tmp_path).get(image, 10), latent)
    assert LatentCache("toy-faces", "weights-b", root=tmp_path).get(image, 10) is None


def test_editor_inverts_again_after_the_weights_behind_a_name_change(tmp_path, monkeypatch):
    """A retrained model saved under the same name (a built-in name, a folder, a hub repo) must
    not be given the old model's latents."""
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = EditConfig(n_inv_steps=4, n_steps=4, progress=False, cache_latents=True)
    old = DiffusersUNetBackbone(make_tiny_unet(0), backbone_id="my-model")
    new = DiffusersUNetBackbone(make_tiny_unet(1), backbone_id="my-model")
    first = Editor(old, cfg).invert(images)
    assert torch.equal(Editor(old, cfg).invert(images), first)  # served from the cache
    fresh = Editor(new, cfg).invert(images)
    assert torch.allclose(fresh, invert(new, images, 4).latents, atol=1e-6)
    assert not torch.allclose(fresh, first, atol=1e-3)


def test_latent_cache_put_does_not_trip_over_another_writers_temp_file(tmp_path):
    """Two processes caching the same image once shared one temp name, and one of them failed."""
    cache = LatentCache("toy-faces", "weights-a", root=tmp_path)
    image, latent = torch.zeros(3, 32, 32), torch.ones(3, 32, 32)
    final = cache._path(image, 10)
    final.parent.mkdir(parents=True)
    final.with_suffix(".tmp").mkdir()  # the other writer's temp file, in the old fixed place
    cache.put(image, 10, latent)
    assert torch.equal(cache.get(image, 10), latent)
    assert [p.name for p in final.parent.iterdir() if p.is_file()] == [final.name]  # no temp file left
