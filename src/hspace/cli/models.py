"""``hspace models``: the built-in models and the other forms --model accepts."""

from __future__ import annotations

import typer

from .common import handle_errors, say

HELP = "List the built-in models and the other forms that --model accepts."

FORMS = """Named checkpoints (adm:*, ddpm:*) need their weights file: put it in $HSPACE_WEIGHTS (or the cache's
weights/ folder), or pass it as NAME=/path/to/weights, e.g. --model adm:p2-celebahq-256=/data/celebahq_p2.pt.

Other forms --model accepts:
  /path/to/folder       a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors,
                        optionally scheduler_config.json) or a pipeline folder (model_index.json, unet/, scheduler/)
  owner/name            a Hugging Face hub id of such a model, e.g. google/ddpm-ema-celebahq-256,
                        google/ddpm-ema-church-256, google/ddpm-ema-bedroom-256, google/ddpm-ema-cat-256;
                        read from the local HF cache (HF_HOME); downloaded only when the hub is reachable
                        and HF_HUB_OFFLINE is not set
Run `hspace info MODEL` for a model's h shape, time embedding and schedule."""

SHORT_HELP = 'List built-in models and the model forms --model accepts.'


def register(app: typer.Typer) -> None:
    app.command("models", help=HELP, short_help=SHORT_HELP)(models_command)


@handle_errors
def models_command() -> None:
    from ..backbones.registry import list_models

    say("Built-in models:")
    models = list_models()
    width = max((len(n) for n in models), default=0) + 2
    for name, desc in models.items():
        say(f"  {name:<{width}}{desc}")
    say("")
    say(FORMS)
