"""The direction files shipped for the built-in models (``hspace/data/directions/<model>/``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIRECTIONS_DIR", "PREFERRED_ORDER", "shipped_direction_files"]

#: Where shipped direction files live, one folder per built-in model name.
DIRECTIONS_DIR = Path(__file__).resolve().parent / "data" / "directions"

#: Shipped toy directions come first in this order (``--quick`` analyses the first two).
PREFERRED_ORDER: tuple[str, ...] = ("smiling", "glasses", "blond", "eyes_closed", "hat", "beard")


def shipped_direction_files(model: str, root: Path | None = None) -> list[Path]:
    """The ``*.safetensors`` files in ``<root>/<model>/``, preferred names first, then by name; [] if none."""
    folder = (DIRECTIONS_DIR if root is None else Path(root)) / model
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.safetensors"))
    rank = {n: i for i, n in enumerate(PREFERRED_ORDER)}
    return sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.name))
