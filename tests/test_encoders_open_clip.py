"""The optional open_clip backend: routing and the not-installed error (no real weights here)."""

from __future__ import annotations

import sys

import pytest

from hspace.encoders import EncoderNotAvailableError, OpenCLIPEncoder, load_encoder, parse_open_clip_spec


def test_spec_parsing():
    assert parse_open_clip_spec("open_clip:ViT-B-16/openai") == ("ViT-B-16", "openai")
    assert parse_open_clip_spec("open_clip:ViT-B-16") == ("ViT-B-16", None)
    assert parse_open_clip_spec("open_clip:ViT-B-16//data/clip/b16.bin") == ("ViT-B-16", "/data/clip/b16.bin")
    assert parse_open_clip_spec("open_clip:hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K") == (
        "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K", None)
    with pytest.raises(ValueError, match="open_clip:MODEL/PRETRAINED"):
        parse_open_clip_spec("open_clip:/openai")


def test_not_installed_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail even where it is installed
    with pytest.raises(EncoderNotAvailableError, match="pip install open_clip_torch"):
        load_encoder("open_clip:ViT-B-16/openai")
    with pytest.raises(EncoderNotAvailableError, match="pip install open_clip_torch"):
        OpenCLIPEncoder("ViT-B-16", "openai")


def test_load_encoder_routes_open_clip_specs(monkeypatch):
    import hspace.encoders as enc

    seen = {}

    class Fake:
        def __init__(self, model_name, pretrained, device=None, dtype=None):
            seen.update(model_name=model_name, pretrained=pretrained)

    monkeypatch.setattr(enc, "OpenCLIPEncoder", Fake)
    assert isinstance(load_encoder("open_clip:ViT-L-14/laion2b_s32b_b82k"), Fake)
    assert seen == {"model_name": "ViT-L-14", "pretrained": "laion2b_s32b_b82k"}
