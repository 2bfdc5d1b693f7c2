"""Editing interval: official tables, the lookup rule, curve measurement and the cache."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from hspace.cache import weights_digest
from hspace.distances import FallbackDistance
from hspace.interval import (
    PRESETS,
    EditingCurves,
    IntervalWarning,
    choose_interval,
    curves_cache_path,
    get_or_measure_curves,
    load_lpips_table,
    measure_curves,
    pick_t_boost,
    pick_t_edit,
    preset_curves,
    resolve_preset,
)

# DESIGN.md 1.6: (t_edit, t_boost) of the official tables at cos_txt = 1
PAPER_VALUES = {
    "celeba": (538, 167),
    "church": (396, 293),
    "bedroom": (384, 221),
    "afhq": (482, 167),
    "metface": (396, 180),
}


def test_table_parsing_skips_998():
    for p in PRESETS.values():
        c = preset_curves(p.name)
        assert len(c.timesteps) == 998
        assert 998 not in c.timesteps
        assert c.timesteps[0] == 1 and c.timesteps[-1] == 999
        assert c.timesteps == sorted(c.timesteps)


def test_load_lpips_table_keys_are_t_not_row_index(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("1\t0.1\n2\t0.2\n999\t0.9\n")
    assert load_lpips_table(path) == {1: 0.1, 2: 0.2, 999: 0.9}
    path.write_text("1\t0.1\nbad line here\n")
    with pytest.raises(ValueError, match=":2:"):
        load_lpips_table(path)


def test_packaged_tables_match_reference_copies(reference_dir):
    import hspace.interval as mod

    for name in ("celeba_LPIPS_distance_x.tsv", "metface_LPIPS_distance_x0_t.tsv"):
        packaged = mod._table_file(name).read_bytes()
        assert packaged == (reference_dir / "lpips_tables" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(PAPER_VALUES))
def test_preset_values_match_paper(name):
    curves = preset_curves(name)
    assert (pick_t_edit(curves), pick_t_boost(curves)) == PAPER_VALUES[name]
    c = choose_interval(name)
    assert (c.t_edit, c.t_boost) == PAPER_VALUES[name]
    assert c.source == f"preset:{name}"
    assert c.edit_reached and c.boost_reached and c.note == ""


def test_preset_aliases():
    for alias, name in [("celeba_hq", "celeba"), ("CelebAHQ", "celeba"), ("lsun_church", "church"),
                        ("lsun-bedroom", "bedroom"), ("afhq_dog", "afhq"), ("metfaces", "metface")]:
        assert resolve_preset(alias) == name
    with pytest.raises(ValueError, match="presets"):
        resolve_preset("ffhq")


def test_lower_text_similarity_gives_longer_interval():
    for name in PRESETS:
        t1 = choose_interval(name, cos_txt=1.0).t_edit
        t08 = choose_interval(name, cos_txt=0.8).t_edit
        assert t08 < t1
    with pytest.raises(ValueError, match="cos_txt"):
        choose_interval("celeba", cos_txt=0.0)


def _toy_curves(strength, deficiency, distance_name="lpips-alex"):
    return EditingCurves(
        timesteps=list(range(0, 100 * len(strength), 100)),
        strength=strength,
        deficiency=deficiency,
        distance_name=distance_name,
        n_images=2,
        backbone_id="toy",
        n_steps=len(strength),
    )


def test_rule_is_smallest_t_at_or_above_threshold():
    # non-monotone: 0.34 at t=100 counts although the curve dips afterwards; >= (not >)
    c = _toy_curves([0.0, 0.34, 0.2, 0.5], [0.0, 0.5, 1.2, 1.3])
    assert pick_t_edit(c) == 100
    assert pick_t_boost(c) == 200


def test_unreached_threshold_returns_largest_t_and_warns():
    c = _toy_curves([0.0, 0.1, 0.2], [0.0, 0.3, 0.6], distance_name="fallback-msgrad-v1")
    with pytest.warns(IntervalWarning, match="largest timestep"):
        assert pick_t_edit(c) == 200
    with pytest.warns(IntervalWarning, match="largest timestep"):
        assert pick_t_boost(c) == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choice = choose_interval(c)
    assert (choice.t_edit, choice.t_boost) == (200, 200)
    assert not choice.edit_reached and not choice.boost_reached
    assert "never reached" in choice.note and "not LPIPS" in choice.note
    assert choice.source == "measured:fallback-msgrad-v1"


@pytest.fixture
def tiny_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 32, 32, generator=g) * 2 - 1


def test_measure_curves_on_tiny_backbone(tiny_backbone, tiny_images):
    curves = measure_curves(tiny_backbone, tiny_images, FallbackDistance(), n_steps=10, batch_size=2, progress=False)
    assert len(curves.timesteps) == len(curves.strength) == len(curves.deficiency) == 10
    assert curves.timesteps[0] == 0 and curves.timesteps[-1] == 999
    assert curves.n_images == 3 and curves.n_steps == 10 and curves.backbone_id == "test/tiny"
    assert curves.distance_name == "fallback-msgrad-v1"
    assert curves.deficiency[0] == 0.0  # x_t = x0 at t = 0
    assert curves.strength[0] < 0.05  # P_0 is nearly x0
    d = curves.deficiency
    assert d[-1] > d[len(d) // 2] > d[1] > d[0]
    rising = sum(b >= a for a, b in zip(d, d[1:]))
    assert rising >= len(d) - 2  # increasing overall


def test_measure_curves_batch_size_does_not_change_means(tiny_backbone, tiny_images):
    a = measure_curves(tiny_backbone, tiny_images, "fallback", n_steps=5, batch_size=1, progress=False)
    b = measure_curves(tiny_backbone, tiny_images, "fallback", n_steps=5, batch_size=3, progress=False)
    torch.testing.assert_close(torch.tensor(a.deficiency), torch.tensor(b.deficiency), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(a.strength), torch.tensor(b.strength), rtol=1e-4, atol=1e-4)


def test_curves_save_load_round_trip(tmp_path):
    c = _toy_curves([0.0, 0.4], [0.0, 1.3])
    path = c.save(tmp_path / "sub" / "c.json")
    assert EditingCurves.load(path) == c
    assert json.loads(path.read_text())["kind"] == "editing_curves"
    (tmp_path / "bad.json").write_text('{"kind": "other"}')
    with pytest.raises(ValueError, match="not an hspace editing-curves file"):
        EditingCurves.load(tmp_path / "bad.json")


def test_cache_round_trip(tiny_backbone, tiny_images, tmp_path, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path))
    path = curves_cache_path("test/tiny", weights_digest(tiny_backbone), "fallback-msgrad-v1", 5)
    assert path.parent.parent == tmp_path and not path.exists()
    with pytest.raises(ValueError, match="pass images"):
        get_or_measure_curves(tiny_backbone, None, "fallback", n_steps=5, progress=False)
    first = get_or_measure_curves(tiny_backbone, tiny_images, "fallback", n_steps=5, progress=False)
    assert path.is_file()
    again = get_or_measure_curves(tiny_backbone, None, "fallback", n_steps=5, progress=False)  # no images: from cache
    assert again == first
    choice = choose_interval(again)
    assert choice.source == "measured:fallback-msgrad-v1"
    assert choice.t_edit in first.timesteps and choice.t_boost in first.timesteps
    # the same name with other weights (a retrained model) has nothing cached
    with torch.no_grad():
        next(tiny_backbone.parameters()).view(-1)[0] += 0.1
    with pytest.raises(ValueError, match="pass images"):
        get_or_measure_curves(tiny_backbone, None, "fallback", n_steps=5, progress=False)


def test_cache_paths_differ_per_model_and_distance(tmp_path, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path))
    paths = {
        curves_cache_path("a/b", "w1", "lpips-alex", 40),
        curves_cache_path("a_b", "w1", "lpips-alex", 40),
        curves_cache_path("a/b", "w2", "lpips-alex", 40),
        curves_cache_path("a/b", "w1", "fallback-msgrad-v1", 40),
        curves_cache_path("a/b", "w1", "lpips-alex", 50),
    }
    assert len(paths) == 5
