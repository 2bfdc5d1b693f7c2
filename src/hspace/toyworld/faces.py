"""Procedural cartoon faces with known ground-truth factors (numpy + Pillow only).

Every image is a pure function of a :class:`FaceFactors` record, and every record is a pure
function of ``(seed, index)`` (:func:`factors_for`), so a dataset of any length can be
regenerated bit for bit, and an image can be re-rendered with exactly ONE factor changed
(:func:`with_factor`): everything else, pose included, stays identical. That is the "factor
flipped by the generator itself" that evaluations of semantic edits need.

Factors (see :data:`FACTORS` for the machine-readable description):

=============  ============  ==================================================================
smile          continuous    -1 (deep frown) .. 0 (straight mouth) .. +1 (big open smile);
                             the mouth arc's curvature follows it, above 0.3 the mouth opens
eyes_open      binary        open eyes (white, iris, highlight) or closed (a dark lower arc)
glasses        binary        two round dark rims + bridge + temple arms, in the eye band
hair_color     categorical   black, brown, blond, red, grey (hair, eyebrows and beard)
hair_style     categorical   short (cap + fringe), long (down to the shoulders), curly (curls)
skin_tone      categorical   5 tones, index 0 (lightest) .. 4 (darkest)
face_shape     categorical   round, oval, square
hat            binary        a crimson hat with a white band above the head (the close-up shows
                             its brim and band at the top)
beard          binary        a beard in the hair colour around the chin, mouth kept visible
background     categorical   8 colours (:data:`BACKGROUNDS`)
dx, dy         continuous    shift in [-0.05, 0.05] of the layout (x FRAME_ZOOM in the image)
scale          continuous    in [0.92, 1.08]
tilt           continuous    head tilt in degrees, in [-8, 8] (counter-clockwise positive)
=============  ============  ==================================================================

Rendering is anti-aliased: the scene is drawn with ``PIL.ImageDraw`` at ``size * supersample``
on a canvas with a margin, posed and framed with one affine resample (shift, scale, tilt about
the face centre, then the close-up zoom), then downsampled with LANCZOS.

Framing: a close-up, like the aligned face crops the paper's models were trained on (CelebA-HQ):
the face is drawn :data:`FRAME_ZOOM` (1.6) times larger than the scene's layout and fills the
frame; the hat shows as its brim and band at the top. At 64x64 this makes the eyes, glasses and
mouth span whole cells of the U-Net's 8x8 bottleneck (h) instead of a few pixels, which is what
lets h carry the smile and the glasses (``docs/toyworld.md``, "Close-up framing").

Speed (measured on one core of a 2-core development machine shared with other jobs, 64x64,
factor sampling included): about 310 images/s at ``supersample=4`` (the default) and 510
images/s at ``supersample=3`` (visually indistinguishable at 64x64); a full dataset item
(image tensor + labels + caption) about 270/s at the default. :func:`benchmark` measures it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

# --------------------------------------------------------------------------- vocabularies

HAIR_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (32, 28, 30),
    "brown": (96, 52, 20),
    "blond": (236, 200, 100),
    "red": (204, 72, 30),
    "grey": (172, 172, 178),
}
HAIR_STYLES: tuple[str, ...] = ("short", "long", "curly")
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 226, 200),
    (240, 192, 154),
    (212, 158, 114),
    (178, 126, 92),
    (126, 86, 66),
)
SKIN_TONE_NAMES: tuple[str, ...] = ("very light", "light", "medium", "tan", "dark")
FACE_SHAPES: tuple[str, ...] = ("round", "oval", "square")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "blue": (128, 184, 236),
    "green": (136, 204, 148),
    "pink": (242, 164, 196),
    "purple": (164, 134, 216),
    "navy": (52, 74, 138),
    "teal": (50, 146, 148),
    "lime": (192, 222, 96),
    "maroon": (128, 46, 68),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
HAIR_COLOR_NAMES: tuple[str, ...] = tuple(HAIR_COLORS)

HAT_COLOR = (196, 26, 52)
HAT_BAND = (250, 250, 250)
SHIRT_COLOR = (246, 246, 246)
INK = (28, 22, 26)  # eyes, glasses, mouth line

POSE_SHIFT = 0.05  # |dx|, |dy| <= this fraction of the layout (the image: x FRAME_ZOOM)
POSE_SCALE = (0.92, 1.08)
POSE_TILT = 8.0  # degrees

# Probability that each binary factor is True in sample_factors.
P_EYES_OPEN = 0.65
P_GLASSES = 0.4
P_HAT = 0.35
P_BEARD = 0.35

#: Machine-readable description of every factor (written as factors.json by the CLI).
FACTORS: dict[str, dict[str, Any]] = {
    "smile": {"type": "continuous", "range": [-1.0, 1.0],
              "doc": "mouth curvature: -1 deep frown, 0 straight, +1 big open smile (opens above 0.3)",
              "distribution": "uniform"},
    "eyes_open": {"type": "binary", "values": [False, True], "p_true": P_EYES_OPEN,
                  "doc": "open eyes, or closed eyes drawn as dark lower arcs"},
    "glasses": {"type": "binary", "values": [False, True], "p_true": P_GLASSES,
                "doc": "round dark glasses rims with bridge and temple arms"},
    "hair_color": {"type": "categorical", "values": list(HAIR_COLOR_NAMES),
                   "rgb": {k: list(v) for k, v in HAIR_COLORS.items()},
                   "doc": "colour of hair, eyebrows and beard", "distribution": "uniform"},
    "hair_style": {"type": "categorical", "values": list(HAIR_STYLES),
                   "doc": "short: cap + fringe; long: down to the shoulders; curly: a ring of curls",
                   "distribution": "uniform"},
    "skin_tone": {"type": "categorical", "values": list(range(len(SKIN_TONES))),
                  "names": list(SKIN_TONE_NAMES), "rgb": [list(c) for c in SKIN_TONES],
                  "doc": "index 0 lightest .. 4 darkest", "distribution": "uniform"},
    "face_shape": {"type": "categorical", "values": list(FACE_SHAPES), "distribution": "uniform"},
    "hat": {"type": "binary", "values": [False, True], "p_true": P_HAT,
            "doc": "crimson hat with a white band above the head (the close-up shows its brim and band)"},
    "beard": {"type": "binary", "values": [False, True], "p_true": P_BEARD,
              "doc": "beard in the hair colour around the chin; the mouth stays visible"},
    "background": {"type": "categorical", "values": list(BACKGROUND_NAMES),
                   "rgb": {k: list(v) for k, v in BACKGROUNDS.items()}, "distribution": "uniform"},
    "dx": {"type": "continuous", "range": [-POSE_SHIFT, POSE_SHIFT],
           "unit": "fraction of the layout width; the image moves FRAME_ZOOM times as far",
           "doc": "horizontal shift (pose)", "distribution": "uniform"},
    "dy": {"type": "continuous", "range": [-POSE_SHIFT, POSE_SHIFT],
           "unit": "fraction of the layout height; the image moves FRAME_ZOOM times as far",
           "doc": "vertical shift (pose)", "distribution": "uniform"},
    "scale": {"type": "continuous", "range": list(POSE_SCALE), "doc": "size (pose)", "distribution": "uniform"},
    "tilt": {"type": "continuous", "range": [-POSE_TILT, POSE_TILT], "unit": "degrees",
             "doc": "head tilt, counter-clockwise positive (pose)", "distribution": "uniform"},
}

_CATEGORIES: dict[str, tuple] = {
    "hair_color": HAIR_COLOR_NAMES,
    "hair_style": HAIR_STYLES,
    "skin_tone": tuple(range(len(SKIN_TONES))),
    "face_shape": FACE_SHAPES,
    "background": BACKGROUND_NAMES,
}


# --------------------------------------------------------------------------- factors


@dataclass(frozen=True)
class FaceFactors:
    """The ground truth of one face. Render it with :func:`render`."""

    smile: float = 0.0
    eyes_open: bool = True
    glasses: bool = False
    hair_color: str = "brown"
    hair_style: str = "short"
    skin_tone: int = 1
    face_shape: str = "round"
    hat: bool = False
    beard: bool = False
    background: str = "blue"
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    tilt: float = 0.0

    def __post_init__(self) -> None:
        if not -1.0 <= float(self.smile) <= 1.0:
            raise ValueError(f"smile must be in [-1, 1], got {self.smile}")
        for name, values in _CATEGORIES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {list(values)}, got {getattr(self, name)!r}")
        for name in ("eyes_open", "glasses", "hat", "beard"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def pose(self) -> tuple[float, float, float, float]:
        """(dx, dy, scale, tilt)."""
        return (self.dx, self.dy, self.scale, self.tilt)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (python floats / ints / bools / strs)."""
        d = dataclasses.asdict(self)
        for k in ("smile", "dx", "dy", "scale", "tilt"):
            d[k] = float(d[k])
        for k in ("eyes_open", "glasses", "hat", "beard"):
            d[k] = bool(d[k])
        d["skin_tone"] = int(d["skin_tone"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceFactors":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FaceFactors))


def with_factor(factors: FaceFactors, **changes: Any) -> FaceFactors:
    """A copy of ``factors`` with the named factors changed and everything else (pose included)
    identical, e.g. ``with_factor(f, glasses=not f.glasses)``."""
    unknown = set(changes) - set(FACTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown factor(s) {sorted(unknown)}; factors are {list(FACTOR_NAMES)}")
    return dataclasses.replace(factors, **changes)


def sample_factors(rng: np.random.Generator) -> FaceFactors:
    """Draw one face: smile and pose uniform, categories uniform, binary factors with
    probabilities :data:`P_EYES_OPEN` (0.65), :data:`P_GLASSES` (0.4), :data:`P_HAT` (0.35),
    :data:`P_BEARD` (0.35). Always draws the same number of values, in the same order."""
    u = rng.random(14)
    return FaceFactors(
        smile=float(2.0 * u[0] - 1.0),
        eyes_open=bool(u[1] < P_EYES_OPEN),
        glasses=bool(u[2] < P_GLASSES),
        hair_color=HAIR_COLOR_NAMES[int(u[3] * len(HAIR_COLOR_NAMES))],
        hair_style=HAIR_STYLES[int(u[4] * len(HAIR_STYLES))],
        skin_tone=int(u[5] * len(SKIN_TONES)),
        face_shape=FACE_SHAPES[int(u[6] * len(FACE_SHAPES))],
        hat=bool(u[7] < P_HAT),
        beard=bool(u[8] < P_BEARD),
        background=BACKGROUND_NAMES[int(u[9] * len(BACKGROUND_NAMES))],
        dx=float((2.0 * u[10] - 1.0) * POSE_SHIFT),
        dy=float((2.0 * u[11] - 1.0) * POSE_SHIFT),
        scale=float(POSE_SCALE[0] + u[12] * (POSE_SCALE[1] - POSE_SCALE[0])),
        tilt=float((2.0 * u[13] - 1.0) * POSE_TILT),
    )


def item_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for item ``index`` of dataset ``seed`` (``stream`` 0: factors, 1: caption)."""
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), int(stream)])


def factors_for(seed: int, index: int) -> FaceFactors:
    """The factors of item ``index`` of the dataset with ``seed`` (a pure function)."""
    return sample_factors(item_rng(seed, index, 0))


# --------------------------------------------------------------------------- label vectors


def vector_names(one_hot: bool = False) -> list[str]:
    """Names of the entries of :func:`factors_to_vector`."""
    names: list[str] = []
    for name in FACTOR_NAMES:
        if one_hot and name in _CATEGORIES:
            names += [f"{name}={v}" for v in _CATEGORIES[name]]
        else:
            names.append(name)
    return names


def factors_to_vector(f: FaceFactors, one_hot: bool = False) -> np.ndarray:
    """A float32 label vector: continuous factors as is, binary as 0/1, categorical as the index
    into its value list (or one-hot blocks with ``one_hot=True``). Order: :func:`vector_names`."""
    out: list[float] = []
    for name in FACTOR_NAMES:
        v = getattr(f, name)
        if name in _CATEGORIES:
            idx = _CATEGORIES[name].index(v)
            if one_hot:
                block = [0.0] * len(_CATEGORIES[name])
                block[idx] = 1.0
                out += block
            else:
                out.append(float(idx))
        else:
            out.append(float(v))
    return np.asarray(out, dtype=np.float32)


def vector_to_factors(vec: Sequence[float]) -> FaceFactors:
    """Inverse of :func:`factors_to_vector` (compact form)."""
    vec = list(vec)
    if len(vec) != len(FACTOR_NAMES):
        raise ValueError(f"expected {len(FACTOR_NAMES)} values, got {len(vec)}")
    kw: dict[str, Any] = {}
    for name, v in zip(FACTOR_NAMES, vec):
        if name in _CATEGORIES:
            kw[name] = _CATEGORIES[name][int(round(v))]
        elif name in ("eyes_open", "glasses", "hat", "beard"):
            kw[name] = bool(v >= 0.5)
        else:
            kw[name] = float(v)
    return FaceFactors(**kw)


# --------------------------------------------------------------------------- geometry

_CX, _CY = 0.5, 0.56  # face centre (unit coordinates; the pose pivots here)
_SHAPES = {  # half-width, half-height, corner radius (None: ellipse)
    "round": (0.25, 0.255, None),
    "oval": (0.21, 0.285, None),
    "square": (0.235, 0.265, 0.085),
}
_EYE_DX, _EYE_DY = 0.095, -0.025
_MOUTH_DY, _MOUTH_HW = 0.15, 0.085
_MARGIN = 1.5  # canvas is this many times the image, so pose never shows a canvas edge
#: Framing: the scene (laid out in unit coordinates above) is zoomed FRAME_ZOOM times about the
#: face centre, which lands at (0.5, FRAME_CENTER_Y) of the image: the close-up (see the module
#: docstring). 1.0 and _CY give the wide world of the models shipped until 2026-11-26
#: (scripts/wide_world.py sets them).
FRAME_ZOOM = 1.6
FRAME_CENTER_Y = 0.6


def _darker(c: Sequence[int], k: float = 0.55) -> tuple[int, int, int]:
    return (int(c[0] * k), int(c[1] * k), int(c[2] * k))


class _Pen:
    """Unit coordinates ([0,1] over the final image) -> canvas pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, s: float, off: float):
        self.d, self.s, self.off = draw, s, off

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.off + x * self.s, self.off + y * self.s)

    def box(self, cx: float, cy: float, hw: float, hh: float) -> list[float]:
        s, o = self.s, self.off
        return [o + (cx - hw) * s, o + (cy - hh) * s, o + (cx + hw) * s, o + (cy + hh) * s]

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.s)))

    def ellipse(self, cx, cy, hw, hh, fill=None, outline=None, width=0.0):
        self.d.ellipse(self.box(cx, cy, hw, hh), fill=fill, outline=outline, width=self.w(width) if outline else 0)

    def rrect(self, cx, cy, hw, hh, r, fill=None, outline=None, width=0.0):
        self.d.rounded_rectangle(self.box(cx, cy, hw, hh), radius=r * self.s, fill=fill, outline=outline,
                                 width=self.w(width) if outline else 0)

    def chord(self, cx, cy, hw, hh, a0, a1, fill=None, outline=None, width=0.0):
        self.d.chord(self.box(cx, cy, hw, hh), a0, a1, fill=fill, outline=outline,
                     width=self.w(width) if outline else 0)

    def arc(self, cx, cy, hw, hh, a0, a1, fill, width):
        self.d.arc(self.box(cx, cy, hw, hh), a0, a1, fill=fill, width=self.w(width))

    def line(self, pts, fill, width, caps=True):
        px = [self.p(x, y) for x, y in pts]
        w = self.w(width)
        self.d.line(px, fill=fill, width=w, joint="curve")
        if caps:
            r = w / 2.0
            for x, y in (px[0], px[-1]):
                self.d.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def polygon(self, pts, fill=None, outline=None, width=0.0):
        self.d.polygon([self.p(x, y) for x, y in pts], fill=fill, outline=outline,
                       width=self.w(width) if outline else 0)


def _head(pen: _Pen, shape: str, fill, outline, lw: float, grow: float = 0.0) -> None:
    hw, hh, r = _SHAPES[shape]
    if r is None:
        pen.ellipse(_CX, _CY, hw + grow, hh + grow, fill=fill, outline=outline, width=lw)
    else:
        pen.rrect(_CX, _CY, hw + grow, hh + grow, r + grow, fill=fill, outline=outline, width=lw)


def _mouth_curves(smile: float, n: int = 9) -> tuple[list, list]:
    """Upper and lower lip polylines; they coincide (a line) for smile <= 0.3."""
    a = 0.065 * smile  # curvature: centre lower than the corners when smiling
    hw = _MOUTH_HW * (1.0 + 0.12 * smile)
    y0 = _CY + _MOUTH_DY
    opening = 0.05 * max(0.0, smile - 0.3) / 0.7
    up, lo = [], []
    for i in range(n):
        x = -1.0 + 2.0 * i / (n - 1)
        bend = 1.0 - x * x
        y = y0 + a * bend - 0.5 * a
        up.append((_CX + x * hw, y))
        lo.append((_CX + x * hw, y + opening * bend))
    return up, lo


def _draw_scene(draw: ImageDraw.ImageDraw, f: FaceFactors, s: float, off: float) -> None:
    pen = _Pen(draw, s, off)
    lw = 0.014  # outline width (unit); about 0.9 px at 64x64
    skin = SKIN_TONES[f.skin_tone]
    skin_ink = _darker(skin, 0.62)
    hair = HAIR_COLORS[f.hair_color]
    hair_ink = _darker(hair, 0.45) if f.hair_color != "black" else (6, 4, 6)
    hlw = 0.02  # hair outline: thicker, so the hair reads against any skin tone
    hw, hh, _ = _SHAPES[f.face_shape]
    top = _CY - hh

    # shirt and neck
    pen.ellipse(_CX, 1.14, 0.40, 0.24, fill=SHIRT_COLOR, outline=(120, 120, 128), width=lw)
    pen.rrect(_CX, _CY + hh - 0.02 + 0.07, 0.075, 0.09, 0.03, fill=skin, outline=skin_ink, width=lw)

    # hair behind the head
    if f.hair_style == "long":
        pen.rrect(_CX, _CY + 0.07, hw + 0.065, hh + 0.11, 0.16, fill=hair, outline=hair_ink, width=hlw)
    elif f.hair_style == "curly":
        rx, ry = hw + 0.025, hh + 0.02
        for k in range(11):
            t = math.radians(195 + k * 15)  # from lower left over the top to lower right
            pen.ellipse(_CX + rx * math.cos(t), _CY - 0.01 + ry * math.sin(t), 0.062, 0.062,
                        fill=hair, outline=hair_ink, width=hlw)
        pen.chord(_CX, _CY - 0.01, hw + 0.03, hh + 0.03, 180, 360, fill=hair)
    else:  # short
        pen.chord(_CX, _CY + 0.02, hw + 0.04, hh + 0.05, 180, 360, fill=hair, outline=hair_ink, width=hlw)

    # ears, face
    for side in (-1, 1):
        pen.ellipse(_CX + side * (hw - 0.005), _CY + 0.0, 0.04, 0.055, fill=skin, outline=skin_ink, width=lw)
    _head(pen, f.face_shape, skin, skin_ink, lw)

    # beard: the jaw below the nose in the hair colour, with a skin-coloured hole around the mouth
    if f.beard:
        b_hw, b_hh, r = _SHAPES[f.face_shape]
        if r is None:
            pen.chord(_CX, _CY, b_hw + 0.006, b_hh + 0.012, 12, 168, fill=hair, outline=hair_ink, width=hlw)
        else:
            y_top = _CY + 0.06
            y_bot = _CY + b_hh + 0.012
            pen.rrect(_CX, (y_top + y_bot) / 2, b_hw + 0.006, (y_bot - y_top) / 2, r, fill=hair,
                      outline=hair_ink, width=lw)
        pen.ellipse(_CX, _CY + _MOUTH_DY + 0.008, 0.118, 0.058, fill=skin)

    # fringe over the forehead
    if f.hair_style == "curly":
        for k in range(5):
            x = _CX + (k - 2) * 0.085
            pen.ellipse(x, top + 0.035 + 0.012 * abs(k - 2), 0.058, 0.05, fill=hair, outline=hair_ink, width=hlw)
    else:
        pen.chord(_CX + 0.01, top + 0.095, hw * 0.98, 0.1, 180, 360, fill=hair, outline=hair_ink, width=hlw)
        # a side-swept lock
        pen.polygon([(_CX - hw * 0.75, top + 0.06), (_CX - 0.02, top + 0.02), (_CX + 0.06, top + 0.11),
                     (_CX + 0.03, top + 0.055)], fill=hair)

    # eyebrows
    brow = _darker(hair, 0.8) if f.hair_color != "black" else hair
    for side in (-1, 1):
        x = _CX + side * _EYE_DX
        y = _CY + _EYE_DY - 0.068
        pen.line([(x - side * 0.045, y + 0.006), (x + side * 0.04, y - 0.004)], fill=brow, width=0.022)

    # eyes
    for side in (-1, 1):
        x, y = _CX + side * _EYE_DX, _CY + _EYE_DY
        if f.eyes_open:
            pen.ellipse(x, y, 0.05, 0.042, fill=(252, 252, 252), outline=INK, width=0.012)
            pen.ellipse(x + 0.004, y + 0.004, 0.027, 0.03, fill=(52, 36, 30))
            pen.ellipse(x + 0.014, y - 0.008, 0.009, 0.009, fill=(255, 255, 255))
        else:
            pen.arc(x, y - 0.02, 0.048, 0.035, 15, 165, fill=INK, width=0.022)

    # nose
    pen.arc(_CX, _CY + 0.055, 0.028, 0.022, 20, 160, fill=skin_ink, width=0.016)

    # mouth
    up, lo = _mouth_curves(float(f.smile))
    if lo[len(lo) // 2][1] - up[len(up) // 2][1] > 0.004:
        pen.polygon(up + lo[::-1], fill=(150, 36, 48))
        pen.line(lo, fill=INK, width=0.02)
    pen.line(up, fill=INK, width=0.024)

    # glasses
    if f.glasses:
        gl = (20, 20, 24)
        for side in (-1, 1):
            x, y = _CX + side * _EYE_DX, _CY + _EYE_DY + 0.004
            pen.ellipse(x, y, 0.072, 0.064, outline=gl, width=0.02)
            pen.line([(x + side * 0.072, y - 0.01), (_CX + side * (hw + 0.005), y - 0.025)], fill=gl,
                     width=0.016, caps=False)
        pen.line([(_CX - _EYE_DX + 0.07, _CY + _EYE_DY - 0.004), (_CX, _CY + _EYE_DY - 0.018),
                  (_CX + _EYE_DX - 0.07, _CY + _EYE_DY - 0.004)], fill=gl, width=0.018, caps=False)

    # hat: brim + crown with a white band, above the head
    if f.hat:
        ink = _darker(HAT_COLOR, 0.45)
        by = top - 0.005
        pen.rrect(_CX, by - 0.115, 0.165, 0.11, 0.045, fill=HAT_COLOR, outline=ink, width=lw)
        pen.polygon([(_CX - 0.165, by - 0.075), (_CX + 0.165, by - 0.075), (_CX + 0.165, by - 0.035),
                     (_CX - 0.165, by - 0.035)], fill=HAT_BAND)
        pen.rrect(_CX, by, hw + 0.09, 0.03, 0.03, fill=HAT_COLOR, outline=ink, width=lw)


def render(factors: FaceFactors, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw ``factors`` as a ``size`` x ``size`` RGB image, anti-aliased (drawn at
    ``size * supersample``, posed, then LANCZOS-downsampled)."""
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    f = factors
    S = size * supersample
    C = int(round(S * _MARGIN))
    off = (C - S) / 2.0
    bg = BACKGROUNDS[f.background]
    canvas = Image.new("RGB", (C, C), bg)
    _draw_scene(ImageDraw.Draw(canvas), f, float(S), off)

    # pose and framing: output pixel p -> canvas q = pivot_in + R(-tilt) (p - pivot_out) / zoom
    th = math.radians(f.tilt)
    zoom = f.scale * FRAME_ZOOM
    cos, sin = math.cos(th) / zoom, math.sin(th) / zoom
    pin = (off + _CX * S, off + _CY * S)
    pout = ((_CX + f.dx * FRAME_ZOOM) * S, (FRAME_CENTER_Y + f.dy * FRAME_ZOOM) * S)
    a, b, d, e = cos, sin, -sin, cos  # image y points down: positive tilt turns the head counter-clockwise
    c = pin[0] - a * pout[0] - b * pout[1]
    ff = pin[1] - d * pout[0] - e * pout[1]
    posed = canvas.transform((S, S), Image.Transform.AFFINE, (a, b, c, d, e, ff),
                             resample=Image.Resampling.BILINEAR, fillcolor=bg)
    if supersample == 1:
        return posed
    return posed.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=None)


def render_array(factors: FaceFactors, size: int = 64, supersample: int = 4) -> np.ndarray:
    """:func:`render` as a uint8 array [size, size, 3]."""
    return np.asarray(render(factors, size, supersample))


def sample(seed: int, index: int, size: int = 64, supersample: int = 4) -> tuple[Image.Image, FaceFactors]:
    """Item ``index`` of the dataset with ``seed``: (image, factors)."""
    f = factors_for(seed, index)
    return render(f, size, supersample), f


# --------------------------------------------------------------------------- helpers


def contact_sheet(images: Iterable[Image.Image], ncol: int = 8, pad: int = 2, zoom: int = 1,
                  fill=(255, 255, 255)) -> Image.Image:
    """Tile images into a grid (for looking at samples)."""
    ims = list(images)
    if not ims:
        raise ValueError("no images")
    w, h = ims[0].size
    w, h = w * zoom, h * zoom
    nrow = (len(ims) + ncol - 1) // ncol
    sheet = Image.new("RGB", (ncol * (w + pad) + pad, nrow * (h + pad) + pad), fill)
    for i, im in enumerate(ims):
        if zoom != 1:
            im = im.resize((w, h), Image.Resampling.NEAREST)
        sheet.paste(im, (pad + (i % ncol) * (w + pad), pad + (i // ncol) * (h + pad)))
    return sheet


def benchmark(n: int = 300, size: int = 64, supersample: int = 4, seed: int = 0) -> float:
    """Images per second (factor sampling + rendering) in this process."""
    t0 = time.perf_counter()
    for i in range(n):
        render(factors_for(seed, i), size, supersample)
    return n / (time.perf_counter() - t0)
