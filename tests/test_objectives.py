"""Objectives: CLIP directional loss, L1 preservation, classifier score, weighted sums.

Exact answers come from ``ChannelMeanEncoder``: a real (non-mock) implementation of the
ImageTextEncoder protocol whose image embedding is the per-channel mean of the image and
whose text embeddings come from a table, so every cosine is known in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hspace.encoders import ImageTextEncoder, build_tiny_clip
from hspace.objectives import (
    DEFAULT_TEMPLATES,
    CLIPDirectionalLoss,
    CLIPOffAxisPenalty,
    ClassifierObjective,
    L1Preservation,
    Objective,
    ObjectiveOutput,
    WeightedSum,
    make_clip_objective,
    select_state,
    text_cosine,
)

EPS = 1e-7


class ChannelMeanEncoder:
    """E_img(x) = per-channel mean of x (D = 3); E_txt(s) = table[s], else table[longest key inside s]."""

    name = "channel-mean"

    def __init__(self, table: dict[str, list[float]]):
        self.table = {k: torch.tensor(v, dtype=torch.float32) for k, v in table.items()}
        self.image_calls = 0
        self.images_encoded = 0
        self.text_calls = 0

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.image_calls += 1
        self.images_encoded += x.shape[0]
        return x.mean(dim=(2, 3))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.text_calls += 1
        return torch.stack([self.table[t] if t in self.table else self._contained(t) for t in texts])

    def _contained(self, text: str) -> torch.Tensor:
        keys = sorted((k for k in self.table if k in text), key=len, reverse=True)
        if not keys:
            raise KeyError(f"No text embedding for {text!r}.")
        return self.table[keys[0]]


SRC, TGT = "face", "smiling face"


def stub(**extra) -> ChannelMeanEncoder:
    # Raw text embeddings: source e0, target e0 + e1 -> d_txt = e1, cos_txt = 1/sqrt(2).
    return ChannelMeanEncoder({SRC: [1.0, 0.0, 0.0], TGT: [1.0, 1.0, 0.0], **extra})


def images(*channel_means) -> torch.Tensor:
    """Constant images whose per-channel means are the given triples."""
    return torch.tensor(channel_means, dtype=torch.float32)[:, :, None, None].expand(-1, -1, 4, 4).clone()


def exact_loss(enc, **kw) -> CLIPDirectionalLoss:
    return CLIPDirectionalLoss(enc, SRC, TGT, templates=["{}"], normalize_embeddings=False, **kw)


def test_stub_implements_protocols():
    enc = stub()
    assert isinstance(enc, ImageTextEncoder)
    assert isinstance(exact_loss(enc), Objective)
    assert isinstance(L1Preservation(), Objective)


def test_text_direction_and_cos_txt():
    loss = exact_loss(stub())
    torch.testing.assert_close(loss.d_txt, torch.tensor([0.0, 1.0, 0.0]))
    assert loss.cos_txt == pytest.approx(1 / math.sqrt(2))


def test_cos_txt_is_one_for_identical_texts():
    assert text_cosine(stub(), TGT, TGT) == pytest.approx(1.0)
    assert text_cosine(build_tiny_clip(), "a smiling face", "a smiling face") == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="embed identically"):
        CLIPDirectionalLoss(stub(), TGT, TGT, templates=["{}"])


def test_text_direction_averages_over_templates():
    enc = stub(**{"a face": [0.0, 0.0, 0.0], "a smiling face": [0.0, 0.0, 3.0]})
    # Differences: "{}" -> (0, 1, 0), "a {}" -> (0, 0, 3); mean (0, .5, 1.5).
    loss = CLIPDirectionalLoss(enc, SRC, TGT, templates=["{}", "a {}"], normalize_embeddings=False)
    torch.testing.assert_close(loss.d_txt, torch.tensor([0.0, 0.5, 1.5]) / math.sqrt(0.25 + 2.25))
    assert loss.cos_txt == pytest.approx(1 / math.sqrt(2))  # raw texts, not templated
    with pytest.raises(ValueError, match="must contain"):
        CLIPDirectionalLoss(enc, SRC, TGT, templates=["no slot"])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ((0.0, 0.7, 0.0), 0.0),  # parallel to d_txt
        ((0.0, -0.7, 0.0), -math.log(EPS)),  # antiparallel: -log(0), floored at eps
        ((0.0, 0.0, 0.7), math.log(2.0)),  # orthogonal
        ((0.0, 0.5, 0.5), -math.log((1 + 1 / math.sqrt(2)) / 2)),  # 45 degrees
    ],
)
def test_directional_loss_known_values(edit, expected):
    loss = exact_loss(stub(), eps=EPS)
    src = images((0.2, 0.0, 0.0))
    p_edit = images(tuple(0.2 * (i == 0) + v for i, v in enumerate(edit)))
    out = loss(p_edit, src, loss.prepare(src))
    assert isinstance(out, ObjectiveOutput) and out.loss.dim() == 0
    assert float(out.loss) == pytest.approx(expected, abs=1e-5)
    assert expected < 1e-6 or float(out.loss) > 0


def test_antiparallel_is_large():
    loss = exact_loss(stub())
    src = images((0.0, 0.0, 0.0))
    out = loss(images((0.0, -1.0, 0.0)), src, loss.prepare(src))
    assert float(out.loss) > 15 and math.isfinite(float(out.loss))


def test_batch_uses_each_images_own_source():
    loss = exact_loss(stub())
    # Image 0 moves +e1 from its source (parallel); image 1 moves -e1 from its own (antiparallel).
    # Had image 1 been compared with image 0's source it would look parallel too.
    src = images((0.0, 0.0, 0.0), (0.0, 2.0, 0.0))
    edit = images((0.0, 1.0, 0.0), (0.0, 1.0, 0.0))
    state = loss.prepare(src)
    both = float(loss(edit, src, state).loss)
    one = [float(loss(edit[i : i + 1], src[i : i + 1], loss.prepare(src[i : i + 1])).loss) for i in range(2)]
    assert one[0] == pytest.approx(0.0, abs=1e-6) and one[1] > 15
    assert both == pytest.approx((one[0] + one[1]) / 2, rel=1e-6)
    # select_state gives the same per-image state as preparing the sub-batch.
    torch.testing.assert_close(select_state(state, [1]), loss.prepare(src[1:2]))


def test_source_embeddings_computed_once():
    enc = stub()
    loss = exact_loss(enc)
    text_calls = enc.text_calls
    src = images((0.0, 0.0, 0.0), (0.1, 0.0, 0.0))
    state = loss.prepare(src)
    assert (enc.image_calls, enc.images_encoded) == (1, 2)
    for k in range(5):  # five "timesteps"
        loss(images((0.0, 0.1 * k, 0.0), (0.1, 0.1 * k, 0.0)), src, state)
    # One call per step, and each encodes only the two edits, never the sources again.
    assert (enc.image_calls, enc.images_encoded) == (6, 12)
    assert enc.text_calls == text_calls  # text direction fixed at construction


def test_prepare_has_no_grad_and_loss_grad_reaches_p_edit():
    loss = exact_loss(stub())
    src = images((0.0, 0.0, 0.0)).requires_grad_(True)
    state = loss.prepare(src)
    assert not state.requires_grad
    p_edit = images((0.0, 0.3, 0.3)).requires_grad_(True)
    loss(p_edit, src, state).loss.backward()
    assert p_edit.grad is not None and p_edit.grad.abs().sum() > 0
    assert src.grad is None


def test_normalised_embeddings_match_hand_computation():
    enc = stub()
    loss = CLIPDirectionalLoss(enc, SRC, TGT, templates=["{}"])  # normalize_embeddings=True
    # Unit text embeddings (1,0,0) and (1,1,0)/sqrt2: d_txt = normalise((1/sqrt2 - 1, 1/sqrt2, 0)).
    r = 1 / math.sqrt(2)
    expected = torch.tensor([r - 1, r, 0.0])
    torch.testing.assert_close(loss.d_txt, expected / expected.norm())
    # Images with the same channel means embed to the same unit vectors, so d_img = d_txt.
    src, edit = images((1.0, 0.0, 0.0)), images((1.0, 1.0, 0.0))
    assert float(loss(edit, src, loss.prepare(src)).loss) == pytest.approx(0.0, abs=1e-6)


def test_batch_size_mismatch_is_reported():
    loss = exact_loss(stub())
    state = loss.prepare(images((0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="prepare"):
        loss(images((0.0, 1.0, 0.0), (0.0, 1.0, 0.0)), images((0.0, 0.0, 0.0)), state)


def test_l1_per_image_then_batch_mean():
    l1 = L1Preservation()
    p_src = torch.zeros(2, 3, 4, 4)
    p_edit = torch.zeros(2, 3, 4, 4)
    p_edit[0] = 1.0
    p_edit[1, 0] = -3.0  # one channel of three -> mean |.| = 1
    assert float(l1(p_edit, p_src, l1.prepare(p_src)).loss) == pytest.approx(1.0)
    assert l1.per_image(p_edit, p_src).tolist() == pytest.approx([1.0, 1.0])
    assert float(L1Preservation(scale=0.5)(p_edit, p_src, None).loss) == pytest.approx(0.5)


def test_make_clip_objective_is_the_papers_sum():
    enc = stub()
    obj = make_clip_objective(enc, SRC, TGT, w_clip=1.0, w_l1=3.0)
    clip = obj.objectives[0]
    assert isinstance(clip, CLIPDirectionalLoss) and clip.templates == list(DEFAULT_TEMPLATES)
    assert obj.weights == pytest.approx([1.0, 3.0 * clip.cos_txt])
    src = images((0.0, 0.0, 0.0), (0.5, 0.0, 0.0))
    p_src = images((0.1, 0.0, 0.0), (0.4, 0.0, 0.0))
    p_edit = images((0.0, 0.3, 0.1), (0.5, -0.2, 0.4))
    out = obj(p_edit, p_src, obj.prepare(src))
    expected = clip(p_edit, p_src, clip.prepare(src)).loss + 3.0 * clip.cos_txt * (p_edit - p_src).abs().mean()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-6)
    assert set(out.terms) == {"clip", "clip.w", "clip.cos", "l1", "l1.w"}
    assert all(not t.requires_grad for t in out.terms.values())


def test_off_axis_penalty_known_values():
    # d_txt = e1 (raw embeddings); each image's change is measured against its own P_src
    off = CLIPOffAxisPenalty(exact_loss(stub()))
    p_src = images((0.1, 0.0, 0.0), (0.4, 0.0, 0.0))
    p_edit = images((0.1, 0.3, 0.4), (0.5, -0.2, 0.0)).requires_grad_(True)
    out = off(p_edit, p_src, off.prepare(p_src))
    # deltas (0, 0.3, 0.4) and (0.1, -0.2, 0): off-axis parts (0, 0, 0.4) and (0.1, 0, 0)
    assert float(out.loss.detach()) == pytest.approx((0.16 + 0.01) / 2, rel=1e-6)
    assert float(out.terms["on"]) == pytest.approx((0.3 - 0.2) / 2, rel=1e-6)
    assert float(out.terms["off"]) == pytest.approx((0.4 + 0.1) / 2, rel=1e-6)
    out.loss.backward()
    assert p_edit.grad.abs().sum() > 0


def test_off_axis_penalty_is_zero_along_the_text_direction_and_grows_off_it():
    off = CLIPOffAxisPenalty(exact_loss(stub()))
    p_src = images((0.2, 0.1, 0.0))
    along = off(images((0.2, 0.9, 0.0)), p_src, None)
    assert float(along.loss) == pytest.approx(0.0, abs=1e-12)
    small, large = (float(off(images((0.2, 0.9, z)), p_src, None).loss) for z in (0.1, 0.3))
    assert 0 < small < large


def test_make_clip_objective_adds_the_off_axis_penalty_only_when_asked():
    enc = stub()
    plain = make_clip_objective(enc, SRC, TGT)
    assert [type(o) for o in plain.objectives] == [CLIPDirectionalLoss, L1Preservation]
    obj = make_clip_objective(enc, SRC, TGT, w_off=2.0)
    clip, _, off = obj.objectives
    assert isinstance(off, CLIPOffAxisPenalty) and off.directional is clip and obj.weights[2] == 2.0
    src = images((0.0, 0.0, 0.0))
    p_src, p_edit = images((0.1, 0.0, 0.0)), images((0.0, 0.3, 0.1))
    out = obj(p_edit, p_src, obj.prepare(src))
    expected = plain(p_edit, p_src, plain.prepare(src)).loss + 2.0 * off(p_edit, p_src, None).loss
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-6)
    assert {"clip_off", "clip_off.off", "clip_off.on"} <= set(out.terms)
    with pytest.raises(ValueError, match="w_off"):
        make_clip_objective(enc, SRC, TGT, w_off=-1.0)


def test_off_axis_penalty_shares_the_edit_embedding_with_the_directional_loss():
    """With the penalty attached, one step encodes P_edit once (and P_src once, for the penalty),
    and the loss and gradient are those of two separate encodings."""
    enc = stub()
    obj = make_clip_objective(enc, SRC, TGT, w_off=2.0)
    src = images((0.0, 0.0, 0.0), (0.3, 0.1, 0.0))
    p_src = images((0.1, 0.0, 0.0), (0.2, 0.1, 0.1))
    state = obj.prepare(src)
    p_edit = images((0.0, 0.3, 0.1), (0.4, -0.2, 0.3)).requires_grad_(True)
    before = enc.image_calls
    out = obj(p_edit, p_src, state)
    assert enc.image_calls - before == 2  # P_edit once, P_src once
    out.loss.backward()
    # the same sum with nothing shared: each member on its own objects
    clip = CLIPDirectionalLoss(stub(), SRC, TGT)
    ref_edit = p_edit.detach().clone().requires_grad_(True)
    ref = (clip(ref_edit, p_src, clip.prepare(src)).loss
           + 3.0 * clip.cos_txt * (ref_edit - p_src).abs().mean()
           + 2.0 * CLIPOffAxisPenalty(CLIPDirectionalLoss(stub(), SRC, TGT))(ref_edit, p_src, None).loss)
    ref.backward()
    assert float(out.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(p_edit.grad, ref_edit.grad)
    # a tensor changed in place, or another tensor, is encoded afresh, never matched to a stale embedding
    directional = obj.objectives[0]
    x = images((0.0, 0.5, 0.0))
    directional.edit_embedding(x)
    x.add_(1.0)
    torch.testing.assert_close(directional.edit_embedding(x), torch.nn.functional.normalize(x.mean(dim=(2, 3)), dim=-1))
    directional.edit_embedding(x)
    calls = enc.image_calls
    directional.edit_embedding(x.clone())
    assert enc.image_calls == calls + 1
    directional.edit_embedding(x)  # the pending embedding was another tensor's: dropped, so encoded again
    assert enc.image_calls == calls + 2
    # without the penalty nothing is kept between calls
    plain = make_clip_objective(enc, SRC, TGT)
    plain(p_edit.detach(), p_src, plain.prepare(src))
    assert plain.objectives[0]._shared is None


def test_make_clip_objective_with_tiny_clip_backpropagates():
    enc = build_tiny_clip()
    obj = make_clip_objective(enc, "face", "smiling face")
    src = torch.rand(2, 3, 32, 32) * 2 - 1
    p_src = src.clone()
    p_edit = (src + 0.1 * torch.randn_like(src)).requires_grad_(True)
    out = obj(p_edit, p_src, obj.prepare(src))
    out.loss.backward()
    assert torch.isfinite(out.loss) and p_edit.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


def test_weighted_sum_prefixes_and_state_check():
    obj = WeightedSum([(1.0, L1Preservation()), (2.0, L1Preservation(scale=2.0))])
    assert obj.prefixes == ["l1", "l1_1"]
    p_edit, p_src = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    out = obj(p_edit, p_src, obj.prepare(p_src))
    assert float(out.loss) == pytest.approx(1.0 + 2.0 * 2.0)
    assert float(out.terms["l1_1"]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="tuple of 2 states"):
        obj(p_edit, p_src, None)
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])


class AttributeNet(nn.Module):
    """Two-class linear classifier: logit_1 = 2 * mean(red), logit_0 = 0."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def test_classifier_objective_scores_and_plugs_into_weighted_sum():
    net = AttributeNet()
    p_edit = images((0.5, 0.0, 0.0), (1.5, 0.0, 0.0)).requires_grad_(True)
    p_src = torch.zeros_like(p_edit)
    up = ClassifierObjective(net, target_index=1)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert up(p_edit, p_src, up.prepare(p_src)).loss.item() == pytest.approx(-2.0)  # -mean(1, 3)
    down = ClassifierObjective(net, target_index=1, sign=-1)
    assert down(p_edit, p_src, None).loss.item() == pytest.approx(2.0)
    logp = ClassifierObjective(net, target_index=1, score="log_prob")
    expected = -torch.log_softmax(torch.tensor([[0.0, 1.0], [0.0, 3.0]]), dim=1)[:, 1].mean()
    assert logp(p_edit, p_src, None).loss.item() == pytest.approx(float(expected), rel=1e-6)

    combined = WeightedSum([(1.0, up), (0.5, L1Preservation())])
    out = combined(p_edit, p_src, combined.prepare(p_src))
    assert out.loss.item() == pytest.approx(-2.0 + 0.5 * (1.0 / 3))
    assert set(out.terms) == {"classifier", "classifier.w", "classifier.score", "l1", "l1.w"}
    out.loss.backward()
    assert p_edit.grad.abs().sum() > 0 and net.fc.weight.grad is None


def test_classifier_objective_validates():
    net = AttributeNet()
    with pytest.raises(ValueError, match="one of"):
        ClassifierObjective(net, 1, score="prob")
    with pytest.raises(ValueError, match="sign"):
        ClassifierObjective(net, 1, sign=2)
    with pytest.raises(ValueError, match="target_index=5"):
        ClassifierObjective(net, 5)(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), None)
    single = ClassifierObjective(nn.Sequential(nn.Flatten(), nn.Linear(12, 1)), target_index=None)
    assert single(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2), None).loss.dim() == 0
