"""The built-in offline world: procedural faces, their factors, captions, datasets and the CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hspace.cli.main import app
from hspace.toyworld import (
    FACE_SHAPES,
    FACTOR_NAMES,
    FACTORS,
    HAIR_COLORS,
    HAIR_STYLES,
    SKIN_TONES,
    BACKGROUNDS,
    FaceFactors,
    ToyFaces,
    ToyFaceStream,
    caption_for,
    caption_with_mentions,
    describe,
    factors_for,
    factors_to_vector,
    render,
    render_array,
    vector_names,
    vector_to_factors,
    with_factor,
)
from hspace.toyworld.captions import KEYWORDS, smile_band
from hspace.toyworld.faces import FRAME_ZOOM

N = 500


@pytest.fixture(scope="module")
def population() -> list[FaceFactors]:
    return [factors_for(0, i) for i in range(N)]


def upright(**kw) -> FaceFactors:
    """A face in the neutral pose (so regions can be given in pixel rows/columns)."""
    base = dict(smile=0.0, eyes_open=True, glasses=False, hair_color="brown", hair_style="short", skin_tone=1,
                face_shape="round", hat=False, beard=False, background="blue", dx=0.0, dy=0.0, scale=1.0, tilt=0.0)
    base.update(kw)
    return FaceFactors(**base)


def changed(a: FaceFactors, b: FaceFactors, thresh: int = 12) -> np.ndarray:
    """Boolean [64, 64]: pixels whose colour moves by more than ``thresh`` in some channel."""
    x, y = render_array(a).astype(int), render_array(b).astype(int)
    return np.abs(x - y).max(axis=2) > thresh


def frac_inside(mask: np.ndarray, rows: slice, cols: slice = slice(None)) -> float:
    total = mask.sum()
    assert total > 0, "the change is invisible"
    return mask[rows, cols].sum() / total


# --------------------------------------------------------------------------- determinism, shape


def test_render_size_and_mode():
    img = render(factors_for(0, 0))
    assert img.mode == "RGB" and img.size == (64, 64)
    assert render(factors_for(0, 0), size=32, supersample=3).size == (32, 32)


def test_deterministic_per_seed_and_index():
    a = render(factors_for(5, 17)).tobytes()
    assert a == render(factors_for(5, 17)).tobytes()
    assert factors_for(5, 17) == factors_for(5, 17)
    assert a != render(factors_for(5, 18)).tobytes()
    assert a != render(factors_for(6, 17)).tobytes()
    assert caption_for(5, 17, factors_for(5, 17)) == caption_for(5, 17, factors_for(5, 17))


def test_factor_validation_and_vector_roundtrip():
    f = factors_for(0, 3)
    vec = factors_to_vector(f)
    assert vec.dtype == np.float32 and vec.shape == (len(vector_names()),) == (len(FACTOR_NAMES),)
    assert vector_to_factors(vec) == FaceFactors(**{k: (np.float32(v).item() if isinstance(v, float) else v)
                                                    for k, v in f.to_dict().items()})
    oh = factors_to_vector(f, one_hot=True)
    names = vector_names(one_hot=True)
    assert oh.shape == (len(names),)
    assert oh[names.index(f"hair_color={f.hair_color}")] == 1.0
    assert sum(oh[i] for i, n in enumerate(names) if n.startswith("hair_color=")) == 1.0
    assert FaceFactors.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    with pytest.raises(ValueError):
        FaceFactors(hair_color="green")
    with pytest.raises(ValueError):
        FaceFactors(smile=1.5)
    with pytest.raises(ValueError):
        with_factor(f, moustache=True)


# --------------------------------------------------------------------------- distribution


def test_every_factor_varies(population):
    for name in ("hair_color", "hair_style", "skin_tone", "face_shape", "background"):
        assert len({getattr(f, name) for f in population}) == len(FACTORS[name]["values"]), name
    for name in ("eyes_open", "glasses", "hat", "beard"):
        assert {getattr(f, name) for f in population} == {False, True}, name
    for name in ("smile", "dx", "dy", "scale", "tilt"):
        values = np.array([getattr(f, name) for f in population])
        lo, hi = FACTORS[name]["range"]
        assert values.min() >= lo and values.max() <= hi, name
        assert values.std() > 0.2 * (hi - lo), name  # uniform: std = 0.29 (hi - lo)
    # and images differ in every factor: no two of the first 50 images are identical
    assert len({render(f).tobytes() for f in population[:50]}) == 50


def test_marginals_are_sane(population):
    for name in ("eyes_open", "glasses", "hat", "beard"):
        p = np.mean([getattr(f, name) for f in population])
        assert 0.25 <= p <= 0.75, (name, p)
    for name, values in (("hair_color", HAIR_COLORS), ("hair_style", HAIR_STYLES), ("face_shape", FACE_SHAPES),
                         ("skin_tone", SKIN_TONES), ("background", BACKGROUNDS)):
        counts = Counter(getattr(f, name) for f in population)
        expected = N / len(values)
        assert all(0.6 * expected <= c <= 1.4 * expected for c in counts.values()), (name, counts)
    smiles = np.array([f.smile for f in population])
    assert 0.35 <= (smiles > 0).mean() <= 0.65


# --------------------------------------------------------------------------- one factor at a time


def test_with_factor_keeps_everything_else():
    f = factors_for(0, 11)
    g = with_factor(f, glasses=not f.glasses)
    assert g.glasses != f.glasses
    assert all(getattr(g, n) == getattr(f, n) for n in FACTOR_NAMES if n != "glasses")
    assert g.pose == f.pose


EYE_ROWS = slice(26, 46)  # the eye band of an upright face in the close-up (eyes at row ~35)
MOUTH = (slice(45, 64), slice(14, 50))  # around the mouth (row ~54)


@pytest.mark.parametrize("style", HAIR_STYLES)
def test_glasses_change_the_eye_band(style):
    f = upright(hair_style=style)
    mask = changed(f, with_factor(f, glasses=True))
    assert mask.sum() > 200  # the close-up makes the rims a large feature
    assert frac_inside(mask, EYE_ROWS) > 0.95


def test_eyes_change_only_the_eyes():
    f = upright(glasses=True)
    mask = changed(f, with_factor(f, eyes_open=False))
    assert mask.sum() > 100
    assert frac_inside(mask, EYE_ROWS, slice(10, 54)) == 1.0


def test_smile_changes_only_the_mouth_and_follows_the_value():
    f = upright(beard=True)
    frown, flat, grin = (with_factor(f, smile=s) for s in (-1.0, 0.0, 1.0))
    for other in (frown, grin):
        mask = changed(flat, other)
        assert mask.sum() > 80
        assert frac_inside(mask, *MOUTH) == 1.0
    # the mouth's ink: the corners sit above the centre when smiling, below it when frowning
    def corner_minus_centre(face: FaceFactors) -> float:
        dark = render_array(face).astype(int).sum(axis=2) < 200
        rows = np.arange(64)[:, None]
        def mean_row(cols: slice) -> float:
            m = dark[MOUTH[0], cols]
            return float((rows[MOUTH[0]] * m).sum() / m.sum())
        return 0.5 * (mean_row(slice(22, 26)) + mean_row(slice(38, 42))) - mean_row(slice(30, 34))
    plain = upright()
    grin, frown = with_factor(plain, smile=1.0), with_factor(plain, smile=-1.0)
    assert corner_minus_centre(grin) < -1.0 < 1.0 < corner_minus_centre(frown)
    assert abs(corner_minus_centre(plain)) < 0.5


@pytest.mark.parametrize("style", HAIR_STYLES)
def test_hair_colour_changes_hair_not_the_mouth(style):
    f = upright(hair_style=style, hair_color="black")
    for colour in ("blond", "red", "grey"):
        x, y = render_array(f).astype(int), render_array(with_factor(f, hair_color=colour)).astype(int)
        diff = np.abs(x - y).max(axis=2)
        assert (diff > 12).sum() > 100, (style, colour)  # a clearly visible hair region
        assert diff[40:60, 22:43].max() == 0  # nose, mouth and below, the mouth's columns: untouched


def test_hat_is_above_and_beard_is_below():
    f = upright()
    hat = changed(f, with_factor(f, hat=True))
    assert hat.sum() > 150
    assert frac_inside(hat, slice(0, 18)) > 0.95
    beard = changed(f, with_factor(f, beard=True))
    assert beard.sum() > 150
    assert frac_inside(beard, slice(42, 64)) > 0.95
    # the mouth stays visible inside the beard: its ink is still there
    grin = with_factor(f, smile=1.0, beard=True, hair_color="black")
    assert changed(grin, with_factor(grin, smile=-1.0))[MOUTH].sum() > 15


def test_background_and_pose():
    f = upright()
    bg = changed(f, with_factor(f, background="maroon"))
    assert bg[0:6].all()  # the top rows are background
    assert not bg[34, 24:40].any()  # the face is not
    tilted = with_factor(f, tilt=8.0)
    assert changed(f, tilted).sum() > 100
    shifted = render_array(with_factor(f, dx=2 / (64 * FRAME_ZOOM)))  # 2 px right
    assert np.abs(shifted[:, 12:52].astype(int) - render_array(f)[:, 10:50].astype(int)).max() < 40


def test_closeup_framing_enlarges_every_feature(monkeypatch):
    import hspace.toyworld.faces as faces

    f = upright()
    edits = {"glasses": True, "smile": 1.0}

    def masks(zoom: float, centre_y: float) -> dict[str, np.ndarray]:
        monkeypatch.setattr(faces, "FRAME_ZOOM", zoom)
        monkeypatch.setattr(faces, "FRAME_CENTER_Y", centre_y)
        return {k: changed(f, with_factor(f, **{k: v})) for k, v in edits.items()}

    before = masks(1.0, faces._CY)  # the framing of the models shipped before the close-up
    after = masks(1.6, 0.6)
    for k in edits:
        assert 1.4 < after[k].sum() / before[k].sum() < 3.2, k  # 1.6x longer lines, up to 1.6 ** 2 the area
    mouth_rows = np.nonzero(after["smile"].any(axis=1))[0]
    assert mouth_rows.min() > 45  # the mouth moved down with the zoom (row ~45 before, ~54 now)


# --------------------------------------------------------------------------- datasets


def test_map_dataset_items():
    ds = ToyFaces(6, seed=2)
    item = ds[3]
    img = item["image"]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert img.min() >= -1.0 and img.max() <= 1.0 and img.min() < -0.5 and img.max() > 0.5
    f = factors_for(2, 3)
    assert torch.equal(item["labels"], torch.from_numpy(factors_to_vector(f)))
    assert item["caption"] == caption_for(2, 3, f) and item["index"] == 3
    expected = torch.from_numpy(np.array(render(f))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(img, expected)
    assert torch.equal(ds[-1]["image"], ds[5]["image"])
    with pytest.raises(IndexError):
        ds[6]
    batch = next(iter(torch.utils.data.DataLoader(ToyFaces(4, return_factors=True), batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4
    assert batch["labels"].shape == (4, len(ds.label_names))
    assert batch["factors"]["hair_color"] == [factors_for(0, i).hair_color for i in range(4)]


def test_stream_matches_map_dataset_and_is_worker_safe():
    ds = ToyFaces(8, seed=1)
    stream = iter(ToyFaceStream(seed=1))
    for i in range(3):
        assert torch.equal(next(stream)["image"], ds[i]["image"])
    loader = torch.utils.data.DataLoader(ToyFaceStream(seed=1, stop=8, batch_size=2), batch_size=None, num_workers=2)
    indices = [int(i) for batch in loader for i in batch["index"]]
    assert indices == list(range(8))
    batches = list(torch.utils.data.DataLoader(ToyFaceStream(seed=1, stop=8, batch_size=2), batch_size=None))
    assert torch.equal(batches[3]["image"][1], ds[7]["image"])


# --------------------------------------------------------------------------- captions


HAIR_WORDS = {"black": ("black",), "brown": ("brown",), "blond": ("blond",), "red": ("red", "ginger"),
              "grey": ("grey", "gray")}


def test_captions_mention_what_they_describe(population):
    rng = np.random.default_rng(0)
    for f in population[:300]:
        text, mention = caption_with_mentions(f, rng)
        assert text and mention
        if "smile" in mention:
            band = smile_band(f.smile)
            key = "smile_negative" if band < 2 else ("smile_neutral" if band == 2 else "smile_positive")
            assert any(w in text for w in KEYWORDS[key]), (f.smile, text)
        if "glasses" in mention:
            has = any(w in text for w in ("glasses", "spectacles"))
            assert has and (("no glasses" in text or "without glasses" in text) != f.glasses), text
        if "eyes" in mention:
            assert any(w in text for w in (("open", "awake") if f.eyes_open else ("closed", "shut"))), text
        if "hair_color" in mention:
            assert any(w in text for w in HAIR_WORDS[f.hair_color]), text
        if "hair_style" in mention:
            assert f.hair_style in text, text
        if "hat" in mention:
            assert ("hat" in text or "bareheaded" in text) and (("no hat" in text or "without a hat" in text
                                                                 or "bareheaded" in text) != f.hat), text
        if "beard" in mention:
            assert ("beard" in text or "shaven" in text) and (
                ("no beard" in text or "beardless" in text or "shaven" in text) != f.beard), text
        if "background" in mention:
            assert "background" in text


def test_captions_vary_in_wording():
    f = factors_for(0, 4)
    texts = {caption_with_mentions(f, np.random.default_rng(s))[0] for s in range(40)}
    assert len(texts) >= 20
    assert any(t.startswith(("a ", "an ")) for t in texts) and any(", " in t and " with " not in t for t in texts)
    full = describe(f)
    for word in (f.hair_color, f.hair_style, f.face_shape, f.background, "background"):
        assert word in full
    g = upright(glasses=True, hat=True, beard=True, eyes_open=False, smile=0.9, hair_color="blond")
    full = describe(g)
    for phrase in ("glasses", "a hat", "a beard", "eyes closed", "grinning", "blond"):
        assert phrase in full


# --------------------------------------------------------------------------- CLI


def test_cli_sample_writes_pngs_labels_and_factors(tmp_path):
    out = tmp_path / "faces"
    runner = CliRunner()
    result = runner.invoke(app, ["toyworld", "sample", "--n", "6", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(6)]
    lines = (out / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 6
    rec = json.loads(lines[4])
    assert rec["file"] == "000004.png" and rec["index"] == 4 and rec["seed"] == 3
    assert set(FACTOR_NAMES) <= set(rec) and rec["caption"] and rec["description"]
    f = FaceFactors.from_dict(rec)
    assert f == factors_for(3, 4)
    assert np.array_equal(np.asarray(Image.open(out / "000004.png").convert("RGB")), render_array(f))
    meta = json.loads((out / "factors.json").read_text())
    assert set(meta["factors"]) == set(FACTOR_NAMES)
    assert meta["factors"]["hair_color"]["values"] == list(HAIR_COLORS)
    assert meta["factors"]["smile"]["range"] == [-1.0, 1.0]

    again = runner.invoke(app, ["toyworld", "sample", "--n", "2", "--out", str(out)])
    assert again.exit_code == 2
    assert [ln for ln in again.stderr.splitlines() if ln.startswith("error: ")][0].count("--overwrite") == 1
    ok = runner.invoke(app, ["toyworld", "sample", "--n", "2", "--out", str(out), "--overwrite", "--size", "32"])
    assert ok.exit_code == 0, ok.output
    assert Image.open(out / "000000.png").size == (32, 32)
    assert len((out / "labels.jsonl").read_text().splitlines()) == 2


def test_cli_help_lists_toyworld():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "toyworld" in result.output
    result = CliRunner().invoke(app, ["toyworld", "sample", "--help"])
    assert result.exit_code == 0 and "labels.jsonl" in result.output
