"""Distances: the weight-free fallback's properties, and how LPIPS is detected and refused."""

from __future__ import annotations

import warnings

import pytest
import torch

from hspace.distances import (
    Distance,
    DistanceUnavailableError,
    FallbackDistance,
    LPIPSDistance,
    get_distance,
    lpips_status,
)


def _images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo = torch.randn(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(lo, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_fallback_zero_for_identical_images():
    x = _images()
    d = FallbackDistance()
    out = d(x, x.clone())
    assert out.shape == (3,)
    assert torch.equal(out, torch.zeros(3))


def test_fallback_symmetric_and_bounded():
    x, y = _images(seed=0), _images(seed=1)
    d = FallbackDistance()
    torch.testing.assert_close(d(x, y), d(y, x), rtol=0, atol=1e-6)
    assert (d(x, y) > 0).all() and (d(x, y) <= d.saturation).all()


def test_fallback_grows_with_noise():
    x = _images(n=4)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(x.shape, generator=g)
    d = FallbackDistance()
    values = [d(x, x + s * z).mean().item() for s in (0.0, 0.01, 0.05, 0.2, 0.5, 1.0)]
    assert values[0] == 0.0
    assert all(b > a for a, b in zip(values, values[1:])), values
    # calibrated end point: image against pure N(0, 1) noise is near LPIPS-alex's saturation (~1.39)
    assert 1.3 < d(x, z).mean().item() <= 1.4


def test_fallback_is_deterministic_and_works_at_several_sizes():
    d = FallbackDistance()
    for size in (16, 32, 64):
        x, y = _images(size=size, seed=3), _images(size=size, seed=4)
        assert torch.equal(d(x, y), d(x, y))


def test_fallback_rejects_bad_shapes():
    d = FallbackDistance()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        d(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))


def test_distances_satisfy_protocol():
    assert isinstance(FallbackDistance(), Distance)


def test_get_distance_fallback_and_unknown():
    assert get_distance("fallback").name == "fallback-msgrad-v1"
    with pytest.raises(ValueError, match="must be one of"):
        get_distance("ssim")


def test_get_distance_auto_reports_what_it_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no trunk weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = get_distance("auto")
    assert d.name == "fallback-msgrad-v1"
    msgs = [str(w.message) for w in caught]
    assert any("fallback-msgrad-v1" in m and "NOT LPIPS" in m for m in msgs), msgs


def test_get_distance_auto_uses_lpips_when_status_says_so(monkeypatch):
    import hspace.distances as mod

    class FakeLPIPS:
        name = "lpips-alex"

        def __init__(self, net="alex", trunk_weights=None):
            pass

    monkeypatch.setattr(mod, "lpips_status", lambda net, trunk_weights=None: (True, []))
    monkeypatch.setattr(mod, "LPIPSDistance", FakeLPIPS)
    assert get_distance("auto").name == "lpips-alex"


def test_lpips_without_weights_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    usable, problems = lpips_status("alex")
    assert not usable and problems
    with pytest.raises(DistanceUnavailableError) as err:
        get_distance("lpips")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg  # the trunk file that is missing ...
    assert str(tmp_path / "hub" / "checkpoints") in msg  # ... where it must be
    assert "trunk_weights=" in msg
    if "'lpips' package is not installed" in msg:
        assert "pip install lpips" in msg
    with pytest.raises(DistanceUnavailableError):
        LPIPSDistance("alex", trunk_weights=tmp_path / "nowhere.pth")


def test_lpips_rejects_unknown_net():
    with pytest.raises(ValueError, match="net must be one of"):
        lpips_status("resnet")
