"""`hspace analyze` and hspace.analysis: every section end to end on tiny-random, and the
experiments that have a known answer (global dh: cosine 1 across t; strength 0: the
reconstruction exactly; symmetric step moves less than asymmetric on the tame denoiser)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hspace.analysis import (
    SECTION_ORDER,
    AnalysisConfig,
    cosine_matrix,
    linear_fit,
    run_analysis,
    target_for_name,
)
from hspace.analysis.factors import Target, success_rate
from hspace.analysis.runs import Recording, reverse
from hspace.shipped import shipped_direction_files
from hspace.backbones.registry import load_backbone
from hspace.cli.main import app
from hspace.directions import GlobalDirection, ImplicitDirection, load_direction, save_direction
from hspace.sampler import Phases, generate
from hspace.toyworld.probe import load_probe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(n_images=3, n_steps=4, n_inv_steps=4, strengths=(-1.0, 0.0, 1.0), noise_sizes=(0.1, 1.0),
            t_edit_fractions=(0.5,), t_boost_fractions=(0.0,), n_reference=8)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path_factory.getbasetemp() / "hspace-cache"))


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random")


@pytest.fixture(scope="module")
def direction_files(tiny, tmp_path_factory) -> dict[str, Path]:
    """A random implicit f_t named like a smile edit, and a random global dh, saved as files."""
    root = tmp_path_factory.mktemp("dirs")
    torch.manual_seed(0)
    f = ImplicitDirection.for_backbone(tiny, "ddpm", source_text="face", target_text="smiling face")
    g = GlobalDirection.for_backbone(tiny, 0.5 * torch.randn(tiny.h_shape, generator=torch.Generator().manual_seed(1)),
                                     target_text="face with glasses")
    return {"smiling": save_direction(f, root / "smiling.safetensors"), "glasses": save_direction(g, root / "glasses.safetensors")}


@pytest.fixture(scope="module")
def analysis(tiny, direction_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    dirs = [(name, load_direction(p, backbone=tiny), 1.0, str(p)) for name, p in direction_files.items()]
    result = run_analysis(tiny, load_probe(), dirs, AnalysisConfig.quick_preset(**TINY), out, random_weights=True)
    return out, result


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------- end to end


def test_every_section_has_a_line_a_plot_and_numbers(analysis):
    out, result = analysis
    report = (out / "report.md").read_text()
    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "hspace-analysis" and data["format_version"] == 1
    assert [s.key for s in result.sections] == [k for k, _ in SECTION_ORDER]
    for s in result.sections:
        assert f"## {s.number}. {s.title}" in report
        assert f"]({s.plot_file})" in report
        png = out / s.plot_file
        assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
        entry = data["sections"][s.key]
        assert entry["status"] == "measured" and entry["summary"] and entry["plot"] == s.plot_file
    assert "random weights" in report


def test_json_numbers_are_finite_where_they_must_be(analysis):
    _, result = analysis
    sec = {s.key: s.data for s in result.sections}
    for name, v in sec["homogeneity"]["per_direction"].items():
        for k in ("own_change_mean", "borrowed_change_mean", "mean_abs_gap", "dh_cosine_donor_vs_others"):
            assert _finite(v[k]), (name, k, v[k])
    for v in sec["linearity"]["per_direction"].values():
        assert _finite(v["slope"]) and _finite(v["intercept"])
        assert all(_finite(r["score_change_mean"]) and _finite(r["image_change"]) for r in v["rows"])
    for row in sec["robustness"]["rows"]:
        for space in ("h", "eps"):
            assert _finite(row[space]["probe_fid"]) and 0 <= row[space]["preservation"] <= 1
    for v in sec["consistency"]["per_direction"].values():
        assert _finite(v["mean_offdiag_cosine"]) and _finite(v["global_change_mean"])
    for v in sec["asymmetry"]["per_direction"].values():
        assert all(_finite(v[m]["image_change"]) for m in ("asymmetric", "symmetric", "eps"))
    iv = sec["interval"]
    assert iv["automatic"]["t_edit"] in iv["grid"] and iv["t_edit_sweep"] and iv["t_boost_sweep"]
    assert all(_finite(r["probe_fid"]) for r in iv["t_edit_sweep"] + iv["t_boost_sweep"])
    pair = sec["composition"]["pairs"][0]
    assert {pair["a"], pair["b"]} == {"smiling", "glasses"} and _finite(pair["a_change_combined"])


def test_targets_come_from_names_and_texts(analysis):
    _, result = analysis
    targets = {d["name"]: d["target"] for d in result.run["directions"]}
    assert (targets["smiling"]["factor"], targets["smiling"]["value"]) == ("smile", "up")
    assert (targets["glasses"]["factor"], targets["glasses"]["value"]) == ("glasses", True)
    assert target_for_name("x", "a face with a hat") == Target("hat", True, target_for_name("x", "a face with a hat").source)
    assert target_for_name("mystery", None) is None


# --------------------------------------------------------------------------- known answers


def test_known_answers_in_the_run(analysis):
    _, result = analysis
    sec = {s.key: s.data for s in result.sections}
    # strength 0 runs the edit path with dh = 0: exactly the reconstruction
    for v in sec["linearity"]["per_direction"].values():
        assert v["zero_strength_max_abs_diff"] == 0.0
    # a global dh is the same at every t, and borrowing it from another image changes nothing
    g = sec["consistency"]["per_direction"]["glasses"]
    assert len(g["timesteps"]) >= 2 and g["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert g["global_change_mean"] == pytest.approx(g["own_change_mean"], abs=1e-4)
    assert sec["homogeneity"]["per_direction"]["glasses"]["mean_abs_gap"] == pytest.approx(0.0, abs=1e-4)


def test_cosine_matrix_of_a_constant_direction_is_ones():
    dh = torch.randn(2, 4, 3, 3)
    ts, m = cosine_matrix({999: dh, 500: 3 * dh, 10: 0.5 * dh})
    assert ts == [999, 500, 10]
    assert torch.allclose(m, torch.ones(3, 3), atol=1e-6)
    _, m2 = cosine_matrix({999: dh, 500: -dh})
    assert m2[0, 1].item() == pytest.approx(-1.0, abs=1e-6)


def test_linear_fit_exact_line():
    a, b, r2 = linear_fit([-2, -1, 0, 1, 2], [-3.0, -1.0, 1.0, 3.0, 5.0])
    assert (a, b, r2) == pytest.approx((2.0, 1.0, 1.0))


def test_reverse_equals_generate(tiny_backbone):
    """The analysis loop is the library's sampler when it only shifts h (boosting included)."""
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    d = GlobalDirection.for_backbone(tiny_backbone, 0.3 * torch.randn(tiny_backbone.h_shape, generator=g))
    phases = Phases(t_edit=400, t_boost=300)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    ref = generate(tiny_backbone, x_T, 8, delta=d, phases=phases, generator=gens())
    rec = Recording()
    ours = reverse(tiny_backbone, x_T, 8, phases=phases, h_shift=lambda h, t, temb, i: d(h, t, temb),
                   generators=gens(), record=rec)
    assert torch.equal(ref, ours)
    assert rec.timesteps and min(rec.timesteps) >= 400
    sym = generate(tiny_backbone, x_T, 8, delta=d, phases=phases, generator=gens(), shift="symmetric")
    ours_sym = reverse(tiny_backbone, x_T, 8, phases=phases, h_shift=lambda h, t, temb, i: d(h, t, temb),
                       generators=gens(), mode="symmetric")
    assert torch.equal(sym, ours_sym)


def test_symmetric_step_moves_less_than_asymmetric(tame_backbone):
    """Theorem 1 of the paper on the closed-form Gaussian denoiser: shifting e in both P_t and
    D_t nearly cancels, so the symmetric edit moves the result less than Asyrp does."""
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    dh = torch.randn(tame_backbone.h_shape, generator=g)
    base = reverse(tame_backbone, x_T, 10)
    moved = {}
    for mode in ("asymmetric", "symmetric"):
        x = reverse(tame_backbone, x_T, 10, phases=Phases(t_edit=500), mode=mode,
                    h_shift=lambda h, t, temb, i: dh.to(h).expand_as(h))
        moved[mode] = (x - base).abs().mean().item()
    assert 0 < moved["symmetric"] < 0.8 * moved["asymmetric"]


def test_success_rate_on_rendered_faces():
    from hspace.toyworld.dataset import image_to_tensor
    from hspace.toyworld.faces import factors_for, render_array, with_factor

    fs = [with_factor(factors_for(5, i), glasses=False) for i in range(4)]
    src = torch.stack([image_to_tensor(render_array(f)) for f in fs])
    edt = torch.stack([image_to_tensor(render_array(with_factor(f, glasses=True))) for f in fs])
    probe = load_probe()
    assert success_rate(probe, src, edt, Target("glasses", True)) == 1.0
    assert success_rate(probe, src, src, Target("glasses", True)) == 0.0


def test_config_validation():
    with pytest.raises(ValueError, match="n_images"):
        AnalysisConfig(n_images=2)
    with pytest.raises(ValueError, match="strengths"):
        AnalysisConfig(strengths=(-1.0, 1.0, 2.0))
    assert AnalysisConfig.full_preset().n_images > AnalysisConfig.quick_preset().n_images


# --------------------------------------------------------------------------- command line


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_analyze_end_to_end(direction_files, tmp_path):
    out = tmp_path / "out"
    r = run("--quiet", "analyze", "-m", "tiny-random", "--quick", "--n-images", "3", "--steps", "4",
            "-d", str(direction_files["glasses"]), "-d", f"{direction_files['smiling']}:0.5", "--out", str(out))
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    assert set(data["sections"]) == {k for k, _ in SECTION_ORDER}
    assert [d["name"] for d in data["run"]["directions"]] == ["glasses", "smiling"]
    assert data["run"]["directions"][1]["strength"] == 0.5
    assert data["run"]["config"]["quick"] is True and data["run"]["config"]["n_images"] == 3
    assert len(list(out.glob("*.png"))) == len(SECTION_ORDER)

    again = run("--quiet", "analyze", "-m", "tiny-random", "--quick", "--n-images", "3", "--steps", "4",
                "-d", str(direction_files["glasses"]), "--out", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_cli_analyze_without_directions_says_how_to_fix(tmp_path):
    assert shipped_direction_files("tiny-random") == []
    r = run("analyze", "-m", "tiny-random", "--quick", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--directions" in lines[0] and "tiny-random" in lines[0]
    assert not (tmp_path / "o").exists()


def test_shipped_direction_files_order(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for n in ("zeta", "hat", "smiling", "glasses"):
        (folder / f"{n}.safetensors").write_bytes(b"")
    assert [p.stem for p in shipped_direction_files("m", root=tmp_path)] == ["smiling", "glasses", "hat", "zeta"]


def test_deterministic_and_composition_skipped_with_one_direction(tiny, direction_files, tmp_path):
    """Same seed, same numbers (whatever the global RNG says); one direction: composition is
    reported as not measured, with the reason and a placeholder plot."""
    from hspace.outputs import to_jsonable

    cfg = AnalysisConfig.quick_preset(**{**TINY, "n_steps": 3, "n_inv_steps": 3})
    runs = []
    for k in range(2):
        torch.manual_seed(100 + k)
        d = load_direction(direction_files["smiling"], backbone=tiny)
        out = tmp_path / f"run{k}"
        out.mkdir()
        runs.append((out, run_analysis(tiny, load_probe(), [("smiling", d, 1.0, None)], cfg, out)))
    a, b = (json.dumps(to_jsonable([s.data for s in r.sections]), sort_keys=True) for _, r in runs)
    assert a == b
    out, result = runs[0]
    comp = next(s for s in result.sections if s.key == "composition")
    assert comp.status == "skipped" and "two directions" in comp.reason
    assert (out / comp.plot_file).read_bytes()[:8] == PNG_MAGIC
    assert "not measured" in (out / "report.md").read_text()


def test_analysis_steps_follow_the_models_own_step_count():
    from hspace.cli.common import MODEL_DDIM_STEPS, ddim_steps_for

    # as analyze asks: no fallback, so other models keep the preset's count
    assert ddim_steps_for("toy-faces", None, default=None) == MODEL_DDIM_STEPS["toy-faces"] == 100
    assert ddim_steps_for(" toy-faces ", None, default=None) == 100
    assert ddim_steps_for("toy-faces", 12, default=None) == 12  # --steps always wins
    assert ddim_steps_for("tiny-random", None, default=None) is None
    assert ddim_steps_for("tiny-random", None) == 40  # edit / invert: the paper's count
