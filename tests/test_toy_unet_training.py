"""Training recipe of the built-in toy-faces U-Net: loss, exact resume, export, registry entry, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hspace.backbones import registry
from hspace.backbones.registry import ModelNotAvailableError, load_backbone, load_diffusers_folder
from hspace.cli.main import app
from hspace.toyworld import ToyFaces
from hspace.toyworld import models as toy_models
from hspace.toyworld.train_unet import (
    RECIPES,
    TOY_FACES_UNET,
    Recipe,
    build_unet,
    diffusion_loss,
    drop_skips,
    latest_checkpoint,
    load_init_weights,
    lowfreq_error,
    lowfreq_weight_at,
    make_scheduler,
    step_skip_keep,
    train_unet,
)

torch.set_num_threads(1)


def tiny_recipe(steps: int = 6, **kw) -> Recipe:
    r = RECIPES["tiny"]()
    r.steps = steps
    r.batch_size = 4
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_toy_faces_architecture_has_h_at_8x8():
    unet = build_unet(TOY_FACES_UNET)
    n = sum(p.numel() for p in unet.parameters())
    assert 3e6 < n < 10e6  # float16 export well under 20 MB
    shapes = {}
    unet.mid_block.register_forward_hook(lambda m, i, o: shapes.update(h=tuple(o.shape)))
    with torch.no_grad():
        unet(torch.zeros(1, 3, 64, 64), torch.tensor([10]))
    assert shapes["h"] == (1, 192, 8, 8)
    s = make_scheduler().config
    assert (s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule, s.prediction_type) == (
        1000, 1e-4, 0.02, "linear", "epsilon")
    assert make_scheduler("v_prediction").config.prediction_type == "v_prediction"


def test_shipped_recipe_predicts_v_with_one_group_and_keeps_h():
    """The shipped recipe: same h, every GroupNorm over all channels (channel means pass), v."""
    r = RECIPES["toy-faces"]()
    r.validate()
    assert r.prediction_type == "v_prediction" and r.lowfreq_weight == 0 and r.steps == 4500
    assert RECIPES["toy-faces-1group"]().unet == r.unet and RECIPES["toy-faces-1group"]().prediction_type == "epsilon"
    assert RECIPES["toy-faces-eps"]().unet == dict(r.unet, norm_num_groups=32)
    unet = build_unet(r.unet)
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 1 for m in norms)
    shapes = {}
    unet.mid_block.register_forward_hook(lambda m, i, o: shapes.update(h=tuple(o.shape)))
    with torch.no_grad():
        unet(torch.zeros(1, 3, 64, 64), torch.tensor([10]))
    assert shapes["h"] == (1, 192, 8, 8)


def test_deep_h_recipe_keeps_attention_at_8x8_and_widens_h():
    """The candidate for an h that carries more of the edits: no attention at 16 px (the level that
    carries glasses on toy-faces), h = [256, 8, 8], the shipped recipe otherwise."""
    from diffusers.models.attention_processor import Attention

    r = RECIPES["toy-faces-deep-h"]()
    r.validate()
    assert r.steps == RECIPES["toy-faces"]().steps and r.lowfreq_weight == 0 and r.prediction_type == "epsilon"
    unet = build_unet(r.unet)
    sizes, shapes = set(), {}
    for m in unet.modules():
        if isinstance(m, Attention):
            m.register_forward_pre_hook(lambda m, args, kwargs: sizes.add(tuple(args[0].shape[-2:])), with_kwargs=True)
    unet.mid_block.register_forward_hook(lambda m, i, o: shapes.update(h=tuple(o.shape)))
    with torch.no_grad():
        unet(torch.zeros(1, 3, 64, 64), torch.tensor([10]))
    assert sizes == {(8, 8)} and shapes["h"] == (1, 256, 8, 8)


def test_loss_finite_and_decreases_on_a_fixed_batch():
    r = tiny_recipe()
    model = build_unet(r.unet, seed=0).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    ds = ToyFaces(8, seed=0, size=32, supersample=2, captions=False)
    x0 = torch.stack([ds[i]["image"] for i in range(8)])
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    acp = make_scheduler().alphas_cumprod.float()
    losses = []
    for _ in range(30):
        loss = diffusion_loss(model, x0, t, noise, acp, bf16=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


def test_lowfreq_error_weighs_the_mean_colour_as_p_t_sees_it():
    a = torch.tensor([0.5, 1e-4]).view(2, 1, 1, 1)  # (1-a)/a = 1 and 9999 (capped at 1000)
    c = torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    flat = c.expand(2, 3, 32, 32)
    expected = (1.0 + 1000.0) / 2 * float((c**2).mean())
    assert lowfreq_error(flat, a, cap=1000.0).item() == pytest.approx(expected, rel=1e-5)
    # a checkerboard has no coarse colour: nothing beyond the plain MSE
    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 2.0 - 1
    assert lowfreq_error(checker.expand(2, 3, 32, 32), a, cap=1000.0).item() == pytest.approx(0.0, abs=1e-7)


def test_diffusion_loss_adds_the_lowfreq_term_only_when_weighted():
    model = build_unet(tiny_recipe().unet, seed=0)
    x0 = torch.zeros(2, 3, 32, 32)
    t = torch.tensor([10, 990])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    acp = make_scheduler().alphas_cumprod.float()
    with torch.no_grad():
        plain = diffusion_loss(model, x0, t, noise, acp, bf16=False)
        both = diffusion_loss(model, x0, t, noise, acp, bf16=False, lowfreq_weight=2.0)
        a = acp[t].view(-1, 1, 1, 1)
        err = model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample - noise
    assert plain.item() == pytest.approx(err.pow(2).mean().item(), rel=1e-5)
    assert both.item() == pytest.approx(plain.item() + 2.0 * lowfreq_error(err, a, 1000.0).item(), rel=1e-5)


def _ckpt(folder):
    return {name: load_file(str(folder / f"{name}.safetensors")) for name in ("model", "ema", "optimizer")}


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    r = tiny_recipe(steps=6)
    full = train_unet(r, checkpoint_dir=tmp_path / "a", progress=False, checkpoint_every_minutes=None)
    assert full.finished and full.step == 6 and all(math.isfinite(v) for v in full.losses)
    part = train_unet(r, checkpoint_dir=tmp_path / "b", progress=False, stop_at_step=2,
                      checkpoint_every_minutes=None)
    assert part.step == 2 and not part.finished
    # without --resume an existing checkpoint is never overwritten
    with pytest.raises(FileExistsError, match="--resume"):
        train_unet(r, checkpoint_dir=tmp_path / "b", progress=False)
    rest = train_unet(r, checkpoint_dir=tmp_path / "b", resume=True, progress=False, checkpoint_every_steps=2,
                      checkpoint_every_minutes=None)
    assert rest.step == 6 and rest.finished and len(rest.losses) == 4
    assert rest.losses == full.losses[2:]
    a, b = _ckpt(latest_checkpoint(tmp_path / "a")), _ckpt(latest_checkpoint(tmp_path / "b"))
    for part_name in a:
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), (part_name, k)
    state = json.loads((latest_checkpoint(tmp_path / "b") / "state.json").read_text())
    assert state["step"] == 6 and state["recipe"]["steps"] == 6
    # a different recipe cannot resume the run
    with pytest.raises(ValueError, match="lr"):
        train_unet(tiny_recipe(steps=8, lr=1e-3), checkpoint_dir=tmp_path / "b", resume=True, progress=False)


def test_lowfreq_term_starts_at_its_step_and_a_plain_run_resumes_into_it(tmp_path):
    plain = train_unet(tiny_recipe(steps=4), checkpoint_dir=tmp_path / "plain", progress=False,
                       checkpoint_every_minutes=None)
    late = train_unet(tiny_recipe(steps=4, lowfreq_weight=5.0, lowfreq_from_step=2), checkpoint_dir=tmp_path / "late",
                      progress=False, checkpoint_every_minutes=None)
    early = train_unet(tiny_recipe(steps=4, lowfreq_weight=5.0), checkpoint_dir=tmp_path / "early", progress=False,
                       checkpoint_every_minutes=None)
    assert late.losses[:2] == plain.losses[:2] and late.losses[2] > plain.losses[2]
    assert early.losses[0] > plain.losses[0]
    # a plain run stopped at step 2 continues under the recipe whose term starts at step 2, exactly
    train_unet(tiny_recipe(steps=4), checkpoint_dir=tmp_path / "mixed", progress=False, stop_at_step=2,
               checkpoint_every_minutes=None)
    rest = train_unet(tiny_recipe(steps=4, lowfreq_weight=5.0, lowfreq_from_step=2), checkpoint_dir=tmp_path / "mixed",
                      resume=True, progress=False, checkpoint_every_minutes=None)
    assert rest.losses == late.losses[2:]
    # ... but not under one whose term was on before the checkpoint's step
    train_unet(tiny_recipe(steps=4), checkpoint_dir=tmp_path / "stopped", progress=False, stop_at_step=2,
               checkpoint_every_minutes=None)
    with pytest.raises(ValueError, match="lowfreq_weight"):
        train_unet(tiny_recipe(steps=4, lowfreq_weight=5.0, lowfreq_from_step=1), checkpoint_dir=tmp_path / "stopped",
                   resume=True, progress=False)


def test_lowfreq_schedule_gives_the_weight_at_each_step_and_rejects_bad_orders():
    r = tiny_recipe(lowfreq_weight=0.3, lowfreq_from_step=10, lowfreq_schedule=((20, 1.0), (30, 0.0)))
    r.validate()
    assert [lowfreq_weight_at(r, s) for s in (0, 9, 10, 19, 20, 29, 30, 99)] == [0, 0, 0.3, 0.3, 1.0, 1.0, 0, 0]
    assert Recipe.from_json(json.loads(json.dumps(r.to_json()))) == r
    for bad in (((10, 1.0),), ((25, 1.0), (20, 0.5)), ((20, -1.0),), ((20,),)):
        with pytest.raises(ValueError, match="lowfreq_schedule"):
            tiny_recipe(lowfreq_weight=0.3, lowfreq_from_step=10, lowfreq_schedule=bad).validate()


def test_a_run_resumes_into_a_raised_lowfreq_weight_exactly(tmp_path):
    raised = dict(lowfreq_weight=2.0, lowfreq_schedule=((2, 8.0),))
    whole = train_unet(tiny_recipe(steps=4, **raised), checkpoint_dir=tmp_path / "whole", progress=False,
                       checkpoint_every_minutes=None)
    flat = train_unet(tiny_recipe(steps=4, lowfreq_weight=2.0), checkpoint_dir=tmp_path / "flat", progress=False,
                      checkpoint_every_minutes=None)
    assert whole.losses[:2] == flat.losses[:2] and whole.losses[2] > flat.losses[2]
    # a run at weight 2 stopped at step 2 continues under the raised recipe as if it had run it all along
    train_unet(tiny_recipe(steps=4, lowfreq_weight=2.0), checkpoint_dir=tmp_path / "mixed", progress=False,
               stop_at_step=2, checkpoint_every_minutes=None)
    rest = train_unet(tiny_recipe(steps=4, **raised), checkpoint_dir=tmp_path / "mixed", resume=True, progress=False,
                      checkpoint_every_minutes=None)
    assert rest.losses == whole.losses[2:]
    # ... but not under a schedule that would have changed the steps already run
    train_unet(tiny_recipe(steps=4, lowfreq_weight=2.0), checkpoint_dir=tmp_path / "early", progress=False,
               stop_at_step=2, checkpoint_every_minutes=None)
    with pytest.raises(ValueError, match="lowfreq_schedule"):
        train_unet(tiny_recipe(steps=4, lowfreq_weight=2.0, lowfreq_schedule=((1, 8.0),)),
                   checkpoint_dir=tmp_path / "early", resume=True, progress=False)


def test_export_loads_back_and_matches_the_ema_model(tmp_path):
    r = tiny_recipe(steps=3)
    res = train_unet(r, checkpoint_dir=tmp_path / "ck", out_dir=tmp_path / "model", progress=False)
    out = res.exported
    assert out == tmp_path / "model"
    assert {"config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json", "training.json"} <= {
        p.name for p in out.iterdir()}
    weights = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 3 and info["weights"].startswith("EMA")
    backbone = load_diffusers_folder(out, backbone_id="x")
    assert backbone.unet.dtype == torch.float32 and backbone.h_shape == (32, 8, 8)
    assert backbone.schedule_config["beta_end"] == 0.02
    ema = build_unet(r.unet)
    ema.load_state_dict(load_file(str(latest_checkpoint(tmp_path / "ck") / "ema.safetensors")))
    ema.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 700])
    with torch.no_grad():
        want = ema(x, t).sample
        got = backbone.unet(x, t).sample
    assert torch.allclose(got, want, atol=2e-2 * want.abs().max().item() + 1e-3), (got - want).abs().max()


def test_toy_faces_not_trained_yet_message(monkeypatch, tmp_path):
    monkeypatch.setattr(toy_models, "TOY_FACES_DIR", tmp_path / "missing")
    assert "toy-faces" in registry.list_models()
    with pytest.raises(ModelNotAvailableError) as e:
        load_backbone("toy-faces")
    msg = str(e.value)
    assert "not been trained yet" in msg and "hspace toyworld train-unet" in msg and "--resume" in msg


def test_toy_faces_loads_when_the_folder_exists(monkeypatch, tmp_path):
    res = train_unet(tiny_recipe(steps=1), checkpoint_dir=tmp_path / "ck", out_dir=tmp_path / "toy", progress=False)
    monkeypatch.setattr(toy_models, "TOY_FACES_DIR", res.exported)
    b = load_backbone("toy-faces")
    assert b.backbone_id == "toy-faces" and b.h_shape == (32, 8, 8)


def test_cli_train_unet_tiny_and_resume(tmp_path):
    runner = CliRunner()
    ck, out = tmp_path / "ck", tmp_path / "out"
    base = ["toyworld", "train-unet", "--recipe", "tiny", "--checkpoint-dir", str(ck), "--out", str(out), "--threads", "1"]
    r = runner.invoke(app, [*base, "--steps", "1"])
    assert r.exit_code == 0, r.output
    assert (out / "config.json").is_file()
    r = runner.invoke(app, [*base, "--steps", "2"])
    assert r.exit_code == 2 and "--resume" in r.output, r.output
    r = runner.invoke(app, [*base, "--steps", "2", "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "training.json").read_text())["steps"] == 2


def test_render_workers_give_the_same_batches_in_the_callers_framing(monkeypatch):
    """Batches rendered in spawned processes equal the one-thread ones, also in a framing a runner
    script has set (a spawned process would otherwise see the module's defaults)."""
    from hspace.toyworld import faces
    from hspace.toyworld.train_unet import _Batches

    monkeypatch.setattr(faces, "FRAME_ZOOM", 1.6)
    monkeypatch.setattr(faces, "FRAME_CENTER_Y", 0.6)
    r = tiny_recipe()
    one, many = _Batches(r), _Batches(r, workers=2)
    try:
        for step in (0, 1, 2, 5):
            a, b = one.get(step), many.get(step)
            assert a.shape == (r.batch_size, 3, 32, 32)
            assert torch.equal(a, b), step
    finally:
        one.close()
        many.close()
    monkeypatch.setattr(faces, "FRAME_ZOOM", 1.0)
    plain = _Batches(r)
    try:
        assert not torch.equal(plain.get(5), b)  # the framing did reach the workers
    finally:
        plain.close()


def test_an_unfinished_run_exports_only_when_asked(tmp_path):
    r = tiny_recipe(steps=5)
    res = train_unet(r, checkpoint_dir=tmp_path / "a", out_dir=tmp_path / "m", stop_at_step=2, progress=False)
    assert not res.finished and res.exported is None and not (tmp_path / "m").exists()
    res = train_unet(r, checkpoint_dir=tmp_path / "b", out_dir=tmp_path / "m", stop_at_step=2, progress=False,
                     export_unfinished=True, data_workers=1)
    assert not res.finished and res.exported == tmp_path / "m"
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["finished"] is False and info["steps"] == 2 and info["recipe"]["steps"] == 5
    ema = load_file(str(latest_checkpoint(tmp_path / "b") / "ema.safetensors"))
    exported = load_file(str(tmp_path / "m" / "diffusion_pytorch_model.safetensors"))
    assert ema.keys() == exported.keys()
    assert all(torch.equal(ema[k].half(), exported[k]) for k in ema)


def test_cli_train_unet_refuses_an_unfinished_export_without_out(tmp_path):
    r = CliRunner().invoke(app, ["toyworld", "train-unet", "--recipe", "tiny", "--checkpoint-dir", str(tmp_path / "ck"),
                                 "--export-unfinished", "--max-minutes", "1"])
    assert r.exit_code != 0 and "--export-unfinished needs --out" in r.output, r.output
    r = CliRunner().invoke(app, ["toyworld", "train-unet", "--recipe", "tiny", "--checkpoint-dir", str(tmp_path / "ck"),
                                 "--out", str(tmp_path / "m"), "--data-workers", "-1"])
    assert r.exit_code != 0 and "--data-workers must be >= 0" in r.output, r.output
    assert not (tmp_path / "ck").exists() and not (tmp_path / "m").exists()


def test_v_prediction_loss_targets_diffusers_velocity():
    """The v recipe's loss is the MSE to diffusers' own ``get_velocity`` (and eps's to the noise)."""
    r = tiny_recipe()
    model = build_unet(r.unet)
    sched = make_scheduler("v_prediction")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([10, 500, 999])
    acp = sched.alphas_cumprod.float()
    xt = sched.add_noise(x0, noise, t)
    with torch.no_grad():
        pred = model(xt, t).sample
        v_loss = diffusion_loss(model, x0, t, noise, acp, bf16=False, prediction_type="v_prediction")
        e_loss = diffusion_loss(model, x0, t, noise, acp, bf16=False)
    assert math.isclose(v_loss.item(), (pred - sched.get_velocity(x0, noise, t)).pow(2).mean().item(), rel_tol=1e-4)
    assert math.isclose(e_loss.item(), (pred - noise).pow(2).mean().item(), rel_tol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_loss(model, x0, t, noise, acp, prediction_type="sample")


def test_v_recipe_exports_a_v_model_that_loads_as_one(tmp_path):
    r = tiny_recipe(steps=2)
    res = train_unet(r, checkpoint_dir=tmp_path / "ck", out_dir=tmp_path / "model", progress=False)
    cfg = json.loads((res.exported / "scheduler_config.json").read_text())
    assert cfg["prediction_type"] == "v_prediction"
    backbone = load_diffusers_folder(res.exported, backbone_id="v")
    assert backbone.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        tiny_recipe(prediction_type="sample").validate()
    assert RECIPES["toy-faces-v-32groups"]().prediction_type == "v_prediction"


def test_recipes_written_before_prediction_type_read_as_eps():
    """Checkpoints and exports made before the field existed were all eps models: resuming one
    must not turn it into a v model."""
    old = RECIPES["toy-faces-eps"]().to_json()
    del old["prediction_type"]
    assert Recipe.from_json(old).prediction_type == "epsilon"
    assert Recipe.from_json(RECIPES["toy-faces"]().to_json()).prediction_type == "v_prediction"


def test_cli_train_unet_never_exports_a_changed_recipe_into_the_shipped_folder(tmp_path):
    """`--steps 60` once replaced the shipped model with a 60-step one: a run that changes the
    recipe must name its own --out."""
    from hspace.toyworld.train_unet import shipped_model_dir

    before = sorted((p.name, p.stat().st_mtime_ns) for p in shipped_model_dir().iterdir()) if shipped_model_dir().is_dir() else []
    for extra in (["--steps", "2"], ["--batch-size", "2"], ["--precision", "fp32"], ["--skip-dropout", "0.2"],
                  ["--skip-dropout-blocks", "1,2"], ["--lr", "1e-4"]):
        res = CliRunner().invoke(app, ["toyworld", "train-unet", *extra, "--checkpoint-dir", str(tmp_path / "ck")])
        assert res.exit_code != 0 and "--out" in res.output and extra[0] in res.output, res.output
    assert not (tmp_path / "ck").exists()
    after = sorted((p.name, p.stat().st_mtime_ns) for p in shipped_model_dir().iterdir()) if shipped_model_dir().is_dir() else []
    assert before == after


# --------------------------------------------------------------------------- skip dropout, init_from


def test_drop_skips_zeroes_exactly_the_skips_of_the_chosen_decoder_levels():
    """Up block i gets the skips of one resolution: dropping blocks 1 and 2 of the tiny U-Net equals
    decoding with its 16 and 32 px skip activations zeroed, for the dropped face only."""
    from hspace.backbones.diffusers_unet import DiffusersUNetBackbone

    unet = build_unet(RECIPES["tiny"]().unet, seed=3).eval()
    bb = DiffusersUNetBackbone(unet)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 300])
    with torch.no_grad():
        plain = unet(x, t).sample
        with drop_skips(unet, (1, 2), torch.ones(2)):
            kept = unet(x, t).sample
        with drop_skips(unet, (1, 2), torch.tensor([1.0, 0.0])):
            dropped = unet(x, t).sample
        enc = bb.encode(x, t)
        zeroed = tuple(s * torch.tensor([1.0, 0.0]).view(-1, 1, 1, 1) if s.shape[-1] >= 16 else s for s in enc.skips)
        want = bb.decode(type(enc)(h=enc.h, skips=zeroed, temb=enc.temb, t=enc.t, x_t=enc.x_t))
        after = unet(x, t).sample
    assert torch.equal(kept, plain) and torch.equal(after, plain)  # the hooks are gone afterwards
    assert torch.equal(dropped[0], plain[0]) and not torch.allclose(dropped[1], plain[1], atol=1e-3)
    assert torch.allclose(dropped, want, atol=1e-5), (dropped - want).abs().max()
    assert all(not b._forward_pre_hooks for b in unet.up_blocks)


def test_drop_skips_removes_its_hooks_when_the_forward_pass_fails():
    unet = build_unet(RECIPES["tiny"]().unet)
    with pytest.raises(RuntimeError), drop_skips(unet, (0,), torch.zeros(2)):
        unet(torch.zeros(2, 5, 32, 32), torch.tensor([1, 1]))  # wrong channel count
    assert all(not b._forward_pre_hooks for b in unet.up_blocks)


def test_skip_keep_follows_the_recipe_and_leaves_the_noise_alone():
    r = tiny_recipe(skip_dropout=0.25, skip_dropout_blocks=(1, 2), skip_dropout_from_step=3)
    assert step_skip_keep(r, 2, 8) is None and step_skip_keep(tiny_recipe(), 5, 8) is None
    k = step_skip_keep(r, 3, 4000)
    assert set(k.unique().tolist()) == {0.0, 1.0} and abs(1 - k.mean().item() - 0.25) < 0.03
    assert torch.equal(step_skip_keep(r, 7, 16), step_skip_keep(r, 7, 16))
    assert not torch.equal(step_skip_keep(r, 7, 64), step_skip_keep(r, 8, 64))
    for bad in (dict(skip_dropout=1.0, skip_dropout_blocks=(1,)), dict(skip_dropout=0.5),
                dict(skip_dropout=0.5, skip_dropout_blocks=(3,)), dict(skip_dropout=0.5, skip_dropout_blocks=(1, 1)),
                dict(skip_dropout=-0.1, skip_dropout_blocks=(1,))):
        with pytest.raises(ValueError, match="skip_dropout"):
            tiny_recipe(**bad).validate()
    back = Recipe.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r and back.skip_dropout_blocks == (1, 2)
    old = tiny_recipe().to_json()
    for k in ("skip_dropout", "skip_dropout_blocks", "skip_dropout_from_step", "init_from"):
        old.pop(k)
    assert Recipe.from_json(old) == tiny_recipe()  # checkpoints written before these fields


def test_skip_dropout_changes_only_the_dropped_faces_loss_terms():
    model = build_unet(RECIPES["tiny"]().unet, seed=1)
    acp = make_scheduler().alphas_cumprod.float()
    g = torch.Generator().manual_seed(2)
    x0, noise, t = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 3, 32, 32, generator=g), torch.tensor([100, 600])
    plain = diffusion_loss(model, x0, t, noise, acp, bf16=False)
    same = diffusion_loss(model, x0, t, noise, acp, bf16=False, skip_blocks=(1, 2), skip_keep=torch.ones(2))
    dropped = diffusion_loss(model, x0, t, noise, acp, bf16=False, skip_blocks=(1, 2), skip_keep=torch.zeros(2))
    assert torch.equal(plain, same) and not torch.isclose(plain, dropped)
    dropped.backward()
    grads = [p.grad for p in model.up_blocks[2].parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_init_from_starts_at_an_exported_model_and_records_it(tmp_path):
    base = train_unet(tiny_recipe(steps=2), checkpoint_dir=tmp_path / "ck0", out_dir=tmp_path / "base", progress=False)
    r = tiny_recipe(steps=3, init_from=str(base.exported), skip_dropout=0.5, skip_dropout_blocks=(1,))
    model = build_unet(r.unet, seed=99)
    info = load_init_weights(model, base.exported)
    shipped = load_file(str(base.exported / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, shipped[k].float()) for k, v in model.state_dict().items())
    assert info["steps"] == 2 and len(info["sha256"]) == 64
    part = train_unet(r, checkpoint_dir=tmp_path / "ck", progress=False, stop_at_step=1)
    res = train_unet(r, checkpoint_dir=tmp_path / "ck", out_dir=tmp_path / "tuned", resume=True, progress=False)
    assert part.step == 1 and res.finished
    training = json.loads((res.exported / "training.json").read_text())
    assert training["init"] == info and training["recipe"]["init_from"] == str(base.exported)
    assert training["model"] == "custom"
    with pytest.raises(ValueError, match="block_out_channels"):
        load_init_weights(build_unet(dict(r.unet, block_out_channels=(16, 32, 48))), base.exported)
    with pytest.raises(FileNotFoundError, match="no exported model"):
        load_init_weights(build_unet(r.unet), tmp_path / "nothing")


def test_skipdrop_recipe_fine_tunes_the_shipped_model():
    r = RECIPES["toy-faces-skipdrop"]()
    r.validate()
    assert r.init_from == "toy-faces" and r.skip_dropout > 0
    plain = Recipe().to_json()
    tuned = r.to_json()
    assert {k for k in plain if plain[k] != tuned[k]} == {"steps", "init_from", "skip_dropout", "skip_dropout_blocks"}
    # every level loses its skips, the 8 px ones beside h included
    assert r.skip_dropout_blocks == (0, 1, 2, 3)


def test_cli_skip_dropout_override_is_checked_and_recorded(tmp_path):
    runner = CliRunner()
    base = ["toyworld", "train-unet", "--recipe", "tiny", "--steps", "1", "--threads", "1"]
    r = runner.invoke(app, [*base, "--skip-dropout", "0.3", "--checkpoint-dir", str(tmp_path / "a"), "--out", str(tmp_path / "a-out")])
    assert r.exit_code == 2 and "skip_dropout_blocks" in r.output, r.output  # tiny names no blocks
    assert not (tmp_path / "a").exists()
    r = runner.invoke(app, [*base, "--skip-dropout", "1.5", "--checkpoint-dir", str(tmp_path / "b"), "--out", str(tmp_path / "b-out")])
    assert r.exit_code == 2 and "[0, 1)" in r.output, r.output
    for blocks, says in (("1;2", "comma-separated integers"), ("1,9", "distinct indices"), ("1,1", "distinct indices")):
        r = runner.invoke(app, [*base, "--skip-dropout", "0.3", "--skip-dropout-blocks", blocks, "--checkpoint-dir",
                                str(tmp_path / "d"), "--out", str(tmp_path / "d-out")])
        assert r.exit_code == 2 and says in r.output, r.output
    assert not (tmp_path / "d").exists()
    # the fine-tune recipe from the shipped model, one step, with another probability and levels
    r = runner.invoke(app, ["toyworld", "train-unet", "--recipe", "toy-faces-skipdrop", "--steps", "1", "--skip-dropout", "0.25", "--lr", "1e-4",
                            "--skip-dropout-blocks", "1,2",
                            "--checkpoint-dir", str(tmp_path / "c"), "--out", str(tmp_path / "c-out"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "c-out" / "training.json").read_text())
    assert info["recipe"]["skip_dropout"] == 0.25 and info["recipe"]["skip_dropout_blocks"] == [1, 2]
    assert info["recipe"]["lr"] == 1e-4
    assert info["init"]["steps"] == 4500 and info["recipe"]["init_from"] == "toy-faces"
