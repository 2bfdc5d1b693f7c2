"""Toy-world evaluation models: the attribute probe and the small CLIP (tiny configs, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from hspace.cli.main import app
from hspace.encoders import TransformersCLIP
from hspace.toyworld import FACTOR_NAMES, FACTORS, caption_for, describe, factors_for, factors_to_vector
from hspace.toyworld.clip_train import (
    ZERO_SHOT_FACTORS,
    ClipSettings,
    _WORD_RE,
    build_clip_model,
    build_tokenizer,
    clip_batch,
    clip_loss,
    evaluate_zero_shot,
    export_clip,
    load_toy_clip,
    noisy_views,
    train_clip,
    write_tokenizer_files,
)
from hspace.toyworld.dataset import image_to_tensor
from hspace.toyworld.faces import render_array
from hspace.toyworld.probe import (
    BINARY,
    CATEGORICAL,
    CONTINUOUS,
    AttributeProbe,
    ModelNotTrainedError,
    ProbeConfig,
    ProbeTrainSettings,
    evaluate_probe,
    export_probe,
    frechet_distance,
    load_probe,
    probe_loss,
    train_probe,
)

torch.set_num_threads(1)

TINY_PROBE = ProbeConfig(stem=8, channels=(8, 16, 16, 16), feature_dim=32)
TINY_CLIP = dict(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1, text_heads=2,
                 projection_dim=16)


def _images(n: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    fs = [factors_for(seed, i) for i in range(n)]
    x = torch.stack([image_to_tensor(render_array(f, 64, 1)) for f in fs])
    return x, torch.from_numpy(np.stack([factors_to_vector(f) for f in fs]))


# --------------------------------------------------------------------------- probe


def test_probe_shapes_and_decode():
    torch.manual_seed(0)
    model = AttributeProbe(TINY_PROBE).eval()
    x, _ = _images(4)
    out = model(x)
    assert model.features(x).shape == (4, 32)
    for n in BINARY:
        assert out[n].shape == (4,)
    for n, k in CATEGORICAL.items():
        assert out[n].shape == (4, k)
    for n in CONTINUOUS:
        assert out[n].shape == (4,)
    pred = model.predict(x)
    assert pred["glasses"].dtype == torch.bool and pred["glasses_prob"].shape == (4,)
    assert pred["hair_color"].dtype == torch.long
    for n, (lo, hi) in CONTINUOUS.items():
        assert ((pred[n] >= lo - 1e-6) & (pred[n] <= hi + 1e-6)).all()
    rows = model.predict_factors(x)
    assert len(rows) == 4 and set(rows[0]) == set(FACTOR_NAMES)
    assert rows[0]["hair_color"] in FACTORS["hair_color"]["values"]
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(1, 3, 32, 32))


def test_probe_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    model = AttributeProbe(TINY_PROBE)
    x, y = _images(16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = probe_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0]


def _tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_probe_resume_matches_uninterrupted(tmp_path):
    s = ProbeTrainSettings(steps=4, batch_size=6, warmup=2, supersample=1, workers=0, precision="fp32",
                           config=TINY_PROBE, checkpoint_every=100, log_every=100)
    full = tmp_path / "full.safetensors"
    part = tmp_path / "part.safetensors"
    r = train_probe(s, full, log=lambda m: None)
    assert r["finished"] and r["step"] == 4
    r1 = train_probe(s, part, stop_after=2, log=lambda m: None)
    assert not r1["finished"] and r1["step"] == 2
    record = json.loads(part.with_suffix(".json").read_text())
    assert record["step"] == 2 and record["settings"]["steps"] == 4
    r2 = train_probe(s, part, log=lambda m: None)
    assert r2["finished"] and r2["examples"] == 24
    a, b = _tensors(full), _tensors(part)
    assert set(a) == set(b) and any(k.startswith("optim.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="different settings"):
        train_probe(ProbeTrainSettings(**{**s.__dict__, "lr": 1e-4}), part, log=lambda m: None)


def test_probe_export_load_evaluate(tmp_path):
    torch.manual_seed(0)
    model = AttributeProbe(TINY_PROBE).eval()
    folder = export_probe(model, tmp_path / "probe", info={"note": "test"})
    loaded = load_probe(folder)
    x, y = _images(8)
    with torch.no_grad():
        a, b = model.features(x), loaded.features(x)
    assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)  # fp16 weights
    assert json.loads((folder / "config.json").read_text())["note"] == "test"
    ev = evaluate_probe(loaded, images=(x, y))
    assert set(ev["factors"]) == set(FACTOR_NAMES) and isinstance(ev["passed"], bool)
    assert 0.0 <= ev["factors"]["glasses"]["accuracy"] <= 1.0 and "r2" in ev["factors"]["smile"]


def test_frechet_distance():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(400, 5)), g.normal(size=(400, 5))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b) < 0.3 < frechet_distance(a, b + 1.0)
    assert frechet_distance(a, b + 1.0) == pytest.approx(5.0, abs=0.5)


def test_not_trained_messages(tmp_path):
    with pytest.raises(ModelNotTrainedError, match="hspace toyworld train-probe"):
        load_probe(tmp_path / "nothing")
    with pytest.raises(ModelNotTrainedError, match="hspace toyworld train-clip"):
        load_toy_clip(tmp_path / "nothing")


# --------------------------------------------------------------------------- small CLIP


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy-tokenizer")
    write_tokenizer_files(folder)
    return folder


def test_tokenizer_covers_every_caption_word(tok_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    eos = tok.eos_token_id
    longest = 0
    for i in range(300):  # captions of a seed the vocabulary was not built from
        f = factors_for(11, i)
        for text in (caption_for(11, i, f), describe(f)):
            ids = tok(text)["input_ids"]
            longest = max(longest, len(ids))
            tokens = tok.convert_ids_to_tokens(ids)
            assert tokens[0] == "<|startoftext|>" and ids[-1] == eos and eos not in ids[1:-1], text
            assert tokens[1:-1] == [w + "</w>" for w in _WORD_RE.findall(text.lower())], text
    assert longest <= ClipSettings().max_length
    # unseen words fall back to bytes, never to an unknown token
    ids = tok("a zebra wearing a scarf")["input_ids"]
    assert eos not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "a zebra wearing a scarf"


def _tiny_clip(tok_dir):
    tok = build_tokenizer(tok_dir)
    model = build_clip_model(ClipSettings(**TINY_CLIP), tok, seed=0)
    return model, tok


def test_clip_batch_is_deterministic_with_twins():
    x1, t1, y1, m1 = clip_batch(0, 3, 8, twin_share=0.5, supersample=1)
    x2, t2, y2, m2 = clip_batch(0, 3, 8, twin_share=0.5, supersample=1)
    assert x1.shape == (8, 3, 64, 64) and len(t1) == 8 and y1.shape == (8, 14) and m1.shape == (8, 14)
    assert torch.equal(x1, x2) and t1 == t2 and torch.equal(y1, y2) and torch.equal(m1, m2)
    assert t1[0] != t1[1]  # a face and its one-factor twin get different captions
    # the labels are the rendered faces' own factors: a twin differs from its face in exactly one
    from hspace.toyworld.faces import factors_for, factors_to_vector

    assert torch.equal(y1[-1], torch.from_numpy(factors_to_vector(factors_for(0, 3 * 8 + 7))).float())
    names = ("smile", "eyes_open", "glasses", "hair_color", "hair_style", "skin_tone", "face_shape", "hat",
             "beard", "background")
    from hspace.toyworld.faces import vector_names

    cols = [vector_names().index(n) for n in names]
    changed = (y1[0, cols] != y1[1, cols]).nonzero().flatten().tolist()
    assert len(changed) == 1
    # both twin captions state the changed factor; pose is never stated
    assert bool(m1[0, cols[changed[0]]]) and bool(m1[1, cols[changed[0]]])
    assert not m1[:, [vector_names().index(n) for n in ("dx", "dy", "scale", "tilt")]].any()


def test_factor_loss_counts_only_stated_factors():
    from hspace.toyworld.clip_train import FactorHeads, factor_loss

    _, _, y, m = clip_batch(0, 1, 8, twin_share=0.5, supersample=1)
    heads = FactorHeads(16)
    out = heads(torch.nn.functional.normalize(torch.randn(8, 16), dim=-1))
    full = factor_loss(out, y, torch.ones_like(m))
    none = factor_loss(out, y, torch.zeros_like(m))
    part = factor_loss(out, y, m)
    assert none.item() == 0.0 and 0 < part.item() < full.item()
    # changing a label the mask hides does not change the loss
    y2 = y.clone()
    hidden = (~m).nonzero()
    if len(hidden):
        i, j = hidden[0].tolist()
        y2[i, j] = 1 - y2[i, j] if y2[i, j] in (0, 1) else y2[i, j]
        assert torch.equal(factor_loss(out, y2, m), part)


def test_hard_factor_weight_draws_more_hard_twins():
    from hspace.toyworld.clip_train import HARD_FACTORS, ZERO_SHOT_FACTORS, _twin_factor_probs

    p1, p3 = _twin_factor_probs(1.0), _twin_factor_probs(3.0)
    hard = [ZERO_SHOT_FACTORS.index(f) for f in HARD_FACTORS]
    assert np.allclose(p1, 1 / len(ZERO_SHOT_FACTORS))
    assert np.isclose(p3.sum(), 1.0) and np.allclose(p3[hard] / p3[0 if 0 not in hard else 1], 3.0)


def test_tiny_clip_loss_decreases(tok_dir):
    model, tok = _tiny_clip(tok_dir)
    x, texts, labels, stated = clip_batch(0, 0, 8, twin_share=0.5, supersample=1)
    from hspace.toyworld.clip_train import ClipTrainee

    trainee = ClipTrainee(model, aux=True)
    opt = torch.optim.AdamW(trainee.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = clip_loss(model, tok, x, texts, labels=labels, stated=stated, aux=trainee.aux, aux_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.3


def test_noisy_views_noise_a_share_of_the_images_reproducibly():
    x = torch.rand(400, 3, 8, 8) * 1.6 - 0.8
    y = noisy_views(x, seed=4, step=7, max_std=0.5, share=0.5)
    changed = (y != x).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    assert y.min() >= -1 and y.max() <= 1
    stds = (y - x)[changed].flatten(1).std(1)
    assert stds.max() < 0.5 * 1.1 and 0.15 < stds.mean() < 0.35  # uniform in [0, 0.5]: mean 0.25
    assert torch.equal(noisy_views(x, seed=4, step=7, max_std=0.5, share=0.5), y)  # resume sees the same
    assert not torch.equal(noisy_views(x, seed=4, step=8, max_std=0.5, share=0.5), y)
    assert torch.equal(noisy_views(x, seed=4, step=7, max_std=0.0, share=0.5), x)


def test_clip_resume_accepts_a_checkpoint_from_before_a_new_setting(tok_dir, tmp_path):
    """A checkpoint written before a setting existed resumes when the run keeps that setting's
    default, and is refused when the run changes it."""
    s = ClipSettings(**TINY_CLIP, steps=2, batch_size=6, warmup=1, supersample=1, workers=0, precision="fp32",
                     checkpoint_every=100, log_every=100)
    ck = tmp_path / "old.safetensors"
    train_clip(s, ck, tokenizer_dir=tok_dir, stop_after=1, log=lambda m: None)
    with safe_open(str(ck), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    from safetensors.torch import save_file

    record = json.loads(meta["record"])  # as written before noise_aug existed: no such settings
    for key in ("noise_aug", "noise_aug_share"):
        del record["settings"][key]
    meta["record"] = json.dumps(record)
    save_file(tensors, str(ck), metadata=meta)
    assert train_clip(s, ck, tokenizer_dir=tok_dir, log=lambda m: None)["finished"]
    with pytest.raises(ValueError, match="noise_aug"):
        train_clip(ClipSettings(**{**s.to_dict(), "noise_aug": 0.3}), ck, tokenizer_dir=tok_dir, log=lambda m: None)


def test_clip_resume_and_export_load(tok_dir, tmp_path):
    s = ClipSettings(**TINY_CLIP, steps=3, batch_size=6, warmup=1, supersample=1, workers=0, precision="fp32",
                     checkpoint_every=100, log_every=100)
    full = train_clip(s, tmp_path / "full.safetensors", tokenizer_dir=tok_dir, log=lambda m: None)
    train_clip(s, tmp_path / "part.safetensors", tokenizer_dir=tok_dir, stop_after=1, log=lambda m: None)
    part = train_clip(s, tmp_path / "part.safetensors", tokenizer_dir=tok_dir, log=lambda m: None)
    assert full["finished"] and part["finished"]
    a, b = _tensors(tmp_path / "full.safetensors"), _tensors(tmp_path / "part.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k

    model, tok = full["model"].eval(), full["tokenizer"]
    ref = TransformersCLIP.from_components(model, tok, name="ref")
    x, _ = _images(3)
    texts = ["a smiling face with glasses", "face, blond hair, eyes closed"]
    folder = export_clip(model, tok, tmp_path / "toy-clip", info={"zero_shot": {}}, fp16=False)
    enc = load_toy_clip(folder)
    assert isinstance(enc, TransformersCLIP) and enc.image_size == 64
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    from transformers import CLIPTokenizer

    only = tmp_path / "plain-tokenizer"  # the shipped plain CLIP files alone give the same tokens
    only.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (only / name).write_bytes((folder / name).read_bytes())
    plain = CLIPTokenizer.from_pretrained(str(only))
    assert plain(texts)["input_ids"] == tok(texts)["input_ids"]
    assert torch.allclose(enc.encode_image(x), ref.encode_image(x), atol=1e-5)
    assert torch.allclose(enc.encode_text(texts), ref.encode_text(texts), atol=1e-5)
    half = load_toy_clip(export_clip(model, tok, tmp_path / "toy-clip-16"))
    assert torch.allclose(half.encode_text(texts), ref.encode_text(texts), atol=5e-2)
    with safe_open(str(tmp_path / "toy-clip-16" / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor(next(k for k in f.keys() if k.endswith("weight"))).dtype == torch.float16


def test_zero_shot_evaluator_on_tiny_model(tok_dir):
    model, tok = _tiny_clip(tok_dir)
    enc = TransformersCLIP.from_components(model.eval(), tok, name="tiny")
    res = evaluate_zero_shot(enc, n=4, styles=("short", "full"), supersample=1)
    for style in ("short", "full"):
        acc = res["accuracy"][style]
        assert set(acc) == set(ZERO_SHOT_FACTORS)
        assert all(0.0 <= v <= 1.0 for v in acc.values())
        assert res["min"][style] == min(acc.values())


def test_cli_help_lists_training_commands():
    result = CliRunner().invoke(app, ["toyworld", "--help"])
    assert result.exit_code == 0
    assert "train-probe" in result.output and "train-clip" in result.output


def test_train_clip_command_records_the_zero_shot_of_the_exported_files(tmp_path):
    """The zero-shot numbers written beside the CLIP are those of the float16 files that ship
    (re-measured here from the folder), not of the float32 model before export."""
    out = tmp_path / "clip"
    res = CliRunner().invoke(app, ["toyworld", "train-clip", "--steps", "2", "--batch-size", "4", "--eval-n", "10",
                                   "--workers", "0", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "hspace_toy_clip.json").read_text())
    assert info["zero_shot"]["evaluated"] == "the exported files" and info["training"]["step"] == 2
    again = evaluate_zero_shot(load_toy_clip(out), n=10)
    assert info["zero_shot"]["accuracy"] == again["accuracy"]
    assert json.loads((tmp_path / "ck" / "eval.json").read_text())["accuracy"] == again["accuracy"]
