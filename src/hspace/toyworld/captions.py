"""Caption strings for toy faces, from their factors, with varied wording.

:func:`describe` gives one canonical caption that mentions every visible factor (except pose);
:func:`caption` draws a random caption from a generator: a random subset of the factors
(salient ones more often), worded by a random template (a sentence such as "a smiling face
with glasses and blond hair", or a tag list such as "face, blond hair, eyes closed"), with
synonyms. :func:`caption_with_mentions` also says which factors the caption mentions, so a
caption can be checked against the ground truth. A small CLIP trains on these.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .faces import FaceFactors, SKIN_TONE_NAMES, item_rng

# wording of each smile band, lowest first: (upper bound, adjectives for "a ___ face", nouns "with a ___")
_SMILE_BANDS = (
    (-0.6, ("frowning", "very sad", "scowling"), ("deep frown", "big frown")),
    (-0.2, ("frowning", "sad", "unhappy"), ("frown", "slight frown")),
    (0.2, ("neutral", "expressionless", "serious"), ("straight face", "neutral expression")),
    (0.6, ("smiling", "happy", "cheerful"), ("smile", "slight smile")),
    (1.01, ("grinning", "very happy", "laughing"), ("big smile", "broad grin", "wide open smile")),
)
_HAIR_WORDS = {"black": ("black",), "brown": ("brown",), "blond": ("blond", "blonde"), "red": ("red", "ginger"),
               "grey": ("grey", "gray")}
_STYLE_WORDS = {"short": ("short",), "long": ("long",), "curly": ("curly",)}
_SHAPE_WORDS = {"round": ("round",), "oval": ("oval", "long"), "square": ("square", "angular")}
_BG_WORDS = {"blue": ("blue", "light blue"), "green": ("green",), "pink": ("pink",), "purple": ("purple", "violet"),
             "navy": ("navy", "dark blue"), "teal": ("teal",), "lime": ("lime", "yellow-green"),
             "maroon": ("maroon", "dark red")}
_SUBJECTS = ("face", "person", "cartoon face", "portrait", "character")

# how often each factor is mentioned by caption(): (when the attribute is "present", when absent)
_P_MENTION = {
    "smile": (0.85, 0.85),
    "eyes": (0.8, 0.25),  # present = eyes closed
    "glasses": (0.85, 0.2),
    "hair_color": (0.75, 0.75),
    "hair_style": (0.55, 0.55),
    "hat": (0.85, 0.15),
    "beard": (0.85, 0.15),
    "skin_tone": (0.3, 0.3),
    "face_shape": (0.3, 0.3),
    "background": (0.35, 0.35),
}

#: Words whose presence in a caption indicates each factor's value (used by the tests).
KEYWORDS = {
    "smile_positive": ("smil", "happy", "cheerful", "grin", "laugh"),
    "smile_negative": ("frown", "sad", "unhappy", "scowl"),
    "smile_neutral": ("neutral", "expressionless", "serious", "straight"),
}


def smile_band(smile: float) -> int:
    """0 (deep frown) .. 4 (big smile)."""
    for i, (upper, _, _) in enumerate(_SMILE_BANDS):
        if smile < upper:
            return i
    return len(_SMILE_BANDS) - 1


def _pick(rng: Optional[np.random.Generator], options):
    if rng is None:
        return options[0]
    return options[int(rng.integers(len(options)))]


def _phrases(f: FaceFactors, rng: Optional[np.random.Generator], mention: set[str]) -> dict[str, tuple[str, str]]:
    """For each mentioned factor: (kind, phrase); kind says where a sentence template puts it:
    'adj' (before the subject), 'with' (after "with"), 'tag' (anything, e.g. "eyes closed")."""
    out: dict[str, tuple[str, str]] = {}
    band = _SMILE_BANDS[smile_band(float(f.smile))]
    if "smile" in mention:
        if rng is None or rng.random() < 0.6:
            out["smile"] = ("adj", _pick(rng, band[1]))
        else:
            out["smile"] = ("with", _pick(rng, tuple("a " + w for w in band[2])))
    if "eyes" in mention:
        if f.eyes_open:
            out["eyes"] = ("tag", _pick(rng, ("eyes open", "open eyes", "wide awake eyes")))
        else:
            out["eyes"] = ("tag", _pick(rng, ("eyes closed", "closed eyes", "shut eyes")))
    if "glasses" in mention:
        out["glasses"] = ("with", _pick(rng, ("glasses", "eyeglasses", "round glasses", "spectacles"))) if f.glasses \
            else ("tag", _pick(rng, ("no glasses", "without glasses")))
    hair_c = _pick(rng, _HAIR_WORDS[f.hair_color]) if "hair_color" in mention else None
    hair_s = _pick(rng, _STYLE_WORDS[f.hair_style]) if "hair_style" in mention else None
    if hair_c or hair_s:
        words = " ".join(w for w in (hair_s, hair_c) if w)
        out["hair"] = ("with", f"{words} hair")
    if "hat" in mention:
        out["hat"] = ("with", _pick(rng, ("a hat", "a red hat", "a top hat"))) if f.hat \
            else ("tag", _pick(rng, ("no hat", "without a hat", "bareheaded")))
    if "beard" in mention:
        out["beard"] = ("with", _pick(rng, ("a beard", "a full beard"))) if f.beard \
            else ("tag", _pick(rng, ("no beard", "clean-shaven", "beardless")))
    if "skin_tone" in mention:
        out["skin_tone"] = ("with", f"{SKIN_TONE_NAMES[f.skin_tone]} skin")
    if "face_shape" in mention:
        word = _pick(rng, _SHAPE_WORDS[f.face_shape])
        out["face_shape"] = ("with", f"{'an' if word[0] in 'aeiou' else 'a'} {word} face shape")
    if "background" in mention:
        out["background"] = ("tag", f"{_pick(rng, ('on a', 'against a', 'in front of a'))} "
                                    f"{_pick(rng, _BG_WORDS[f.background])} background")
    return out


def _present(f: FaceFactors, key: str) -> bool:
    return {"eyes": not f.eyes_open, "glasses": f.glasses, "hat": f.hat, "beard": f.beard}.get(key, True)


def _choose_mentions(f: FaceFactors, rng: np.random.Generator) -> set[str]:
    chosen = {k for k, (p_yes, p_no) in _P_MENTION.items() if rng.random() < (p_yes if _present(f, k) else p_no)}
    if not chosen:
        chosen = {"smile"}
    return chosen


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _assemble(f: FaceFactors, phrases: dict[str, tuple[str, str]], rng: Optional[np.random.Generator]) -> str:
    subject = _pick(rng, _SUBJECTS)
    order = list(phrases)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    if rng is not None and rng.random() < 0.3:  # tag list
        tags = [phrases[k][1] for k in order]
        return ", ".join([subject] + tags)
    adjs = [phrases[k][1] for k in order if phrases[k][0] == "adj"]
    withs = [phrases[k][1] for k in order if phrases[k][0] == "with"]
    tags = [phrases[k][1] for k in order if phrases[k][0] == "tag"]
    head = " ".join(adjs + [subject])
    article = "an" if head[0] in "aeiou" else "a"
    text = f"{article} {head}"
    if withs:
        text += " with " + _join(withs)
    if tags:
        text += ", " + ", ".join(tags)
    if rng is not None and rng.random() < 0.15:
        text = _pick(rng, ("a drawing of ", "a picture of ", "an illustration of ")) + text
    return text


def describe(f: FaceFactors) -> str:
    """One canonical caption mentioning every factor except pose (no randomness)."""
    return _assemble(f, _phrases(f, None, set(_P_MENTION)), None)


def caption_with_mentions(f: FaceFactors, rng: np.random.Generator) -> tuple[str, set[str]]:
    """A random caption and the set of factors it mentions (names as in :data:`_P_MENTION`:
    smile, eyes, glasses, hair_color, hair_style, hat, beard, skin_tone, face_shape, background)."""
    mention = _choose_mentions(f, rng)
    return _assemble(f, _phrases(f, rng, mention), rng), mention


def caption(f: FaceFactors, rng: Optional[np.random.Generator] = None) -> str:
    """A caption for ``f``: random wording and subset with ``rng``, else :func:`describe`."""
    if rng is None:
        return describe(f)
    return caption_with_mentions(f, rng)[0]


def caption_for(seed: int, index: int, f: FaceFactors) -> str:
    """The caption of item ``index`` of dataset ``seed`` (its own random stream, so it never
    changes the factors)."""
    return caption(f, item_rng(seed, index, 1))
