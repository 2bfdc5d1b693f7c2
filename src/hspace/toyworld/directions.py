"""The shipped toy-world directions: trained from text with the small CLIP on ``toy-faces``.

Each direction is the paper's implicit ``f_t`` trained with the CLIP directional loss + L1
(:class:`hspace.trainer.Trainer`, unchanged), from a source text to a target text, on faces
from a training seed that the evaluation never uses. The recipe (:class:`DirectionRecipe`) and
the texts (:data:`TOY_DIRECTIONS`) are everything that determines a shipped file; the files
land in :data:`DIRECTIONS_DIR` (``src/hspace/data/directions/toy-faces/<name>.safetensors``;
:func:`shipped_direction_path` finds one by name; ``hspace edit`` takes the file's path and
``hspace analyze`` also takes the name).

Evaluation (:func:`evaluate_direction`): 100 held-out faces are inverted, edited at strength 1
and judged by the attribute probe (:func:`hspace.evaluation.factors.evaluate_toy_edit`):
target success and preservation of every other factor.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..presets import TrainDefaults
from ..shipped import DIRECTIONS_DIR as SHIPPED_DIRECTIONS_DIR
from .faces import FaceFactors, factors_for, with_factor

__all__ = [
    "DIRECTIONS_DIR",
    "TRAIN_SEED",
    "ToyDirection",
    "TOY_DIRECTIONS",
    "DirectionRecipe",
    "face_images",
    "shipped_direction_path",
    "train_direction",
    "recipe_for",
    "mean_difference_for",
    "h_oracle_edit",
    "h_oracle_edits",
    "skip_resolutions",
    "evaluate_direction",
    "target_twin",
    "mean_colour_change",
]

DIRECTIONS_DIR = SHIPPED_DIRECTIONS_DIR / "toy-faces"
TRAIN_SEED = 2  # faces the shipped directions train on (the probe trains on 0, evaluations use EVAL_SEED)
TRAIN_COMMAND = "hspace toyworld train-directions"


@dataclass(frozen=True)
class ToyDirection:
    """One shipped direction: its texts and the factor target it is judged on
    (a key of :data:`hspace.evaluation.factors.TOY_TARGETS`)."""

    name: str
    source: str
    target: str
    judged_as: str
    #: this direction's SGD learning rate, in place of the recipe's (None: the recipe's)
    lr: Optional[float] = None
    #: this direction's editing interval start, in place of the recipe's (None: the recipe's)
    t_edit: Optional[int] = None
    #: this direction's training band top, in place of the recipe's (None: the recipe's)
    t_edit_max: Optional[int] = None
    #: this direction's editing band top written into its file, in place of the recipe's (None: the recipe's)
    edit_t_max: Optional[int] = None
    #: this direction's off-axis CLIP penalty weight, in place of the recipe's (None: the recipe's)
    w_off: Optional[float] = None


TOY_DIRECTIONS: dict[str, ToyDirection] = {d.name: d for d in (
    # the source text names the attribute's absence where the captions have words for it, so the
    # text direction isolates the attribute (measured on glasses: success 0.95 vs 0.90 from "a face")
    # Own rates and intervals, for the v-prediction toy-faces, chosen by the sweep of 2026-11-26
    # (scripts/sweep_directions.py on 100 validation faces that check never uses; target reached /
    # worst other factor kept, docs/results/direction-sweep-gpu): t_edit 300 dominates 500 for four
    # of five, e.g. smiling 0.91 / 0.80 (lr 0.5, t 300) against 0.72 / 0.80 (lr 1, t 500); hat
    # stays at 500 (0.95 / 0.66; t 300: 0.95 / 0.63). t_edit 700 reaches almost nothing but the hat.
    # smiling is trained to the top at 0.75 and edited in the band 300-700 only: on the validation
    # faces 0.94 / 0.90, against 0.89 / 0.80 edited to the top (lr 0.5) and 0.84 / 0.88 trained
    # in the band too (scripts/band_at_edit.py; docs/toyworld.md, "Editing band")
    ToyDirection("smiling", "a neutral face", "a smiling face", "smiling", lr=0.75, t_edit=300, edit_t_max=700),
    # no off-axis penalty (w_off) for any: on the validation faces it kept more at the same reach
    # (glasses, w_off 6: 0.94 / 0.83 against 0.94 / 0.74), but on check's faces it reached less
    # (0.64 / 0.88 against the shipped 0.81 / 0.76); docs/toyworld.md, "Off-axis penalty"
    ToyDirection("glasses", "a face without glasses", "a face with glasses", "glasses", lr=0.125, t_edit=300),
    ToyDirection("blond", "a face", "a face with blond hair", "blond", lr=2.0, t_edit=300),
    ToyDirection("eyes_closed", "a face, eyes open", "a face, eyes closed", "eyes_closed", lr=0.25, t_edit=300),
    ToyDirection("hat", "a face without a hat", "a face with a hat", "hat", lr=2.0),
)}


@dataclass
class DirectionRecipe:
    """Everything that determines a shipped direction besides its texts."""

    n_images: int = 20
    data_seed: int = TRAIN_SEED
    t_edit: int = 500
    #: top of the training band (None: up to the grid's top, the paper's interval)
    t_edit_max: Optional[int] = None
    #: top of the editing band written into the file, for a direction trained to a higher top
    #: (None: the training band's). Trained to the top and edited in a band, smiling kept more
    #: than when trained in the band too (docs/toyworld.md, "Editing band").
    edit_t_max: Optional[int] = None
    n_steps: int = 40
    n_inv_steps: int = 40
    #: the direction's kind (:data:`hspace.trainer.DIRECTION_KINDS`); the paper's implicit f_t for the shipped files
    kind: str = "implicit-ddpm"
    lr: float = 0.5
    epochs: int = 1
    batch_size: int = 1
    w_clip: float = 1.0
    w_l1: float = 3.0
    #: weight of the off-axis CLIP penalty (:class:`~hspace.objectives.clip.CLIPOffAxisPenalty`; 0: the paper's objective)
    w_off: float = 0.0
    precision: str = "bf16"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``hspace train --model toy-faces``'s defaults where the user gives none and the target text names no
#: shipped direction (:func:`toy_faces_train_defaults`): the shipped glasses recipe. hspace's own 500 / 0.5
#: gave glasses 1.00 / 0.41 on the validation faces, this recipe 0.94 / 0.75 (docs/results/direction-sweep-gpu).
TOY_FACES_TRAIN_DEFAULTS = TrainDefaults(
    t_edit=300, lr=0.125,
    why="the shipped glasses recipe, as the target text names no shipped direction; "
        "other edits may want another --lr (the shipped directions use 0.125-2)")


def toy_faces_train_defaults(target_text: Optional[str] = None) -> TrainDefaults:
    """``hspace train --model toy-faces``'s defaults for a target text: the recipe of the shipped
    direction the text names (``"smiling face"`` -> smiling's lr 0.75 and t_edit 300; matched as
    ``hspace eval`` matches toy targets), else :data:`TOY_FACES_TRAIN_DEFAULTS`. The rates differ
    16-fold between the shipped directions (0.125-2), so one rate cannot suit every edit."""
    from ..evaluation.factors import match_toy_target

    name = match_toy_target(target_text)
    spec = next((d for d in TOY_DIRECTIONS.values() if d.judged_as == name), None) if name else None
    if spec is None:
        return TOY_FACES_TRAIN_DEFAULTS
    own = recipe_for(spec, DirectionRecipe())
    return TrainDefaults(t_edit=own.t_edit, lr=own.lr, w_off=own.w_off,
                         why=f"the shipped {spec.name} direction's recipe, as the target text names {name}")


def recipe_for(spec: ToyDirection, recipe: DirectionRecipe) -> DirectionRecipe:
    """``recipe`` with ``spec``'s own learning rate, editing interval and off-axis weight where it
    has them (:attr:`ToyDirection.lr`, :attr:`ToyDirection.t_edit`, :attr:`ToyDirection.t_edit_max`,
    :attr:`ToyDirection.edit_t_max`, :attr:`ToyDirection.w_off`)."""
    own = {k: v for k, v in (("lr", spec.lr), ("t_edit", spec.t_edit), ("t_edit_max", spec.t_edit_max),
                             ("edit_t_max", spec.edit_t_max), ("w_off", spec.w_off)) if v is not None}
    return dataclasses.replace(recipe, **own)


def face_images(seed: int, n: int, start: int = 0, supersample: int = 4) -> torch.Tensor:
    """Faces ``start .. start + n - 1`` of dataset ``seed`` as ``[n, 3, 64, 64]`` in [-1, 1]."""
    from .dataset import render_faces

    return render_faces([factors_for(seed, start + i) for i in range(n)], 64, supersample)


def shipped_direction_path(name: str, folder: Optional[Path] = None) -> Optional[Path]:
    """The file of direction ``name`` (``smiling``, ``glasses``, ...) in ``folder`` (default the
    shipped :data:`DIRECTIONS_DIR`), or None when there is none."""
    path = (DIRECTIONS_DIR if folder is None else Path(folder)) / f"{name}.safetensors"
    return path if path.is_file() else None


def train_direction(backbone, encoder, spec: ToyDirection, recipe: DirectionRecipe, latents: torch.Tensor,
                    images: torch.Tensor, checkpoint: Optional[Path] = None, progress: bool = True):
    """Train ``spec`` on already inverted faces; returns the trainer's output (``.direction``,
    ``.losses``, ``.steps``). ``latents`` come from :meth:`hspace.editor.Editor.invert` with
    ``recipe.n_inv_steps``."""
    from ..objectives import make_clip_objective
    from ..trainer import TrainConfig, Trainer

    cfg = TrainConfig(t_edit=recipe.t_edit, t_edit_max=recipe.t_edit_max, n_train_steps=recipe.n_steps, n_inv_steps=recipe.n_inv_steps,
                      direction_kind=recipe.kind, lr=recipe.lr, epochs=recipe.epochs,
                      batch_size=recipe.batch_size, precision=recipe.precision, seed=recipe.seed,
                      source_text=spec.source, target_text=spec.target, progress=progress)
    objective = make_clip_objective(encoder, spec.source, spec.target, w_clip=recipe.w_clip, w_l1=recipe.w_l1,
                                    w_off=recipe.w_off)
    trainer = Trainer(backbone, objective, cfg)
    out = trainer.train(trainer.data_from_latents(latents, images), checkpoint=checkpoint)
    meta = out.direction.meta
    weights = {"clip": recipe.w_clip, "l1": recipe.w_l1, "off": recipe.w_off}  # as `hspace train` records them
    out.direction.meta = meta.replace(extra={**meta.extra, "weights": weights})
    if recipe.edit_t_max is not None:  # edited in a narrower band than it was trained in (DirectionMeta checks it)
        out.direction.meta = out.direction.meta.replace(t_edit_max=recipe.edit_t_max)
    return out


def mean_difference_for(backbone, spec: ToyDirection, recipe: DirectionRecipe, invert) -> tuple[Any, int]:
    """The reference direction of ``spec`` without text or training: the mean difference of h
    (:func:`hspace.directions.mean_difference_direction`, on the recipe's grid and ``t_edit``)
    between the recipe's training faces that the target changes and their exact edits
    (:func:`target_twin`). ``invert`` maps images to x_T (e.g. ``Editor.invert`` with
    ``recipe.n_inv_steps``). Returns the direction and the number of face pairs used."""
    from ..directions import mean_difference_direction
    from .dataset import render_faces

    pairs = [(f, target_twin(f, spec.judged_as)) for f in (factors_for(recipe.data_seed, i) for i in range(recipe.n_images))]
    pairs = [(f, twin) for f, twin in pairs if twin is not None]
    if not pairs:
        raise ValueError(f"none of the {recipe.n_images} training faces can be edited towards {spec.judged_as}; use more faces")
    direction = mean_difference_direction(
        backbone, invert(render_faces([f for f, _ in pairs])), invert(render_faces([t for _, t in pairs])),
        n_steps=recipe.n_steps, t_edit=recipe.t_edit, precision=recipe.precision,
        source_text=spec.source, target_text=spec.target,
        extra={"toy_reference": {"judged_as": spec.judged_as, "data_seed": recipe.data_seed, "pairs": len(pairs)}},
    )
    return direction, len(pairs)


@torch.no_grad()
def skip_resolutions(backbone) -> list[int]:
    """The spatial sizes of ``backbone``'s skip activations (the decoder's levels), coarsest first:
    ``[8, 16, 32, 64]`` on toy-faces."""
    size = backbone.image_size
    enc = backbone.encode(torch.zeros(1, backbone.in_channels, size, size, device=backbone.device),
                          backbone.alphas_cumprod.shape[0] - 1)
    return sorted({s.shape[-1] for s in enc.skips})


def h_oracle_edit(backbone, source_latents: torch.Tensor, twin_latents: torch.Tensor, n_steps: int, t_edit: int,
                  precision: str = "bf16", batch_size: int = 25, levels: Sequence[int] = (),
                  t_edit_max: Optional[int] = None) -> torch.Tensor:
    """Each source face edited with the h of its own exact edit: for ``t >= t_edit``,
    ``dh = h_t(twin) - h_t(source)`` along the two unedited trajectories, applied with the Asyrp
    step; plain DDIM below. It moves h exactly as much as the face's own exact edit moves it, so
    a factor this misses is not carried by h's natural variation on ``backbone``: a direction can
    still reach it, but only by moving h beyond anything real faces do (on ``toy-faces`` the
    trained glasses direction does, and that is where its side effects come from, docs/toyworld.md).

    ``levels`` (skip resolutions in pixels, e.g. ``(8, 16)``) also gives each of the decoder's skip
    activations of those sizes the same change (``skip(twin) - skip(source)``, only in e~, as for
    h): where an edit appears only once a level is added, that level carries it, not h. With every
    level, e~ at the first step is the twin's own eps. The source's and twin's inverted latents
    differ everywhere, and the edit pushes P_t along that whole difference: read the target column
    of the first level set that reaches an edit; the oracle's side effects are its own
    (docs/toyworld.md, "Which level carries each edit").

    ``t_edit_max`` edits only where ``t_edit <= t <= t_edit_max`` (an editing band, as
    ``EditConfig.t_edit_max``), plain DDIM above. At the top steps the two trajectories' h differ
    mostly because their inverted latents do, not because of the edit.
    Returns the edited images ``[N, 3, S, S]``."""
    return h_oracle_edits(backbone, source_latents, twin_latents, n_steps, t_edit, [levels], precision, batch_size,
                          t_edit_max)[0]


@torch.no_grad()
def h_oracle_edits(backbone, source_latents: torch.Tensor, twin_latents: torch.Tensor, n_steps: int, t_edit: int,
                   level_sets: Sequence[Sequence[int]], precision: str = "bf16", batch_size: int = 25,
                   t_edit_max: Optional[int] = None) -> list[torch.Tensor]:
    """:func:`h_oracle_edit` for several ``levels`` at once, one result per entry of ``level_sets``:
    the source's and twin's unedited trajectories are walked once for all of them."""
    from ..precision import network_autocast, to_memory_format
    from ..sampler import asymmetric_step, ddim_step
    from ..schedule import abar_at, ddim_grid, generation_pairs

    if t_edit_max is not None and t_edit_max < t_edit:
        raise ValueError(f"t_edit_max ({t_edit_max}) is below t_edit ({t_edit}): the band would be empty")
    if source_latents.shape != twin_latents.shape:
        raise ValueError(f"source and twin latents differ in shape: {tuple(source_latents.shape)} "
                         f"and {tuple(twin_latents.shape)}")
    wanted = [set(levels) for levels in level_sets]
    every = set().union(*wanted)
    if every and not every <= set(sizes := skip_resolutions(backbone)):
        raise ValueError(f"levels {sorted(every - set(sizes))} are not skip resolutions of this model (it has {sizes})")
    ac = backbone.alphas_cumprod
    pairs = generation_pairs(ddim_grid(n_steps, ac.shape[0] - 1))
    out: list[list[torch.Tensor]] = [[] for _ in wanted]
    for i in range(0, source_latents.shape[0], batch_size):
        x_src, x_twin = source_latents[i:i + batch_size].float(), twin_latents[i:i + batch_size].float()
        xs = [x_src] * len(wanted)  # one edited trajectory per level set
        for t, t_next in pairs:
            tt = torch.full((x_src.shape[0],), float(t), device=x_src.device)
            a, a_next = abar_at(ac, t), abar_at(ac, t_next)
            walking = t >= t_edit  # the two unedited trajectories walk down to the band's bottom
            editing = walking and (t_edit_max is None or t <= t_edit_max)
            with network_autocast(precision, x_src.device):
                if walking:  # ... in step with the edited ones
                    e_src, e_twin = (backbone.encode(to_memory_format(y, precision), tt) for y in (x_src, x_twin))
                    eps_src, eps_twin = backbone.decode(e_src).float(), backbone.decode(e_twin).float()
                if walking and not editing:  # above the band every edited trajectory is still the source's
                    steps = [(eps_src, eps_src)] * len(xs)
                else:
                    steps = []
                    for x, level in zip(xs, wanted):
                        enc = backbone.encode(to_memory_format(x, precision), tt)
                        eps = backbone.decode(enc)
                        eps_edit = eps
                        if editing:
                            skips = tuple(s + (w - o) if s.shape[-1] in level else s
                                          for s, o, w in zip(enc.skips, e_src.skips, e_twin.skips))
                            h_edit = enc.h + (e_twin.h - e_src.h)
                            eps_edit = backbone.decode(dataclasses.replace(enc, h=h_edit, skips=skips), h_edit)
                        steps.append((eps.float(), eps_edit.float()))
            xs = [asymmetric_step(x, eps, eps_edit, a, a_next).x_next for x, (eps, eps_edit) in zip(xs, steps)]
            if walking:
                x_src, x_twin = (ddim_step(y, e, a, a_next).x_next for y, e in ((x_src, eps_src), (x_twin, eps_twin)))
        for results, x in zip(out, xs):
            results.append(x)
    return [torch.cat(results) for results in out]


#: The smile of the exact "smiling" edit (the probe's success rule asks for >= 0.5 or a 0.3 step).
TWIN_SMILE = 0.8


def target_twin(factors: FaceFactors, judged_as: str, strength: float = 1.0) -> Optional[FaceFactors]:
    """``factors`` with the targeted factor set as the edit asks: the exact edit, to compare with
    what a direction did. None when the face already meets the target, or the target only removes a
    category (``strength < 0`` on hair colour: no single answer)."""
    from ..evaluation.factors import resolve_toy_target

    t = resolve_toy_target(judged_as, strength)
    if t.factor == "smile":
        value = max(factors.smile, TWIN_SMILE) if t.value == "up" else min(factors.smile, -TWIN_SMILE)
    elif t.negated:
        return None
    else:
        value = t.value
    twin = with_factor(factors, **{t.factor: value})
    return None if twin == factors else twin


def mean_colour_change(sources: torch.Tensor, reconstructions: torch.Tensor, edited: torch.Tensor,
                       factors: Sequence[FaceFactors], judged_as: str, strength: float = 1.0) -> dict[str, Any]:
    """How far an edit moved each image's mean colour (edited - reconstruction, the mean over
    pixels and RGB on [-1, 1]) against how far the exact edit moves it (:func:`target_twin` -
    source), over the faces the target changes.

    A model whose eps cannot follow the image mean (toy-faces: :func:`~hspace.toyworld.quality.mean_response`
    ~0) cannot change it either, so an edit that needs a brighter or darker image (blond hair,
    dark glasses) must fail or move colour between regions instead (skin tone, hair colour).
    """
    from .dataset import render_faces

    twins = {i: target_twin(f, judged_as, strength) for i, f in enumerate(factors)}
    idx = [i for i, t in twins.items() if t is not None]
    if not idx:
        return {"n": 0}
    exact = render_faces([twins[i] for i in idx])

    def mean(x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(1, 2, 3))

    made = mean(edited[idx]) - mean(reconstructions[idx])
    needed = mean(exact) - mean(sources[idx])
    return {"n": len(idx), "edit_mean": float(made.mean()), "needed_mean": float(needed.mean()),
            "edit_abs": float(made.abs().mean()), "needed_abs": float(needed.abs().mean())}


def evaluate_direction(editor, probe, direction, latents: torch.Tensor, sources: torch.Tensor, judged_as: str,
                       strength: float = 1.0, reconstructions: Optional[torch.Tensor] = None,
                       factors: Optional[Sequence[FaceFactors]] = None) -> dict[str, Any]:
    """Edit inverted held-out faces at ``strength`` and judge them with the probe
    (:func:`~hspace.evaluation.factors.evaluate_toy_edit`; a negative strength reverses the target).
    Adds ``success_rate``, ``worst_factor``, ``min_preserved`` and ``passed`` to its report, and
    ``mean_colour`` (:func:`mean_colour_change`) when the unedited ``reconstructions`` and the
    sources' ``factors`` are given."""
    from ..evaluation.factors import evaluate_toy_edit

    t0 = time.perf_counter()
    out = editor.edit(latents, [(direction, strength)])
    report = evaluate_toy_edit(probe, sources, out.images.clamp(-1, 1), judged_as, strength)
    if reconstructions is not None and factors is not None:
        report["mean_colour"] = mean_colour_change(sources, reconstructions, out.images.clamp(-1, 1), factors,
                                                   judged_as, strength)
    report["strength"] = strength
    report["success_rate"] = report["success"]["rate"]
    kept = {f: p["rate"] for f, p in report["preservation"].items()}
    report["worst_factor"] = min(kept, key=kept.get)
    report["min_preserved"] = kept[report["worst_factor"]]
    report["passed"] = bool(report["passes"])
    report["edit_seconds"] = round(time.perf_counter() - t0, 1)
    return report

