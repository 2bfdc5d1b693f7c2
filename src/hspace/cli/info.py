"""``hspace info``: describe a model or a direction file (and whether a direction fits a model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import handle_errors, say

HELP = """Describe a model (architecture, h shape, time embedding, image size, schedule) or a direction
file (its header: kind, backbone, h shape, texts, interval, training).

With a direction file and --model, also check that the direction fits that model, and say why not
(exit status 1 when it does not fit).

\b
Examples:
  hspace info tiny-random
  hspace info smile.safetensors --model google/ddpm-ema-celebahq-256
"""

SHORT_HELP = 'Describe a model or a direction file; check that a direction fits a model.'


def register(app: typer.Typer) -> None:
    app.command("info", help=HELP, short_help=SHORT_HELP, no_args_is_help=True)(info_command)


def _kv(key: str, value) -> None:
    say(f"  {key:<16} {value}")


def describe_named_model(name: str) -> None:
    """A named real model (adm:*, ddpm:*), described from its architecture alone: no weights needed."""
    from ..backbones.checkpoints import describe_named

    d = describe_named(name)
    say(f"model {name}")
    _kv("description", d["description"])
    _kv("family", d["family"])
    if d.get("num_params") is not None:
        _kv("parameters", f"{d['num_params']:,} ({d['num_params'] / 1e6:.1f} M)")
    _kv("image size", f"3x{d['image_size']}x{d['image_size']}")
    _kv("h shape", list(d["h_shape"]))
    _kv("temb dim", d["temb_dim"])
    _kv("schedule", json.dumps(d["schedule"]))
    _kv("interval preset", d.get("interval_preset"))
    _kv("architecture", json.dumps(d["architecture"]))
    _kv("weights", d["found"] or f"{d['weights_file']} not found: {d['put_it']}")
    if not d["found"]:
        _kv("get it from", d["source"])


def describe_model(model: str) -> None:
    from ..backbones.checkpoints import NAMED_MODELS
    from ..backbones.registry import list_models

    if model in NAMED_MODELS:  # "NAME=PATH" loads the weights below instead
        describe_named_model(model)
        return
    bb = common.load_model(model)
    net = getattr(bb, "unet", bb)
    n_params = sum(p.numel() for p in net.parameters()) if hasattr(net, "parameters") else None
    ac = bb.alphas_cumprod.float().cpu()
    T = int(ac.shape[0])
    say(f"model {model}")
    desc = list_models().get(model)
    if desc:
        _kv("description", desc)
    _kv("backbone_id", bb.backbone_id)
    _kv("adapter", type(bb).__name__)
    _kv("network", type(net).__name__)
    if n_params is not None:
        _kv("parameters", f"{n_params:,} ({n_params / 1e6:.1f} M)")
    _kv("image size", f"{bb.in_channels}x{bb.image_size}x{bb.image_size}")
    _kv("h shape", list(bb.h_shape))
    _kv("temb dim", bb.temb_dim)
    beta_first = 1.0 - float(ac[0])
    beta_last = 1.0 - float(ac[-1] / ac[-2]) if T > 1 else beta_first
    _kv("schedule", f"T={T}, beta {beta_first:.3g} .. {beta_last:.3g}, abar[T-1]={float(ac[-1]):.3g}")


def describe_direction(path: Path, model: Optional[str]) -> None:
    from ..directions import check_direction_fits, load_direction, read_direction_header

    header = read_direction_header(path)
    meta = header["meta"]
    say(f"direction file {path}")
    _kv("kind", header["kind"])
    _kv("format", f"version {header['format_version']} (hspace {header.get('hspace_version', '?')})")
    _kv("backbone_id", meta.get("backbone_id"))
    _kv("h shape", meta.get("h_shape"))
    _kv("temb dim", meta.get("temb_dim"))
    _kv("texts", f"{meta.get('source_text')!r} -> {meta.get('target_text')!r}")
    _kv("t_edit", meta.get("t_edit"))
    _kv("t_boost", meta.get("t_boost"))
    _kv("train steps", meta.get("n_train_steps"))
    _kv("config", json.dumps(header["config"]))
    extra = dict(meta.get("extra") or {})
    training = extra.pop("training", None)
    if training:
        _kv("training", ", ".join(f"{k}={v}" for k, v in training.items() if k != "train_timesteps"))
    for k, v in extra.items():
        _kv(k, v)
    if model is None:
        return
    bb = common.load_model(model)
    direction = load_direction(path)
    from ..directions import DirectionMismatchError

    try:
        check_direction_fits(direction, bb)
    except DirectionMismatchError as err:
        say(f"does NOT fit model {model}: {common.one_line(err)}")
        raise typer.Exit(common.EXIT_UNAVAILABLE)
    say(f"fits model {model} (h {list(bb.h_shape)}, temb_dim {bb.temb_dim})")


@handle_errors
def info_command(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="A model (built-in name, folder, hub id) or a direction .safetensors file.", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", help="With a direction file: check it fits this model.", show_default=False)] = None,
) -> None:
    path = Path(target).expanduser()
    if path.is_file():
        describe_direction(path, model)
    else:
        if model is not None:
            raise common.fail(f"--model is only used with a direction file, and {target!r} is not a file")
        describe_model(target)
