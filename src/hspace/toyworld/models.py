"""The toy world's built-in trained models, registered with :mod:`hspace.backbones.registry`.

``toy-faces``: a diffusers ``UNet2DModel`` trained on the procedural toy faces (64x64,
eps-prediction, linear betas 1e-4..0.02, T = 1000; h = the mid-block output ``[192, 8, 8]``),
shipped in the diffusers layout at ``hspace/data/models/toy-faces`` (float16 weights, loaded
as float32). Until it has been trained, ``load_backbone("toy-faces")`` raises
:class:`~hspace.backbones.registry.ModelNotAvailableError` naming the command that trains it.
"""

from __future__ import annotations

from pathlib import Path

from ..backbones.base import Backbone
from ..backbones.registry import ModelNotAvailableError, load_diffusers_folder, register_builtin

__all__ = ["TOY_FACES_DIR", "TRAIN_COMMAND", "toy_faces_available", "load_toy_faces"]

#: Where the trained model lives (read at call time, so tests may point it elsewhere).
TOY_FACES_DIR: Path = Path(__file__).resolve().parents[1] / "data" / "models" / "toy-faces"

#: The committed recipe's command (see docs/toyworld.md).
TRAIN_COMMAND = "hspace toyworld train-unet"  # resumable: add --resume to continue a stopped run

_WEIGHTS = "diffusion_pytorch_model.safetensors"


def toy_faces_available(folder: Path | None = None) -> bool:
    folder = TOY_FACES_DIR if folder is None else folder
    return (folder / "config.json").is_file() and (folder / _WEIGHTS).is_file()


def load_toy_faces() -> Backbone:
    """The trained ``toy-faces`` backbone (CPU, float32); a clear error when it is not trained yet."""
    folder = TOY_FACES_DIR
    if not toy_faces_available(folder):
        raise ModelNotAvailableError(
            f"built-in model 'toy-faces' has not been trained yet: {folder} has no "
            f"config.json + {_WEIGHTS}.\n"
            f"Train it (about 80 min on a 2-core CPU, resumable) with:\n"
            f"  {TRAIN_COMMAND}\n"
            f"and, if it stops early, continue with:\n"
            f"  {TRAIN_COMMAND} --resume\n"
            f"(see docs/toyworld.md)"
        )
    return load_diffusers_folder(folder, backbone_id="toy-faces")


register_builtin(
    "toy-faces",
    "64x64 diffusers UNet2DModel trained on the built-in toy faces (predicts v, read as eps; linear 1e-4..0.02, T=1000), "
    "h [192, 8, 8]"
    + ("" if toy_faces_available() else f"; NOT TRAINED YET: run `{TRAIN_COMMAND}`"),
    load_toy_faces,
    replace=True,
)
