"""Encoders: the built-in tiny CLIP, the transformers loader and its offline error."""

from __future__ import annotations

import time

import pytest
import torch

from hspace.encoders import (
    TINY_CLIP_NAME,
    EncoderNotAvailableError,
    ImageTextEncoder,
    TransformersCLIP,
    build_tiny_clip,
    load_encoder,
    preprocess_for_clip,
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(seed=0)


def test_tiny_clip_builds_offline_and_tokenizes(tiny):
    assert isinstance(tiny, ImageTextEncoder)
    assert tiny.name == TINY_CLIP_NAME
    ids = tiny.tokenizer("a smiling face")["input_ids"]
    tokens = tiny.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert tokens[1:-1] == ["a</w>", "s", "m", "i", "l", "i", "n", "g</w>", "f", "a", "c", "e</w>"]
    assert len(set(ids)) > 5
    assert tiny.encode_text(["a smiling face"]).shape == (1, tiny.embed_dim)


def test_tiny_clip_is_seeded_and_leaves_global_rng_alone(tiny):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    same = build_tiny_clip(seed=0)
    after = torch.rand(3)
    assert torch.equal(before, after)
    other = build_tiny_clip(seed=1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(tiny.encode_image(x), same.encode_image(x))
    assert not torch.allclose(tiny.encode_image(x), other.encode_image(x))


def test_text_embeddings_do_not_depend_on_padding(tiny):
    alone = tiny.encode_text(["a"])
    padded = tiny.encode_text(["a", "a much longer sentence about a smiling face"])
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_encode_image_is_differentiable_and_encoder_frozen(tiny):
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    feats = tiny.encode_image(x)
    assert feats.shape == (2, tiny.embed_dim) and feats.dtype == torch.float32
    feats.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())


def test_encode_image_any_size(tiny):
    # Non-square and larger/smaller inputs are resized (short side) and centre-cropped.
    for shape in [(1, 3, 48, 80), (1, 3, 16, 16), (1, 3, 32, 32)]:
        assert tiny.encode_image(torch.zeros(shape)).shape == (1, tiny.embed_dim)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\(1, 1, 8, 8\)"):
        tiny.encode_image(torch.zeros(1, 1, 8, 8))


def test_preprocess_normalises_with_clip_stats():
    white = preprocess_for_clip(torch.ones(1, 3, 8, 8), 8)
    expected = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]
    )
    torch.testing.assert_close(white[0, :, 0, 0], expected)


def test_encoder_stays_in_eval(tiny):
    tiny.train()
    assert not tiny.training and not tiny.model.training
    assert all(not m.training for m in tiny.modules())
    tiny.train(True)
    assert not tiny.model.training


def test_transformers_clip_loads_a_local_folder(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = TransformersCLIP(tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode_image(x), tiny.encode_image(x))
    torch.testing.assert_close(loaded.encode_text(["a face"]), tiny.encode_text(["a face"]))


def test_missing_model_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EncoderNotAvailableError) as info:
        TransformersCLIP("hspace-test/definitely-not-a-clip-model")
    message = str(info.value)
    assert "hspace-test/definitely-not-a-clip-model" in message
    assert "hf download hspace-test/definitely-not-a-clip-model" in message
    assert "local folder" in message
    assert time.perf_counter() - start < 10  # no network retries in offline mode
    assert isinstance(info.value, OSError)


def test_missing_local_folder_gives_clear_error(tmp_path):
    with pytest.raises(EncoderNotAvailableError, match="does not exist"):
        TransformersCLIP(str(tmp_path / "nope" / "clip"))


def test_load_encoder_dispatch():
    enc = load_encoder(TINY_CLIP_NAME)
    assert enc.name == TINY_CLIP_NAME
    assert not enc.training  # frozen from the start, not only after .train()
