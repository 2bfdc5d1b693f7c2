"""hspace.evaluation: each metric on a case with a known answer (tiny tensors, no network)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hspace.encoders import load_encoder
from hspace.evaluation import (
    clip_edit_metrics,
    TOY_TARGETS,
    ToyTarget,

    clip_score,
    directional_similarity,
    evaluate_edit,
    evaluate_toy_edit,
    format_report,
    frechet_distance,
    inception_status,
    kernel_inception_distance,
    match_toy_target,
    pixel_metrics,
    resolve_toy_target,
    ssim,
)
from hspace.evaluation.realism import InceptionFeatures, compare_feature_sets
from hspace.toyworld import factors_for, image_to_tensor, render_array, with_factor
from hspace.toyworld.probe import load_probe, probe_fid
from hspace.toyworld.probe import frechet_distance as probe_frechet_distance


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 2, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=_gen(seed)) * 2 - 1


@pytest.fixture(scope="module")
def probe():
    return load_probe()


@pytest.fixture(scope="module")
def tiny_clip():
    return load_encoder("tiny-random-clip")


def _render(factors) -> torch.Tensor:
    return torch.stack([image_to_tensor(render_array(f)) for f in factors])


@pytest.fixture(scope="module")
def glasses_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight toy faces without glasses and the same faces with glasses (the generator flips it)."""
    fs = [with_factor(factors_for(11, i), glasses=False) for i in range(8)]
    return _render(fs), _render([with_factor(f, glasses=True) for f in fs])


# --------------------------------------------------------------------------- pixel metrics


def test_identical_images_ssim_one_psnr_inf_and_the_distance_is_named():
    x = _images()
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-9)
    r = pixel_metrics(x, x, distance="fallback")
    assert r["per_image"]["psnr"] == [math.inf, math.inf]
    assert r["mean"]["psnr"] is None and r["n_identical"] == 2          # inf excluded from the mean, counted
    assert r["per_image"]["perceptual"] == [0.0, 0.0]
    assert r["lpips"] is None
    assert r["perceptual_distance"]["name"] == "fallback-msgrad-v1" and r["perceptual_distance"]["is_lpips"] is False
    assert "not LPIPS" in r["perceptual_distance"]["note"]


def test_auto_distance_says_which_one_ran():
    x = _images()
    r = pixel_metrics(x, x.flip(-1), distance="auto")
    info = r["perceptual_distance"]
    assert (r["lpips"] is None) == (not info["is_lpips"])
    if not info["is_lpips"]:  # this machine: no LPIPS weights
        assert "LPIPS is not available" in info["note"]


def test_psnr_and_ssim_known_values():
    x = torch.zeros(1, 3, 16, 16)
    assert pixel_metrics(x, x + 0.2, distance="fallback")["mean"]["psnr"] == pytest.approx(20.0)  # 10 log10(4 / 0.04)
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * data_range)^2
    a, b, c1 = 0.5, -0.5, (0.01 * 2.0) ** 2
    got = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert float(got[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


def test_ssim_refuses_bad_shapes_and_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_images(1, side=8), _images(1, side=8))
    with pytest.raises(ValueError, match="same shape"):
        ssim(_images(1, side=16), _images(1, side=12))


# --------------------------------------------------------------------------- realism


def test_frechet_distance_known_answers():
    a = torch.randn(2000, 4, generator=_gen(1), dtype=torch.float64)
    shift = torch.tensor([3.0, 0.0, -4.0, 0.0], dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + shift) == pytest.approx(25.0, abs=1e-6)             # equal covariances: |shift|^2
    c = a - a.mean(0)  # zero mean: FD(c, 2c) = tr(S + 4S - 2 (4 S^2)^(1/2)) = tr(S)
    assert frechet_distance(c, 2 * c) == pytest.approx(float(torch.cov(c.T).trace()), rel=1e-9)
    b = torch.randn(2000, 4, generator=_gen(2), dtype=torch.float64)                  # independent samples
    assert frechet_distance(a, b + shift) == pytest.approx(25.0, abs=0.5)


def test_probe_module_uses_the_one_frechet_implementation(probe):
    g = np.random.default_rng(0)
    a, b = g.normal(size=(50, 3)), g.normal(size=(60, 3)) + 1.0
    assert probe_frechet_distance(a, b) == frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    x = _render([factors_for(3, i) for i in range(4)])
    assert probe_fid(probe, x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_rejects_bad_sets():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


def test_kid_identical_set_closed_form_and_shift():
    x = torch.randn(40, 8, generator=_gen(3), dtype=torch.float64)
    # one subset = the whole set: the unbiased MMD^2 of a set with itself has a closed form (not 0:
    # the cross term also pairs each vector with itself)
    k = (x @ x.T / 8 + 1) ** 3
    m = len(x)
    expected = 2 * float(k.sum() - k.trace()) / (m * (m - 1)) - 2 * float(k.sum()) / m**2
    r = kernel_inception_distance(x, x, subsets=3, subset_size=1000)
    assert r.subset_size == 40 and r.mean == pytest.approx(expected, rel=1e-9) and r.std == pytest.approx(0.0, abs=1e-12)
    # same distribution vs a shifted one
    a, b = (torch.randn(300, 8, generator=_gen(s), dtype=torch.float64) for s in (4, 5))
    same = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    shifted = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same.mean) < 0.05 * shifted.mean and shifted.mean > 1.0


def test_kid_small_sets_are_reproducible_and_leave_the_global_rng_alone():
    a, b = torch.randn(3, 4, generator=_gen(6)), torch.randn(5, 4, generator=_gen(7))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    r1 = kernel_inception_distance(a, b, subsets=5, subset_size=50, seed=1)
    assert torch.rand(1) == before
    r2 = kernel_inception_distance(a, b, subsets=5, subset_size=50, seed=1)
    assert r1 == r2 and r1.subset_size == 3 and math.isfinite(r1.mean)
    paired = compare_feature_sets(a, a + 1, paired=True)
    assert paired["kid_mean"] is None and "paired" in paired["kid_note"] and paired["fd"] == pytest.approx(4.0)


def test_inception_without_weights_says_so(tmp_path):
    usable, problems = inception_status(tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    assert usable is False and any("no weights at" in p for p in problems)
    with pytest.raises(FileNotFoundError, match="Inception features are not available"):
        InceptionFeatures(tmp_path / "nothing.pth")


# --------------------------------------------------------------------------- CLIP


class ColourEncoder:
    """A tiny transparent ImageTextEncoder: an image's embedding is its mean RGB in [0, 1]; the
    words 'red', 'green', 'blue' embed to the RGB axes. Its geometry makes S_dir computable by hand."""

    name = "colour-encoder"
    _axes = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).mean(dim=(2, 3))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self._axes[t] for t in texts])


def _solid(rgb: tuple[float, float, float], n: int = 2) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, 8, 8) * 2 - 1


def test_directional_similarity_known_geometry():
    enc = ColourEncoder()
    blue, red, green = _solid((0, 0, 1)), _solid((1, 0, 0)), _solid((0, 1, 0))
    assert directional_similarity(enc, blue, red, "blue", "red").tolist() == pytest.approx([1.0, 1.0])
    assert directional_similarity(enc, red, blue, "blue", "red").tolist() == pytest.approx([-1.0, -1.0])
    # blue -> green moves along (0, 1, -1); the text direction (1, 0, -1): cos = 1/2
    assert directional_similarity(enc, blue, green, "blue", "red").tolist() == pytest.approx([0.5, 0.5])
    assert clip_score(enc, red, "red").tolist() == pytest.approx([1.0, 1.0])
    assert clip_score(enc, blue, "red").tolist() == pytest.approx([0.0, 0.0])


def test_unchanged_images_give_zero_not_nan(tiny_clip):
    x = _images(2, side=32)
    s = directional_similarity(tiny_clip, x, x, "face", "smiling face")
    assert s.tolist() == [0.0, 0.0]
    r = clip_edit_metrics(tiny_clip, x, x, "face", "smiling face")
    assert r["n_unchanged"] == 2 and r["directional_similarity"]["mean"] == 0.0
    assert r["meaningful"] is False and "RANDOM" in r["note"]
    cs = r["clip_score"]
    assert cs["delta"] == pytest.approx(0.0, abs=1e-9) and cs["edited_x100"] == pytest.approx(100 * max(cs["edited"], 0.0))
    with pytest.raises(ValueError, match="same embedding"):
        directional_similarity(tiny_clip, x, x.flip(-1), "face", "face")


def test_clip_metrics_on_the_tiny_clip_is_bounded(tiny_clip):
    x, y = _images(3, side=32, seed=1), _images(3, side=32, seed=2)
    r = clip_edit_metrics(tiny_clip, x, y, "face", "smiling face")
    assert all(-1.0 <= v <= 1.0 for v in r["directional_similarity"]["per_image"])
    assert r["n_unchanged"] == 0 and r["encoder"] == "tiny-random-clip"
    no_text = clip_edit_metrics(tiny_clip, x, y, None, None)
    assert no_text["directional_similarity"] is None and no_text["clip_score"] is None
    assert len(no_text["image_similarity"]["per_image"]) == 3


# --------------------------------------------------------------------------- toy factors


def test_glasses_flipped_by_the_generator_is_a_full_success(probe, glasses_pair):
    src, edt = glasses_pair
    r = evaluate_toy_edit(probe, src, edt, "glasses")
    assert r["success"] == {"rate": 1.0, "n_eligible": 8, "n_success": 8, "n_already": 0, "already_kept": None}
    assert r["target_confusion"] == {"False": {"True": 8}}
    assert set(r["preservation"]) == {"smile", "eyes_open", "hair_color", "hair_style", "skin_tone", "face_shape",
                                      "hat", "beard", "background"}
    assert all(p["rate"] >= 0.9 for p in r["preservation"].values())
    assert set(r["pose_mean_abs_delta"]) == {"dx", "dy", "scale", "tilt"}
    assert r["passes"] is True and r["failing"] == []


def test_negative_strength_reverses_and_no_edit_fails(probe, glasses_pair):
    src, edt = glasses_pair
    back = evaluate_toy_edit(probe, edt, src, "glasses", strength=-0.5)
    assert back["target"]["value"] is False and back["success"]["rate"] == 1.0 and back["passes"] is True
    none = evaluate_toy_edit(probe, src, src, "glasses")
    assert none["success"]["rate"] == 0.0 and none["passes"] is False and "success 0%" in none["failing"][0]
    # every source already has glasses: nothing eligible, cannot tell
    already = evaluate_toy_edit(probe, edt, edt, "glasses")
    assert already["success"]["rate"] is None and already["success"]["already_kept"] == 1.0 and already["passes"] is None


def test_smile_rules(probe):
    fs = [with_factor(factors_for(12, i), smile=-0.2) for i in range(4)]
    src = _render(fs)
    up = evaluate_toy_edit(probe, src, _render([with_factor(f, smile=0.8) for f in fs]), "smiling")
    assert up["target"]["describe"] == "smile up" and up["success"]["rate"] == 1.0 and up["target_mean_delta"] > 0.6
    # the same change scored as the hair-colour target: smile is then a preserved factor, and it moved
    other = evaluate_toy_edit(probe, src, _render([with_factor(f, smile=0.8) for f in fs]), "blond")
    assert other["preservation"]["smile"]["rate"] == 0.0 and other["passes"] is False
    down = evaluate_toy_edit(probe, src, _render([with_factor(f, smile=-0.9) for f in fs]), "smiling", strength=-1)
    assert down["target"]["describe"] == "smile down" and down["success"]["rate"] == 1.0


def test_targets_are_resolved_and_matched():
    assert set(TOY_TARGETS) == {"smiling", "glasses", "blond", "eyes_closed", "hat", "beard"}
    assert resolve_toy_target("blond", -1) == ToyTarget("blond", "hair_color", "blond", negated=True)
    assert resolve_toy_target("eyes_closed", -1).value is True
    assert resolve_toy_target(("hair_style", "long")).describe() == "hair_style = long"
    with pytest.raises(ValueError, match="known: smiling"):
        resolve_toy_target("sunburn")
    with pytest.raises(ValueError, match="target factor"):
        resolve_toy_target(("tilt", 3.0))
    assert match_toy_target("a smiling face") == "smiling"
    assert match_toy_target(None, "", "glasses_v2") == "glasses"
    assert match_toy_target("a face with blonde hair") == "blond"
    assert match_toy_target("a face with a hat and a beard") is None  # two targets named: ambiguous


# --------------------------------------------------------------------------- the whole report


def test_evaluate_edit_has_every_section(probe, tiny_clip, glasses_pair):
    src, edt = glasses_pair
    r = evaluate_edit(src, edt, names=[f"f{i}" for i in range(8)], source_text="face", target_text="face with glasses",
                      encoder=tiny_clip, distance="fallback", probe=probe, toy_target="glasses", real="toy", n_real=12,
                      kid_subsets=5)
    assert {"summary", "per_image", "image_metrics", "clip", "realism", "toy_factors"} <= set(r)
    ex = r["realism"]["extractors"]
    assert ex["probe"]["available"] and ex["clip"]["available"]
    assert ex["inception"]["available"] is False and ex["inception"]["reason"].startswith("not available (no weights")
    assert ex["probe"]["edited_vs_real"]["n_b"] == 12 and ex["probe"]["edited_vs_source"]["kid_mean"] is None
    assert r["summary"]["toy_success_rate"] == 1.0 and r["summary"]["toy_passes"] is True
    assert r["per_image"][0]["name"] == "f0" and r["per_image"][0]["lpips"] is None
    table = format_report(r)
    assert "NOT LPIPS" in table and "RANDOM weights" in table and "-> PASS" in table


def test_evaluate_edit_non_toy_images_skip_toy_sections(probe):
    x = _images(3, side=32)
    r = evaluate_edit(x, x.flip(-1), probe=probe, toy_target="glasses", real="toy", distance="fallback")
    assert "64x64" in r["toy_factors"]["skipped"] and "64x64" in r["realism"]["extractors"]["probe"]["reason"]
    assert r["clip"] == {"skipped": "no CLIP encoder given"} and r["realism"]["reference"]["n"] == 0
