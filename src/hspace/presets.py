"""Which of the paper's interval presets belongs to a known model (DESIGN.md 1.6, section 4), and
the training defaults of a model that has its own (:func:`train_defaults_for`: the built-in
``toy-faces``, measured on it, not from the paper).

The paper measured its editing-strength and quality-deficiency curves (the official LPIPS
tables in :mod:`hspace.interval`) for five datasets. A model trained on one of them gets
that preset's t_edit / t_boost when the user gives neither and no direction file or cached
curve does:

* diffusers hub ids: ``google/ddpm-ema-celebahq-256`` -> celeba, ``google/ddpm-ema-church-256``
  -> church, ``google/ddpm-ema-bedroom-256`` -> bedroom (and the same for the non-EMA
  ``google/ddpm-*-256`` repos: same architecture and data, so the same curves to within the
  tables' precision);
* ``google/ddpm-ema-cat-256`` (LSUN cat): **no preset** -- the paper has no table for it;
  measure one with ``hspace interval``;
* the named real checkpoints (``hspace models``): their ``interval_preset`` in
  :data:`hspace.backbones.checkpoints.NAMED_MODELS` (e.g. ``ddpm:celebahq-256`` -> celeba,
  ``adm:p2-metfaces-256`` -> metface; ``adm:imagenet-256-uncond`` has none).

Example:
    >>> preset_for_backbone("google/ddpm-ema-celebahq-256")
    'celeba'
    >>> preset_for_backbone("google/ddpm-ema-cat-256") is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HUB_PRESETS", "NO_PRESET_REASONS", "TrainDefaults", "known_presets", "preset_for_backbone", "preset_source", "no_preset_reason",
           "train_defaults_for"]

#: diffusers hub ids and their interval preset (None: known model, no table in the paper).
HUB_PRESETS: dict[str, str | None] = {
    "google/ddpm-ema-celebahq-256": "celeba",
    "google/ddpm-ema-church-256": "church",
    "google/ddpm-ema-bedroom-256": "bedroom",
    "google/ddpm-ema-cat-256": None,
    "google/ddpm-celebahq-256": "celeba",
    "google/ddpm-church-256": "church",
    "google/ddpm-bedroom-256": "bedroom",
    "google/ddpm-cat-256": None,
}

#: Why a known model has no preset.
NO_PRESET_REASONS: dict[str, str] = {
    "google/ddpm-ema-cat-256": "the paper has no interval table for LSUN cat",
    "google/ddpm-cat-256": "the paper has no interval table for LSUN cat",
}


def _key(backbone_id: str) -> str:
    """Normalise an id: strip whitespace, a trailing '/', a ``=PATH`` weights suffix; lower-case."""
    key = str(backbone_id).strip()
    if "=" in key:  # "ddpm:celebahq-256=/path/to/celeba_hq.ckpt"
        key = key.split("=", 1)[0].strip()
    return key.rstrip("/").lower()


def known_presets() -> dict[str, str | None]:
    """Every model id hspace knows a preset answer for: hub ids and named checkpoints."""
    from .backbones.checkpoints import NAMED_MODELS

    out = dict(HUB_PRESETS)
    out.update({name: m.interval_preset for name, m in NAMED_MODELS.items()})
    return out


def preset_for_backbone(backbone_id: str | None) -> str | None:
    """The paper's interval preset for a model id (hub id or named checkpoint), else None.

    Unknown ids (local folders, built-in toy models) and known models without a table
    (``google/ddpm-ema-cat-256``, ``adm:imagenet-256-uncond``) give None.
    """
    if not backbone_id:
        return None
    from .interval import resolve_preset

    table = {_key(k): v for k, v in known_presets().items()}
    preset = table.get(_key(backbone_id))
    return resolve_preset(preset) if preset is not None else None


def no_preset_reason(backbone_id: str | None) -> str | None:
    """For a *known* model without a preset, why (e.g. LSUN cat); None otherwise."""
    if not backbone_id:
        return None
    key = _key(backbone_id)
    for k, why in NO_PRESET_REASONS.items():
        if _key(k) == key:
            return why
    table = {_key(k): v for k, v in known_presets().items()}
    if key in table and table[key] is None:
        return "the paper has no interval table for this model"
    return None


def preset_source(preset: str, backbone_id: str) -> str:
    """The provenance string recorded for an automatic choice: ``"preset:celeba for <id>"``."""
    return f"preset:{preset} for {backbone_id}"


@dataclass(frozen=True)
class TrainDefaults:
    """A model's own defaults for ``hspace train``, used where the user gives no value.

    Measured for the model (not from the paper): see where each entry is defined.

    Attributes:
        t_edit: editing interval start.
        lr: SGD learning rate.
        w_off: weight of the off-axis CLIP penalty (:class:`hspace.objectives.CLIPOffAxisPenalty`).
        t_edit_max: editing band top (None: the paper's interval, up to the top).
        why: one line on where the values come from, printed with them.
    """

    t_edit: int
    lr: float
    w_off: float = 0.0
    t_edit_max: int | None = None
    why: str = ""


def train_defaults_for(backbone_id: str | None, target_text: str | None = None) -> TrainDefaults | None:
    """``hspace train``'s defaults for a model with its own (the built-in ``toy-faces``: per
    target text, :func:`hspace.toyworld.directions.toy_faces_train_defaults`), else None."""
    if backbone_id and _key(backbone_id) == "toy-faces":
        from .toyworld.directions import toy_faces_train_defaults

        return toy_faces_train_defaults(target_text)
    return None
