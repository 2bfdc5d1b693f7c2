"""Does the toy CLIP see an edit's side effects? (docs/toyworld.md, "Off-axis penalty")

For 60 validation faces and each shipped direction's texts, render the exact edit (the target
factor changed, nothing else) and the exact edit plus one side effect (skin tone one step darker,
the smile flipped, the hat toggled, the eyes opened or closed, another background), and print, over the faces the edit
changes, the image embedding change (unit embeddings) split along the text direction d_txt
("on") and off it ("off"), its cosine with d_txt and the directional loss -log((1 + cos) / 2).

    python scripts/clip_side_effects.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hspace.encoders import load_encoder
from hspace.evaluation.factors import resolve_toy_target
from hspace.objectives.clip import CLIPDirectionalLoss
from hspace.toyworld.dataset import render_faces
from hspace.toyworld.directions import TOY_DIRECTIONS, target_twin
from hspace.toyworld.faces import factors_for, with_factor

VAL_SEED = 4_000_037  # scripts/sweep_directions.py's validation faces
N = 60


def main() -> None:
    torch.set_num_threads(2)
    enc = load_encoder("toy-clip")
    faces = [factors_for(VAL_SEED, i) for i in range(N)]

    @torch.no_grad()
    def embed(factors) -> torch.Tensor:
        return F.normalize(enc.encode_image(render_faces(factors)).float(), dim=-1)

    sources = embed(faces)
    for name, spec in TOY_DIRECTIONS.items():
        d = CLIPDirectionalLoss(enc, spec.source, spec.target).d_txt
        twins = [target_twin(f, spec.judged_as) for f in faces]
        idx = [i for i, t in enumerate(twins) if t is not None]
        exact = [twins[i] for i in idx]
        variants = {
            "exact edit": exact,
            "+ skin tone": [with_factor(t, skin_tone=(t.skin_tone + 1) % 5) for t in exact],
            "+ smile flipped": [with_factor(t, smile=-t.smile) for t in exact],
            "+ hat toggled": [with_factor(t, hat=not t.hat) for t in exact],
            "+ eyes toggled": [with_factor(t, eyes_open=not t.eyes_open) for t in exact],
            "+ background": [with_factor(t, background=faces[(i + 1) % N].background) for i, t in zip(idx, exact)],
        }
        print(f"{name} ({len(idx)} faces the edit changes)")
        target = resolve_toy_target(spec.judged_as).factor
        for label, factors in variants.items():
            if label.split()[1] == target.split("_")[0]:  # toggling the target itself undoes the edit
                continue
            delta = embed(factors) - sources[idx]
            on = delta @ d
            off = (delta - on[:, None] * d).norm(dim=1)
            cos = F.normalize(delta, dim=-1) @ d
            loss = -torch.log(((1 + cos) / 2).clamp_min(1e-7))
            print(f"  {label:16s} on {on.mean():.3f}  off {off.mean():.3f}  cos {cos.mean():.3f}  loss {loss.mean():.3f}")


if __name__ == "__main__":
    main()
