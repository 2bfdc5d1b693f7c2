"""What every verb shares: global flags, logging, error handling, and the common options.

Error policy: an expected failure (bad input, missing file, model or encoder not available,
a direction that does not fit, an output that would be overwritten) prints ONE line
``error: ...`` to stderr and exits with code 2 (the input or the command line is wrong) or 1
(something the run needs is not available, or every input failed). ``hspace --debug ...``
re-raises instead, so the full traceback shows.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import click
import typer

log = logging.getLogger("hspace.cli")

EXIT_UNAVAILABLE = 1  # a model/encoder/distance is missing, every input failed, the run diverged
EXIT_BAD_INPUT = 2  # wrong arguments, missing or invalid files, refusing to overwrite


# --------------------------------------------------------------------------- global state


@dataclass
class State:
    """Global flags of one invocation (set by the top-level callback)."""

    debug: bool = False
    quiet: bool = False
    seen: set[str] = field(default_factory=set)


STATE = State()


class CLIError(Exception):
    """An expected failure found by the CLI itself; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


class _Handler(logging.Handler):
    """Writes log records to the *current* sys.stderr (test runners swap it), each message once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not kill the run
            msg = str(record.msg)
        if msg in STATE.seen:
            return
        STATE.seen.add(msg)
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        click.echo(prefix + msg, err=True)


_HANDLER = _Handler()


def configure(debug: bool = False, quiet: bool = False) -> None:
    """Set the global flags of this invocation (called by the top-level callback)."""
    STATE.debug, STATE.quiet, STATE.seen = debug, quiet, set()


@contextlib.contextmanager
def _logging_scope():
    """Route hspace's log records to stderr while a verb runs (info unless ``--quiet``), then
    restore the logger as it was (the CLI may run inside another program, e.g. a test runner)."""
    logger = logging.getLogger("hspace")
    old_level = logger.level
    logger.setLevel(logging.DEBUG if STATE.debug else (logging.WARNING if STATE.quiet else logging.INFO))
    logger.addHandler(_HANDLER)
    try:
        yield
    finally:
        logger.removeHandler(_HANDLER)
        logger.setLevel(old_level)


def say(message: str = "") -> None:
    """A result line on stdout (paths written, chosen values); silent with ``--quiet``."""
    if not STATE.quiet:
        click.echo(message)


def notice(message: str) -> None:
    """A notice on stderr (what was chosen and why); silent with ``--quiet``."""
    log.info("%s", message)


def progress() -> bool:
    """Whether progress bars should show."""
    return not STATE.quiet


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    log.warning("%s", message)


# --------------------------------------------------------------------------- error handling


def _exit_code(err: BaseException) -> int | None:
    """Exit status for an expected failure, None for a bug."""
    from ..backbones.registry import ModelNotAvailableError
    from ..distances import DistanceUnavailableError
    from ..encoders import EncoderNotAvailableError

    if isinstance(err, CLIError):
        return err.code
    if isinstance(err, (ModelNotAvailableError, EncoderNotAvailableError, DistanceUnavailableError)):
        return EXIT_UNAVAILABLE
    if isinstance(err, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, ValueError)):
        return EXIT_BAD_INPUT  # includes DirectionMismatchError, DirectionFileError, ImageLoadError
    if isinstance(err, (PermissionError, OSError, FloatingPointError, MemoryError, RuntimeError)):
        return EXIT_UNAVAILABLE
    return None


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a verb: library warnings become ``warning: ...`` lines; expected
    exceptions become one ``error: ...`` line and an exit status (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(), _logging_scope():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.ClickException):
                raise
            except KeyboardInterrupt:
                click.echo("error: interrupted", err=True)
                raise typer.Exit(130)
            except Exception as err:  # noqa: BLE001 - this is the CLI's error boundary
                if STATE.debug:
                    raise
                code = _exit_code(err)
                if code is None:
                    click.echo(
                        f"error: unexpected {type(err).__name__}: {one_line(err)} "
                        "(this is a bug in hspace; rerun with `hspace --debug ...` for the traceback and report it)",
                        err=True,
                    )
                    raise typer.Exit(EXIT_UNAVAILABLE) from None
                message = one_line(err) or type(err).__name__
                click.echo(f"error: {message}", err=True)
                raise typer.Exit(code) from None

    return wrapper


def fail(message: str, code: int = EXIT_BAD_INPUT) -> CLIError:
    """Build a :class:`CLIError` (``raise fail("...")``)."""
    return CLIError(message, code)


# --------------------------------------------------------------------------- shared option help

MODEL_HELP = (
    "The diffusion model: a name from `hspace models` ('tiny-random' has RANDOM weights; named checkpoints "
    "such as adm:p2-celebahq-256 find their weights in $HSPACE_WEIGHTS, or take NAME=/path/to/weights), "
    "a local diffusers UNet2DModel folder, or a Hugging Face hub id such as google/ddpm-ema-celebahq-256 "
    "(read from the local HF cache; set HF_HOME)."
)
INPUT_HELP = (
    "Input image file or folder (folders: all images in it, not recursive). Repeat the option for "
    "several; extra paths after the options are taken too, so `--input imgs/*.png` works. Images are "
    "centre-cropped and resized to the model's size (each change is reported)."
)
STEPS_HELP = ("DDIM generation steps (default: the paper's 40; 100 for toy-faces); strengths are rescaled by "
              "train steps / this.")
INV_STEPS_HELP = "DDIM inversion steps (float32 always; default: the paper's 40; 100 for toy-faces)."
OVERWRITE_HELP = "Write into an existing non-empty output folder / replace an existing file (never an input)."
BF16_HELP = "Run the U-Net under bf16 autocast (2-5x faster on CPUs with AMX; outputs move ~1%). Default: float32."
SEED_HELP = "Noise seed; image i uses seed + i, so batching never changes results."
DEVICE_HELP = ("Where the networks run: cpu, cuda, cuda:N or mps. Images are read and written on the CPU; "
               "inversion stays float32 wherever it runs.")


# --------------------------------------------------------------------------- helpers


def load_model(model: str, device: str = "cpu"):
    """Load a backbone onto ``device`` and say what it is (plainly, when the weights are random).

    A device that is not here fails with the option's name; running on the CPU while a GPU is
    here says so, once, since that is rarely what the user wants."""
    import torch

    from ..backbones.registry import list_models, load_backbone, resolve_device

    try:
        dev = resolve_device(device)
    except ValueError as err:
        raise fail(f"--device {device}: {err}") from err
    builtin = list_models()
    bb = load_backbone(model, device=dev)
    if bb.device.type == "cpu" and torch.cuda.is_available():
        notice("running on the CPU although a CUDA GPU is here; pass --device cuda to use it")
    desc = builtin.get(model)
    if desc is not None:
        notice(f"model {model}: {desc}")
        if "RANDOM" in desc.upper():
            notice("note: this model has random weights, so its images are noise; use it to check the plumbing only")
    else:
        notice(f"model {bb.backbone_id}: h {list(bb.h_shape)}, {bb.image_size}x{bb.image_size} images")
    return bb


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder early, without creating anything (created later by
    :func:`hspace.outputs.prepare_output_dir`, once the inputs have loaded)."""
    from ..outputs import prepare_output_dir

    p = Path(path).expanduser()
    if p.exists():
        prepare_output_dir(p, overwrite=overwrite)  # raises the same message it would later


def gather_inputs(inputs: Optional[list[Path]], extra: Optional[list[Path]], required: bool = True) -> list[Path]:
    """The image files named by ``--input`` plus any extra positional paths (folders expanded).

    Raises:
        CLIError: none given and ``required``. FileNotFoundError / ValueError: a missing input, an
            empty folder (from :func:`hspace.io.find_images`).
    """
    from ..io import find_images

    paths = list(inputs or []) + list(extra or [])
    if not paths:
        if required:
            raise fail("no input images: pass --input FILE_OR_FOLDER (repeatable)")
        return []
    return find_images(paths)


def load_inputs(files: list[Path], size: int):
    """Load images; report size notices and each failed file; error when all fail.

    Returns:
        :class:`hspace.io.LoadedImages`.
    """
    from ..io import load_images

    loaded = load_images(files, size)  # logs "warning: cannot load image X: reason" per failure
    for n in loaded.notices:
        notice(f"input {n}")
    if len(loaded) == 0:
        raise fail(f"no image could be loaded: {loaded.summary()}", EXIT_UNAVAILABLE)
    return loaded


def report_failures(loaded) -> None:
    """The closing 'N of M failed' line when some inputs failed."""
    if loaded.failed:
        names = ", ".join(p.name for p, _ in loaded.failed)
        log.warning("%d of %d images failed and were skipped: %s", len(loaded.failed), loaded.num_requested, names)


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems made unique (``a``, ``a_2``, ...) so outputs of same-named inputs never collide."""
    out: list[str] = []
    used: set[str] = set()
    for p in paths:
        stem, k = p.stem, 2
        name = stem
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        out.append(name)
    return out


def parse_direction_spec(spec: str) -> tuple[Path, float]:
    """``FILE[:STRENGTH]`` -> (path, strength). The strength is split off at the last ':' only
    when what follows parses as a number, so paths containing ':' still work."""
    text = spec.strip()
    if not text:
        raise fail("empty --direction value; expected FILE[:STRENGTH], e.g. smile.safetensors:-0.5")
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            strength = float(tail)
        except ValueError:
            return Path(text), 1.0
        if not math.isfinite(strength):
            raise fail(f"--direction {spec!r}: strength must be a finite number, got {tail!r}")
        return Path(head), strength
    return Path(text), 1.0


def parse_sweep(spec: str) -> list[float]:
    """``A:B:N`` -> N evenly spaced strengths from A to B (N >= 2)."""
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise fail(f"--sweep must be A:B:N (two strengths and a frame count), e.g. -1:1:5; got {spec!r}") from None
    if n < 2 or not (math.isfinite(a) and math.isfinite(b)):
        raise fail(f"--sweep {spec!r}: need finite strengths and N >= 2 frames")
    return [a + (b - a) * i / (n - 1) for i in range(n)]


def parse_int_list(spec: str, name: str) -> tuple[int, ...]:
    """``"1,2"`` -> (1, 2); anything else is refused naming the option ``name``."""
    try:
        return tuple(int(p) for p in spec.split(","))
    except ValueError:
        raise fail(f"{name} takes comma-separated integers such as 1,2; got {spec!r}") from None


def parse_shape(spec: str, name: str = "--h-shape") -> tuple[int, int, int]:
    """``C,H,W`` -> (C, H, W) of positive ints."""
    try:
        dims = tuple(int(p) for p in spec.replace("x", ",").split(","))
        if len(dims) != 3 or min(dims) <= 0:
            raise ValueError
    except ValueError:
        raise fail(f"{name} must be three positive integers C,H,W (e.g. 512,8,8), got {spec!r}") from None
    return dims  # type: ignore[return-value]


def fmt_t(value: int | None, source: str | None) -> str:
    return f"{value} [{source}]" if source else str(value)


def displayable(images, what: str = "generated images", warn: bool = True):
    """Images clipped to [-1, 1] for saving (diffusion samples overshoot a little). A large
    overshoot is reported once per run: normal for a random-weight model, a sign of trouble otherwise."""
    x = images.detach().float()
    peak = float(x.abs().max()) if x.numel() else 0.0
    if warn and peak > 1.5 and "displayable" not in STATE.seen:
        STATE.seen.add("displayable")
        log.warning("%s reach |x| = %.3g (expected about [-1, 1]); clipped for saving. Expected for a "
                    "random-weight model; otherwise too few steps or a too strong edit", what, peak)
    return x.clamp(-1.0, 1.0)


# Options shared by several verbs (one declaration, the same help everywhere).
ModelOption = Annotated[str, typer.Option("--model", "-m", metavar="MODEL", help=MODEL_HELP, show_default=False)]
OutputDirOption = Annotated[
    Path, typer.Option("--output", "-o", metavar="DIR", help="Output folder; must be new or empty unless --overwrite.", show_default=False)
]
InputOption = Annotated[Optional[list[Path]], typer.Option("--input", "-i", metavar="PATH", help=INPUT_HELP, show_default=False)]
ExtraInputs = Annotated[Optional[list[Path]], typer.Argument(metavar="PATH", help="More input images or folders.", show_default=False)]
OverwriteDirOption = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]
DeviceOption = Annotated[str, typer.Option("--device", metavar="DEVICE", help=DEVICE_HELP)]


def clip_for_model(clip: str | None, model: str) -> str:
    """The CLIP to use: ``clip`` when given; else the toy CLIP for the built-in ``toy-faces``
    (a real CLIP knows nothing of cartoon faces and is not on this machine); else OpenAI's
    ViT-B/16, the paper's."""
    from ..encoders import DEFAULT_CLIP_ID

    if clip:
        return clip
    chosen = "toy-clip" if model == "toy-faces" else DEFAULT_CLIP_ID
    notice(f"CLIP: {chosen} (the default for --model {model}; choose another with --clip)")
    return chosen


#: The paper's DDIM step count, and built-in models that need more: at 40 steps toy-faces
#: reconstructed 40 held-out faces at 20.5 dB on average, some blown up to |x| = 9.4; at 100
#: steps 38.1 dB (docs/toyworld.md).
PAPER_DDIM_STEPS = 40
MODEL_DDIM_STEPS: dict[str, int] = {"toy-faces": 100}


def ddim_steps_for(model: str, steps: Optional[int], default: Optional[int] = PAPER_DDIM_STEPS) -> Optional[int]:
    """``steps`` when given, else the model's own step count (:data:`MODEL_DDIM_STEPS`), else
    ``default`` (the paper's 40). Names match as ``load_backbone`` matches them: exactly, after
    stripping spaces."""
    if steps is not None:
        return steps
    return MODEL_DDIM_STEPS.get(str(model).strip(), default)
