import pytest
import torch

from hspace.directions import DirectionMismatchError, GlobalDirection
from hspace.editor import DEFAULT_T_EDIT, EditConfig, Editor, resolve_interval


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HSPACE_CACHE", str(tmp_path / "cache"))


def cfg(**kw):
    base = dict(n_inv_steps=6, n_steps=6, progress=False)
    base.update(kw)
    return EditConfig(**base)


def images(n=2, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def global_dir(bb, scale=0.5, seed=0, **meta):
    dh = scale * torch.randn(bb.h_shape, generator=torch.Generator().manual_seed(seed))
    return GlobalDirection.for_backbone(bb, dh, **meta)


class Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, k):
        return getattr(self.inner, k)

    def eps(self, x, t):
        self.calls += 1
        return self.inner.eps(x, t)


def test_inversion_is_cached_on_disk(tame_backbone):
    bb = Counting(tame_backbone)
    x = images()
    first = Editor(bb, cfg()).invert(x)
    calls = bb.calls
    assert calls == 5  # 6-point grid: 5 inversion steps for the batch
    again = Editor(bb, cfg()).invert(x)
    assert bb.calls == calls and torch.equal(first, again)
    Editor(bb, cfg(n_inv_steps=8)).invert(x)  # another step count is another cache entry
    assert bb.calls > calls


def test_zero_direction_reproduces_reconstruction(tame_backbone):
    ed = Editor(tame_backbone, cfg(joint_decode=False, t_boost=0))
    lat = ed.invert(images())
    zero = GlobalDirection.for_backbone(tame_backbone)
    assert torch.equal(ed.edit(lat, [(zero, 1.0)]).images, ed.reconstruct(lat))


def test_batch_size_does_not_change_results(tame_backbone):
    x = images(3)
    outs = []
    for bs in (1, 3):
        ed = Editor(tame_backbone, cfg(batch_size=bs, t_edit=400, t_boost=300, cache_latents=False))
        outs.append(ed.edit(ed.invert(x), [(global_dir(tame_backbone), 1.0)]).images)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)


def test_negative_strength_moves_the_other_way(tame_backbone):
    ed = Editor(tame_backbone, cfg(t_edit=300))
    lat = ed.invert(images())
    d = global_dir(tame_backbone, scale=0.05)  # small dh: the random U-Net is near-linear there
    rec = ed.reconstruct(lat)
    plus = ed.edit(lat, [(d, 1.0)]).images - rec
    minus = ed.edit(lat, [(d, -1.0)]).images - rec
    cos = torch.nn.functional.cosine_similarity(plus.flatten(), minus.flatten(), dim=0)
    assert cos < -0.9, cos
    assert plus.abs().mean() > 1e-3


def test_strength_is_rescaled_by_train_over_test_steps(tame_backbone):
    ed = Editor(tame_backbone, cfg(t_edit=300, cache_latents=False))
    lat = ed.invert(images(1))
    trained_on_12 = global_dir(tame_backbone, n_train_steps=12)  # used with 6 steps: x2
    plain = global_dir(tame_backbone)
    torch.testing.assert_close(ed.edit(lat, [(trained_on_12, 1.0)]).images, ed.edit(lat, [(plain, 2.0)]).images)


def test_interval_resolution_order(tame_backbone):
    d = global_dir(tame_backbone, t_edit=610, t_boost=120)
    assert resolve_interval(cfg(t_edit=700), d)[:2] == (700, 120)
    t_edit, t_boost, src = resolve_interval(cfg(), d)
    assert (t_edit, t_boost) == (610, 120) and src["t_edit"] == "direction file"
    t_edit, t_boost, src = resolve_interval(cfg(), global_dir(tame_backbone))
    assert (t_edit, t_boost) == (DEFAULT_T_EDIT, 0) and "default" in src["t_edit"]


def test_direction_for_another_backbone_is_refused(tame_backbone):
    wrong = GlobalDirection((32, 4, 4), torch.ones(32, 4, 4))
    ed = Editor(tame_backbone, cfg())
    with pytest.raises(DirectionMismatchError, match="32"):
        ed.edit(torch.zeros(1, 3, 32, 32), [(wrong, 1.0)])


def test_bad_inputs_are_refused(tame_backbone):
    ed = Editor(tame_backbone, cfg())
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        ed.invert(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="at least one"):
        ed.edit(torch.zeros(1, 3, 32, 32), [])
    with pytest.raises(ValueError, match="t_boost"):
        EditConfig(t_edit=100, t_boost=200)
    with pytest.raises(ValueError, match="n_steps"):
        EditConfig(n_steps=0)


def test_editing_band_edits_only_inside_it(tame_backbone, tmp_path):
    # t_edit_max (beyond the paper): plain DDIM above the band's top, the Asyrp step inside it
    from hspace.directions import load_direction, save_direction
    from hspace.sampler import Phases, generate

    ed = Editor(tame_backbone, cfg(cache_latents=False))
    lat = ed.invert(images())
    d = global_dir(tame_backbone, scale=2.0, t_edit=0)
    whole = ed.edit(lat, [(d, 1.0)])
    assert whole.t_edit_max is None
    top = Editor(tame_backbone, cfg(cache_latents=False, t_edit_max=999)).edit(lat, [(d, 1.0)])
    assert torch.equal(top.images, whole.images)  # a band up to the grid's top is the paper's interval

    def zero_above(t_max):
        def delta(h, t, temb):
            return d(h, t, temb) * (t <= t_max).to(h.dtype).view(-1, 1, 1, 1)
        return delta

    band = Editor(tame_backbone, cfg(cache_latents=False, t_edit_max=500)).edit(lat, [(d, 1.0)])
    assert band.t_edit_max == 500 and band.interval_source["t_edit_max"] == "user"
    by_hand = generate(tame_backbone, lat, 6, delta=zero_above(500), phases=Phases(t_edit=0))
    assert torch.allclose(band.images, by_hand, atol=1e-6)
    assert (band.images - whole.images).abs().max() > 1e-3  # the top steps' edit is gone
    assert (band.images - ed.reconstruct(lat)).abs().max() > 1e-3  # and the band's is there

    # recorded in the direction file, it applies unless the config says otherwise
    path = save_direction(global_dir(tame_backbone, scale=2.0, t_edit=0, t_edit_max=500), tmp_path / "band.safetensors")
    filed = ed.edit(lat, [(load_direction(path, tame_backbone), 1.0)])
    assert filed.t_edit_max == 500 and filed.interval_source["t_edit_max"] == "direction file"
    assert torch.allclose(filed.images, band.images, atol=1e-6)

    with pytest.raises(ValueError, match="below t_edit"):
        Editor(tame_backbone, cfg(cache_latents=False, t_edit=600)).edit(lat, [(load_direction(path, tame_backbone), 1.0)])
    with pytest.raises(ValueError, match="t_edit_max"):
        cfg(t_edit=600, t_edit_max=500)
    with pytest.raises(ValueError, match="below t_edit"):
        global_dir(tame_backbone, t_edit=600, t_edit_max=500)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
def test_editor_runs_where_the_backbone_runs(tame_backbone):
    # images and directions on the CPU, the backbone on the GPU: results come back on the CPU and
    # match the CPU run (the CLI's --device cuda relies on this)
    import copy

    x, d = images(), global_dir(tame_backbone)
    runs = {}
    for device in ("cpu", "cuda"):
        bb = copy.deepcopy(tame_backbone).to(device)
        ed = Editor(bb, cfg(cache_latents=False))
        lat = ed.invert(x)
        runs[device] = (lat, ed.edit(lat, [(d, 1.0)]).images, ed.reconstruct(lat))
        assert all(v.device.type == "cpu" for v in runs[device])
    for a, b in zip(runs["cpu"], runs["cuda"]):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
