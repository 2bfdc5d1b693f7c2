"""Directions: f_t layouts, free-tensor directions, combinators, the file format, the importer."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from hspace.directions import (
    ComposedDirection,
    DirectionFileError,
    DirectionMeta,
    DirectionMismatchError,
    GlobalDirection,
    ImplicitDirection,
    PerStepDirection,
    ScaledDirection,
    check_direction_fits,
    effective_strength,
    import_official,
    interpolate,
    load_direction,
    mean_dh,
    read_direction_header,
    rescale_for_steps,
    save_direction,
)

C, S, E = 64, 8, 128  # the tiny backbone: h [64, 8, 8], temb 128


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(b: int = 2, seed: int = 0):
    g = _gen(seed)
    return torch.randn(b, C, S, S, generator=g), torch.tensor([999.0, 500.0])[:b], torch.randn(b, E, generator=g)


def _meta(kind: str = "global", **kw) -> DirectionMeta:
    base = dict(
        kind=kind,
        h_shape=(C, S, S),
        backbone_id="test/tiny",
        source_text="face",
        target_text="smiling face",
        t_edit=513,
        t_boost=167,
        n_train_steps=40,
        schedule={"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
        extra={"note": "unit test", "losses": [0.5, 0.25]},
    )
    base.update(kw)
    return DirectionMeta(**base)


def _randomised(direction: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = _gen(seed)
    with torch.no_grad():
        for p in direction.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return direction


def _all_kinds() -> dict[str, torch.nn.Module]:
    return {
        "implicit-ddpm": ImplicitDirection("ddpm", C, E, meta=_meta("implicit-ddpm", temb_dim=E)),
        "implicit-adm": ImplicitDirection("adm", C, E, meta=_meta("implicit-adm", temb_dim=E)),
        "per-step": _randomised(PerStepDirection([999, 750, 500], (C, S, S), meta=_meta())),
        "global": _randomised(GlobalDirection((C, S, S), meta=_meta())),
    }


# ----------------------------------------------------------------------------------------- f_t


@pytest.mark.parametrize("variant", ["ddpm", "adm"])
def test_implicit_uses_time_embedding_and_default_init(variant):
    f = ImplicitDirection(variant, C, E)
    h, t, temb = _inputs()
    with torch.no_grad():
        dh = f(h, t, temb)
        assert dh.shape == h.shape
        assert dh.abs().mean() > 1e-3  # default init, not zero
        # The time term matters (64 channels: two per group, so GroupNorm cannot erase it).
        assert (dh - f(h, t, temb.flip(0))).abs().max() > 1e-3
        assert (dh - f(h, t, None)).abs().max() > 1e-3


def test_implicit_keys_are_the_official_ones():
    ddpm = set(ImplicitDirection("ddpm", C, E).block.state_dict())
    adm = set(ImplicitDirection("adm", C, E).block.state_dict())
    assert ddpm == {f"{m}.{p}" for m in ("conv1", "temb_proj", "norm2", "conv2") for p in ("weight", "bias")}
    assert adm == {
        f"{m}.{p}"
        for m in ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3")
        for p in ("weight", "bias")
    }


def test_implicit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variant must be one of"):
        ImplicitDirection("unet", C, E)
    with pytest.raises(ValueError, match="multiple of 32"):
        ImplicitDirection("ddpm", 48, E)
    f = ImplicitDirection("ddpm", C, E)
    h, t, temb = _inputs()
    with pytest.raises(ValueError, match=r"temb has shape \[2, 64\], expected \[2, 128\]"):
        f(h, t, temb[:, :64])
    with pytest.raises(ValueError, match=r"h has shape \[2, 32, 8, 8\]"):
        f(h[:, :32], t, temb)
    with pytest.raises(ValueError, match="strict|Missing|Unexpected"):
        f.load_official_state_dict({"conv1.weight": torch.zeros(C, C, 1, 1)})


def test_implicit_for_backbone_on_real_encoding(tiny_backbone):
    f = ImplicitDirection.for_backbone(tiny_backbone, "adm", target_text="smiling", t_edit=500)
    assert f.meta.backbone_id == "test/tiny" and f.meta.h_shape == (64, 8, 8) and f.meta.temb_dim == 128
    x = torch.randn(2, 3, 32, 32, generator=_gen(3))
    with torch.no_grad():
        enc = tiny_backbone.encode(x, torch.tensor([999.0, 500.0]))
        assert f(enc.h, enc.t, enc.temb).shape == enc.h.shape
    check_direction_fits(f, tiny_backbone)


# ------------------------------------------------------------------------ per-step and global


def test_per_step_lookup_exact_nearest_and_tie():
    init = {t: torch.full((C, S, S), float(t)) for t in (100, 300, 999)}
    d = PerStepDirection([999, 100, 300], (C, S, S), init=init)
    h = torch.zeros(5, C, S, S)
    t = torch.tensor([999, 300, 260, 200, 0])  # exact, exact, nearest 300, tie 100/300 -> 100, nearest 100
    got = d(h, t, None)[:, 0, 0, 0]
    assert got.tolist() == [999.0, 300.0, 300.0, 100.0, 100.0]
    assert d(h[:1], 999, None).shape == (1, C, S, S)  # scalar t
    with pytest.raises(ValueError, match="one entry per batch element"):
        d(h, torch.tensor([1, 2]), None)


def test_per_step_gradient_reaches_only_the_used_step():
    d = PerStepDirection([999, 500], (C, S, S))
    d(torch.zeros(2, C, S, S), torch.tensor([990, 990]), None).sum().backward()
    assert d.dh["t999"].grad is not None and torch.all(d.dh["t999"].grad == 2)
    assert d.dh["t500"].grad is None


def test_per_step_rejects_bad_timesteps():
    with pytest.raises(ValueError, match="distinct"):
        PerStepDirection([5, 5], (C, S, S))
    with pytest.raises(ValueError, match="integers"):
        PerStepDirection([5.5], (C, S, S))
    with pytest.raises(ValueError, match=r"expected \[64, 8, 8\]"):
        PerStepDirection([5], (C, S, S), init={5: torch.zeros(C, S, S + 1)})


def test_global_and_mean_dh(tiny_backbone):
    f = ImplicitDirection.for_backbone(tiny_backbone, "ddpm", target_text="smiling", t_edit=400)
    x = torch.randn(3, 3, 32, 32, generator=_gen(5))
    with torch.no_grad():
        encs = [tiny_backbone.encode(x[:2], torch.tensor([999.0, 700.0])), tiny_backbone.encode(x[2:], torch.tensor([300.0]))]
        expected = torch.cat([f(e.h, e.t, e.temb) for e in encs]).mean(0)
    got = mean_dh(f, encs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean_dh(f, [(e.h, e.t, e.temb) for e in encs]), expected, rtol=1e-5, atol=1e-6)
    g = GlobalDirection.from_direction(f, encs)
    assert g.meta.kind == "global" and g.meta.target_text == "smiling" and g.meta.t_edit == 400
    assert g.meta.extra["derived_from"] == {"kind": "implicit-ddpm", "num_samples": 3}
    out = g(torch.zeros(4, C, S, S), torch.tensor(10), None)
    assert torch.equal(out, got.unsqueeze(0).expand(4, -1, -1, -1))
    with pytest.raises(ValueError, match="at least one"):
        mean_dh(f, [])


# ----------------------------------------------------------------------------------- compose


def _global(value: float | torch.Tensor, **meta) -> GlobalDirection:
    dh = value if isinstance(value, torch.Tensor) else torch.full((C, S, S), value)
    return GlobalDirection((C, S, S), dh, meta=_meta(**meta) if meta else None)


def test_scaled_and_negative_strength_reverses():
    f = ImplicitDirection("adm", C, E)
    h, t, temb = _inputs()
    with torch.no_grad():
        base = f(h, t, temb)
        torch.testing.assert_close(ScaledDirection(f, 2.5)(h, t, temb), 2.5 * base)
        torch.testing.assert_close(ScaledDirection(f, -1.0)(h, t, temb), -base)
    with pytest.raises(ValueError, match="finite"):
        ScaledDirection(f, float("nan"))


def test_compose_divides_by_sqrt_n():
    a = _global(torch.randn(C, S, S, generator=_gen(1)))
    b = _global(torch.randn(C, S, S, generator=_gen(2)))
    c = _global(torch.randn(C, S, S, generator=_gen(3)))
    h = torch.zeros(2, C, S, S)
    t = torch.tensor([999, 500])
    got = ComposedDirection([(a, 1.0), (b, -0.5), (c, 2.0)])(h, t, None)
    expected = (a.dh - 0.5 * b.dh + 2.0 * c.dh) / math.sqrt(3)
    torch.testing.assert_close(got, expected.expand(2, -1, -1, -1))
    # N = 1 is plain scaling.
    torch.testing.assert_close(ComposedDirection([(a, 0.7)])(h, t, None), (0.7 * a.dh).expand(2, -1, -1, -1))


def test_compose_meta_takes_smallest_t_edit_and_t_boost():
    a = _global(1.0, t_edit=600, t_boost=None)
    b = _global(2.0, t_edit=400, t_boost=200)
    c = _global(3.0, t_edit=None, t_boost=300)
    m = ComposedDirection([(a, 1.0), (b, 1.0), (c, 1.0)]).meta
    assert (m.kind, m.t_edit, m.t_boost, m.backbone_id, m.h_shape) == ("composed", 400, 200, "test/tiny", (C, S, S))
    assert [x["strength"] for x in m.extra["members"]] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="different h shapes"):
        ComposedDirection([(a, 1.0), (GlobalDirection((C, 4, 4)), 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        ComposedDirection([])


def test_interpolation_endpoints_and_midpoint():
    a = _global(torch.randn(C, S, S, generator=_gen(1)), t_edit=500)
    b = _global(torch.randn(C, S, S, generator=_gen(2)), t_edit=300)
    h, t = torch.zeros(1, C, S, S), torch.tensor([999])
    assert torch.equal(interpolate(a, b, 0.0)(h, t, None), a(h, t, None))
    assert torch.equal(interpolate(a, b, 1.0)(h, t, None), b(h, t, None))
    torch.testing.assert_close(interpolate(a, b, 0.25)(h, t, None), 0.75 * a(h, t, None) + 0.25 * b(h, t, None))
    assert interpolate(a, b, 0.5).meta.t_edit == 300


def test_effective_strength_and_rescale_per_member():
    assert effective_strength(1.0, 40, 1000) == pytest.approx(0.04)
    assert effective_strength(-2.0, 40, 20) == pytest.approx(-4.0)
    assert effective_strength(0.5, None, 1000) == 0.5
    with pytest.raises(ValueError, match="n_test_steps"):
        effective_strength(1.0, 40, 0)
    a = _global(1.0, n_train_steps=40)
    b = _global(1.0, n_train_steps=10)
    combo = ComposedDirection([(a, 1.0), (b, 2.0)])
    assert combo.meta.n_train_steps is None  # members disagree
    rescaled = rescale_for_steps(combo, 20)
    h, t = torch.zeros(1, C, S, S), torch.tensor([999])
    expected = (1.0 * 40 / 20 + 2.0 * 10 / 20) / math.sqrt(2)
    torch.testing.assert_close(rescaled(h, t, None), torch.full((1, C, S, S), expected))
    assert rescaled.meta.extra["rescaled_for_n_steps"] == 20


# ------------------------------------------------------------------------------- file format


@pytest.mark.parametrize("kind", ["implicit-ddpm", "implicit-adm", "per-step", "global"])
def test_round_trip_identical_dh_and_meta(tmp_path, kind):
    direction = _all_kinds()[kind]
    path = save_direction(direction, tmp_path / "sub" / f"{kind}.safetensors")
    loaded = load_direction(path)
    assert type(loaded) is type(direction)
    h, t, temb = _inputs(2, seed=7)
    t = torch.tensor([999.0, 600.0])
    with torch.no_grad():
        assert torch.equal(loaded(h, t, temb), direction(h, t, temb))
    expected_meta = direction.meta
    assert loaded.meta == expected_meta
    assert loaded.meta.schedule["beta_schedule"] == "linear" and loaded.meta.extra["losses"] == [0.5, 0.25]
    header = read_direction_header(path)
    assert header["format_version"] == 1 and header["kind"] == kind and header["meta"]["backbone_id"] == "test/tiny"


def test_file_holds_official_key_names_for_implicit(tmp_path):
    path = save_direction(ImplicitDirection("adm", C, E), tmp_path / "f.safetensors")
    assert "in_layers.2.weight" in load_file(path)


def test_overwrite_refused_unless_asked(tmp_path):
    path = tmp_path / "d.safetensors"
    save_direction(_global(1.0), path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_direction(_global(2.0), path)
    assert load_direction(path).dh[0, 0, 0].item() == 1.0
    save_direction(_global(2.0), path, overwrite=True)
    assert load_direction(path).dh[0, 0, 0].item() == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]  # no temp files left


def test_nan_refused_on_save_and_on_load(tmp_path):
    bad = _global(1.0)
    with torch.no_grad():
        bad.dh[3, 2, 1] = float("nan")
    with pytest.raises(DirectionFileError, match="'dh'"):
        save_direction(bad, tmp_path / "bad.safetensors")
    # A file written by something else, with a valid header and an inf in one tensor.
    good = save_direction(ImplicitDirection("ddpm", C, E), tmp_path / "good.safetensors")
    tensors = load_file(good)
    tensors["temb_proj.bias"][0] = float("inf")
    save_file(tensors, str(tmp_path / "inf.safetensors"), metadata={"hspace": json.dumps(read_direction_header(good))})
    with pytest.raises(DirectionFileError, match="'temb_proj.bias'"):
        load_direction(tmp_path / "inf.safetensors")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_direction(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(DirectionFileError, match="not a safetensors file"):
        load_direction(tmp_path / "text.safetensors")
    torch.save({"0": {}}, tmp_path / "official.pth")
    with pytest.raises(DirectionFileError, match="import-official"):
        load_direction(tmp_path / "official.pth")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DirectionFileError, match="not an hspace direction file.*import-official"):
        load_direction(tmp_path / "plain.safetensors")
    good = save_direction(_global(1.0), tmp_path / "g.safetensors")
    header = read_direction_header(good)
    save_file(load_file(good), str(tmp_path / "v2.safetensors"), metadata={"hspace": json.dumps({**header, "format_version": 2})})
    with pytest.raises(DirectionFileError, match="format_version 2"):
        load_direction(tmp_path / "v2.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "wrongw.safetensors"), metadata={"hspace": json.dumps(header)})
    with pytest.raises(DirectionFileError, match="cannot rebuild"):
        load_direction(tmp_path / "wrongw.safetensors")


def test_combinations_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="save each member separately"):
        save_direction(ScaledDirection(_global(1.0), 2.0), tmp_path / "s.safetensors")


# ---------------------------------------------------------------------------- backbone fit


def test_load_with_backbone_checks_fit(tmp_path, tiny_backbone):
    ok = save_direction(ImplicitDirection.for_backbone(tiny_backbone, "ddpm"), tmp_path / "ok.safetensors")
    load_direction(ok, backbone=tiny_backbone)

    wide = ImplicitDirection("ddpm", 128, 256, meta=DirectionMeta(kind="x", h_shape=(128, 8, 8), backbone_id="other/big"))
    path = save_direction(wide, tmp_path / "wide.safetensors")
    with pytest.raises(DirectionMismatchError) as err:
        load_direction(path, backbone=tiny_backbone)
    msg = str(err.value)
    assert "[128, 8, 8]" in msg and "[64, 8, 8]" in msg  # both shapes
    assert "temb_dim 256" in msg and "temb_dim 128" in msg
    assert "'other/big'" in msg and "'test/tiny'" in msg  # both ids
    assert isinstance(err.value, ValueError)


def test_free_tensor_spatial_mismatch_is_error_implicit_is_warning(tiny_backbone):
    with pytest.raises(DirectionMismatchError, match="4x4"):
        check_direction_fits(GlobalDirection((C, 4, 4)), tiny_backbone)
    f = ImplicitDirection("adm", C, E, meta=DirectionMeta(kind="x", h_shape=(C, 4, 4)))
    with pytest.warns(UserWarning, match="4x4"):
        check_direction_fits(f, tiny_backbone)
    with pytest.raises(DirectionMismatchError, match="temb_dim 256"):
        check_direction_fits(ImplicitDirection("adm", C, 256), tiny_backbone)


def test_backbone_id_mismatch_only_warns(tiny_backbone):
    d = _global(1.0, backbone_id="google/ddpm-ema-celebahq-256")
    with pytest.warns(UserWarning, match="google/ddpm-ema-celebahq-256.*test/tiny"):
        check_direction_fits(d, tiny_backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_direction_fits(_global(1.0), tiny_backbone)  # same id: silent
        check_direction_fits(ComposedDirection([(_global(1.0), 1.0), (_global(2.0), -1.0)]), tiny_backbone)


# ----------------------------------------------------------------------------- importer


def _official_file(path, state_dict):
    torch.save({"0": state_dict, "optimizer": {"state": {}}, "scheduler": {"last_epoch": 3}}, path)
    return path


@pytest.mark.parametrize("variant", ["ddpm", "adm"])
def test_import_official_round_trip(tmp_path, variant):
    src = _randomised(ImplicitDirection(variant, C, E), seed=9)
    path = _official_file(tmp_path / "attr_LC_x_t999_ninv40_ngen40_0.pth", src.block.state_dict())
    got = import_official(path, backbone_id="test/tiny", h_shape=(C, S, S), temb_dim=E, n_train_steps=40, t_edit=500)
    assert got.variant == variant and got.meta.n_train_steps == 40 and got.meta.t_edit == 500
    h, t, temb = _inputs()
    with torch.no_grad():
        assert torch.equal(got(h, t, temb), src(h, t, temb))


def test_import_official_errors(tmp_path):
    kw = dict(backbone_id="b", h_shape=(C, S, S), temb_dim=E, n_train_steps=40)
    with pytest.raises(FileNotFoundError):
        import_official(tmp_path / "nope.pth", **kw)
    odd = _official_file(tmp_path / "odd.pth", {"weird.weight": torch.zeros(3)})
    with pytest.raises(DirectionFileError) as err:
        import_official(odd, **kw)
    msg = str(err.value)
    assert "odd.pth" in msg and "weird.weight" in msg and "conv1.weight" in msg and "in_layers.0.weight" in msg
    torch.save({"model": 1}, tmp_path / "nokey.pth")
    with pytest.raises(DirectionFileError, match="no key '0'.*'model'"):
        import_official(tmp_path / "nokey.pth", **kw)
    sd = ImplicitDirection("ddpm", C, E).block.state_dict()
    ok = _official_file(tmp_path / "ok.pth", sd)
    with pytest.raises(DirectionFileError, match=r"temb_dim 128.*temb_dim 512"):
        import_official(ok, **{**kw, "temb_dim": 512})
