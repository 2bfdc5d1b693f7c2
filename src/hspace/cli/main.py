"""The ``hspace`` command: builds the typer app and registers one module per verb.

Each verb lives in its own module (``hspace.cli.edit``, ``hspace.cli.train``, ...) with a
``register(app)`` function, like diffusers' ``src/diffusers/commands/``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import analyze, common, demo, difference, edit, import_official, info, interval, invert, models, toyworld, train
from . import eval as eval_cmd

HELP = """Semantic image editing in the h-space (U-Net bottleneck) of frozen diffusion models (Asyrp, ICLR 2023).

\b
Quick start (offline, about a minute on a CPU):
  hspace demo                                             # end to end on a built-in toy model
  hspace train -m MODEL --source "face" --target "smiling face" --input faces/ -o smile.safetensors
  hspace edit -m MODEL --input photo.png --direction smile.safetensors:0.8 --output edited/

Run `hspace VERB --help` for each verb's options. Errors print one line `error: ...` and exit
with 2 (bad input or arguments) or 1 (a model, encoder or other resource is not available, or every
input failed); `hspace --debug VERB ...` shows the full traceback instead.
"""

app = typer.Typer(
    name="hspace",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors and debug log lines.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors: no notices, results or progress bars.")
    ] = False,
) -> None:
    common.configure(debug=debug, quiet=quiet)


for _module in (edit, invert, train, difference, interval, import_official, info, models, demo, toyworld, eval_cmd, analyze):
    _module.register(app)


def main() -> None:
    """Console-script entry point (``hspace = hspace.cli.main:main``)."""
    from ..perf import tune_malloc

    # glibc returns big activation buffers to the OS after every step and page-faults them
    # back in the next (1.4x slower forwards on a 256 px U-Net, benchmarks/README.md).
    tune_malloc()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
