"""hspace's built-in offline world: procedural cartoon faces whose attributes are known.

Every image is rendered from a :class:`FaceFactors` record (smile, eyes open, glasses, hair
colour and style, skin tone, face shape, hat, beard, background, pose), and every record is a
pure function of ``(seed, index)``, so claims about edits can be measured against ground truth,
and an image can be re-rendered with exactly one factor changed (:func:`with_factor`).

    from hspace.toyworld import factors_for, render, with_factor, ToyFaces, caption
    f = factors_for(seed=0, index=7)
    img = render(f)                                   # 64x64 RGB PIL image
    flipped = render(with_factor(f, glasses=not f.glasses))
    ds = ToyFaces(10_000, seed=0)                     # ds[i]["image"]: [3, 64, 64] in [-1, 1]

Command line: ``hspace toyworld sample --n 100 --out DIR`` writes PNGs, labels.jsonl and
factors.json.
"""

from .captions import caption, caption_for, caption_with_mentions, describe
from .dataset import ToyFaces, ToyFaceStream, image_to_tensor, tensor_to_image
from .faces import (
    BACKGROUNDS,
    FACE_SHAPES,
    FACTOR_NAMES,
    FACTORS,
    HAIR_COLORS,
    HAIR_STYLES,
    SKIN_TONES,
    FaceFactors,
    contact_sheet,
    factors_for,
    factors_to_vector,
    render,
    render_array,
    sample,
    sample_factors,
    vector_names,
    vector_to_factors,
    with_factor,
)

__all__ = [
    "BACKGROUNDS", "FACE_SHAPES", "FACTOR_NAMES", "FACTORS", "HAIR_COLORS", "HAIR_STYLES", "SKIN_TONES",
    "FaceFactors", "ToyFaceStream", "ToyFaces", "caption", "caption_for", "caption_with_mentions",
    "contact_sheet", "describe", "factors_for", "factors_to_vector", "image_to_tensor", "render",
    "render_array", "sample", "sample_factors", "tensor_to_image", "vector_names", "vector_to_factors",
    "with_factor",
]
