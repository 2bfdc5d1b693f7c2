"""Find and load (source, edited) image pairs: from an ``hspace edit`` output folder or two folders.

* :func:`pairs_from_run`: ``RUN_DIR/run.json`` (written by ``hspace edit``) lists the sources
  (``"inputs"``) and the directions (file, strength, header with the source/target texts); the edits
  are ``RUN_DIR/<stem>_edited.png``, stems made unique the way ``hspace edit`` makes them.
* :func:`pairs_from_folders`: two folders matched by file stem; an edited file may carry the
  ``_edited`` suffix (``a.png`` pairs with ``a.png`` or ``a_edited.png``).

Images are loaded as ``[N, 3, S, S]`` in [-1, 1] at the edited images' size (the first edited file's
shorter side); sources of another size are centre-cropped and resized to it (each change noted), so
that pixel metrics compare like with like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import find_images, load_images

__all__ = ["EDITED_SUFFIX", "EvalPairs", "edited_key", "pairs_from_folders", "pairs_from_run"]

EDITED_SUFFIX = "_edited"


@dataclass
class EvalPairs:
    """Loaded image pairs and what is known about the edit.

    Attributes:
        names: one name per pair (the source's stem).
        source, edited: ``[N, 3, S, S]`` in [-1, 1], paired by index.
        source_paths, edited_paths: the files, paired by index.
        unmatched_source, unmatched_edited: files that found no partner (skipped).
        failed: ``(path, reason)`` of files that did not load (their pair is skipped).
        notices: conversions made while loading (resizing, cropping, ...).
        source_text, target_text: the edit's texts when the run says them (one direction).
        strength: the direction's strength when the run has one direction, else None.
        directions: the run's direction records (path, strength, header); empty for folders.
        run: the parsed run.json, or None.
    """

    names: list[str]
    source: torch.Tensor
    edited: torch.Tensor
    source_paths: list[Path]
    edited_paths: list[Path]
    unmatched_source: list[Path] = field(default_factory=list)
    unmatched_edited: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    source_text: str | None = None
    target_text: str | None = None
    strength: float | None = None
    directions: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def record(self) -> dict[str, Any]:
        """JSON-ready description (no tensors)."""
        return {
            "n_pairs": len(self),
            "pairs": [{"name": n, "source": str(s), "edited": str(e)}
                      for n, s, e in zip(self.names, self.source_paths, self.edited_paths)],
            "unmatched_source": [str(p) for p in self.unmatched_source],
            "unmatched_edited": [str(p) for p in self.unmatched_edited],
            "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
            "notices": list(self.notices),
            "image_size": int(self.edited.shape[-1]) if self.edited.numel() else None,
        }


def edited_key(path: Path | str) -> str:
    """The source stem an edited file belongs to: its stem without a trailing ``_edited``."""
    stem = Path(path).stem
    return stem[: -len(EDITED_SUFFIX)] if stem.endswith(EDITED_SUFFIX) and len(stem) > len(EDITED_SUFFIX) else stem


def _unique_stems(paths: list[Path]) -> list[str]:
    """``a``, ``a_2``, ... exactly as ``hspace edit`` names outputs of same-named inputs."""
    out: list[str] = []
    used: set[str] = set()
    for p in paths:
        stem, k, name = p.stem, 2, p.stem
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        out.append(name)
    return out


def _side(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(min(im.size))
    except Exception as err:  # noqa: BLE001 - reported with the file name
        raise ValueError(f"cannot read edited image {path} ({type(err).__name__}: {err}); fix or remove it") from err


def _load(names: list[str], sources: list[Path], edits: list[Path], **extra: Any) -> EvalPairs:
    if not names:
        raise ValueError("no (source, edited) pairs to evaluate")
    size = _side(edits[0])
    ls, le = load_images(sources, size), load_images(edits, size)
    ok_s, ok_e = set(ls.paths), set(le.paths)
    keep = [i for i in range(len(names)) if sources[i] in ok_s and edits[i] in ok_e]
    if not keep:
        raise ValueError(f"no pair could be loaded: sources {ls.summary()}; edited {le.summary()}")
    si = {p: i for i, p in enumerate(ls.paths)}
    ei = {p: i for i, p in enumerate(le.paths)}
    return EvalPairs(
        names=[names[i] for i in keep],
        source=ls.images[[si[sources[i]] for i in keep]],
        edited=le.images[[ei[edits[i]] for i in keep]],
        source_paths=[sources[i] for i in keep],
        edited_paths=[edits[i] for i in keep],
        failed=list(ls.failed) + list(le.failed),
        notices=list(ls.notices) + list(le.notices),
        **extra,
    )


def pairs_from_folders(source: Path | str, edited: Path | str) -> EvalPairs:
    """Pair the images of two folders by stem (see the module docstring) and load them.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder has no images, two edited files claim the same source, or nothing pairs up
            (the message shows stems from both sides and the naming rule).
    """
    src_files, edt_files = find_images([Path(source)]), find_images([Path(edited)])
    by_key: dict[str, Path] = {}
    for p in edt_files:
        k = edited_key(p)
        if k in by_key:
            raise ValueError(f"edited files {by_key[k].name} and {p.name} both pair with source stem {k!r}; "
                             "keep one of them (or move it to another folder)")
        by_key[k] = p
    names, sources, edits, unmatched = [], [], [], []
    for p in src_files:
        e = by_key.pop(p.stem, None)
        if e is None:
            unmatched.append(p)
        else:
            names.append(p.stem)
            sources.append(p)
            edits.append(e)
    if not names:
        raise ValueError(
            f"no edited image in {edited} matches a source in {source} by name (sources e.g. "
            f"{', '.join(p.name for p in src_files[:3])}; edited e.g. {', '.join(p.name for p in edt_files[:3])}); "
            f"name each edit like its source, e.g. a.png -> a.png or a{EDITED_SUFFIX}.png"
        )
    return _load(names, sources, edits, unmatched_source=unmatched, unmatched_edited=sorted(by_key.values()))


def pairs_from_run(run_dir: Path | str) -> EvalPairs:
    """Load the pairs of an ``hspace edit`` output folder, with the direction's texts and strength.

    Raises:
        FileNotFoundError: no ``run.json`` in ``run_dir``, or a source it lists is gone (the message
            says to use ``--source DIR --edited DIR`` instead).
        ValueError: ``run.json`` is not an ``hspace edit`` record, or no edited image is there.
    """
    run_dir = Path(run_dir).expanduser()
    rj = run_dir / "run.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist; pass the --output folder of `hspace edit`")
    if not rj.is_file():
        raise FileNotFoundError(
            f"{rj} not found: {run_dir} is not an `hspace edit` output folder; for any two image folders use "
            "`hspace eval --source DIR --edited DIR`"
        )
    try:
        run = json.loads(rj.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {rj} ({type(err).__name__}: {err}); it should be the JSON `hspace edit` wrote") from err
    if not isinstance(run, dict) or run.get("command") != "edit" or not isinstance(run.get("inputs"), list):
        raise ValueError(f"{rj} is not an `hspace edit` record (needs \"command\": \"edit\" and \"inputs\"); "
                         "for other folders use `hspace eval --source DIR --edited DIR`")
    inputs = [Path(p) for p in run["inputs"]]
    names, sources, edits, missing_edit = [], [], [], []
    for p, stem in zip(inputs, _unique_stems(inputs)):
        e = run_dir / f"{stem}{EDITED_SUFFIX}.png"
        if not e.is_file():
            missing_edit.append(p)
            continue
        if not p.is_file():
            raise FileNotFoundError(
                f"source image {p} listed in {rj} no longer exists; put it back, or evaluate with "
                f"`hspace eval --source DIR --edited {run_dir}`"
            )
        names.append(stem)
        sources.append(p)
        edits.append(e)
    if not names:
        raise ValueError(f"no <stem>{EDITED_SUFFIX}.png files in {run_dir} for the {len(inputs)} inputs of {rj}")
    directions = [d for d in run.get("directions") or [] if isinstance(d, dict)]
    extra: dict[str, Any] = {"directions": directions, "run": run, "unmatched_source": missing_edit}
    if len(directions) == 1:
        meta = (directions[0].get("header") or {}).get("meta") or {}
        extra["source_text"] = meta.get("source_text")
        extra["target_text"] = meta.get("target_text")
        s = directions[0].get("strength")
        extra["strength"] = float(s) if isinstance(s, (int, float)) else None
    return _load(names, sources, edits, **extra)
