"""GAGS distillation losses (Eqs. 3-7) against values worked out by hand on 2x2 / 3x3 images."""

import math

import pytest
import torch

from gags_ros.core.language.field import FeatureDecoder, GranularityDecoder, LanguageField
from gags_ros.core.language.losses import (
    LossWeights, TeacherTargets, box_mean, entropy, feature_variance, language_losses, region_mean,
    schedule_weights)

EPS = 1e-6


class StubField:
    """decode = L2 normalisation (latents live in the embedding space); granularity = fixed weights
    per pixel, so every term of the loss can be computed by hand."""

    def __init__(self, w_all):
        self.w_all = torch.tensor(w_all, dtype=torch.float32)

    def decode(self, f):
        return torch.nn.functional.normalize(f, dim=-1)

    def granularity(self, f):
        return self.w_all


# A 2x2 image, 2-d embeddings. Masks: subpart A (id 0) over the top row, subpart C (id 3) at
# bottom-left, bottom-right uncovered at subpart level; part B (id 1) and whole W (id 2) everywhere.
EMB = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
IDS = torch.tensor([[[0, 0], [3, -1]],
                    [[1, 1], [1, 1]],
                    [[2, 2], [2, 2]]])
LATENTS = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                        [[0.6, 0.8], [0.0, 1.0]]])
W_ALL = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]   # subpart, subpart, part, whole


def targets():
    return TeacherTargets(IDS.clone(), EMB.clone())


def test_entropy_by_hand():
    w = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    expected = (-(1.0 * math.log(1.0 + EPS)) + 3 * -(1 / 3) * math.log(1 / 3 + EPS)) / 2
    assert entropy(w).item() == pytest.approx(expected, rel=1e-6)


def test_region_mean_weights_regions_not_pixels():
    values = torch.tensor([1.0, 3.0, 10.0])
    regions = torch.tensor([5, 5, 2])
    # regions: {1, 3} -> 2, {10} -> 10; mean over regions 6 (plain pixel mean would be 4.67).
    assert region_mean(values, regions, 7).item() == pytest.approx(6.0)


def test_feature_variance_by_hand():
    f = torch.tensor([[0.0, 0.0], [2.0, 4.0], [5.0, 5.0]])
    regions = torch.tensor([0, 0, 1])
    # region 0: n=2, channel variances (population) 1 and 4 -> n * mean = 5; region 1: 0. / (H W = 4)
    assert feature_variance(f, regions, 2, 4).item() == pytest.approx(5.0 / 4)


def test_box_mean_averages_inside_the_image():
    x = torch.arange(9.0).reshape(1, 3, 3)
    m = box_mean(x, 3)[0]
    assert m[0, 0].item() == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert m[1, 1].item() == pytest.approx(4.0)
    assert m[0, 1].item() == pytest.approx((0 + 1 + 2 + 3 + 4 + 5) / 6)
    # 5x5 on a 3x3 image: every window holds the whole image.
    assert torch.allclose(box_mean(x, 5), torch.full_like(x, 4.0))


def test_schedule_switches_at_half():
    early, late = schedule_weights(4, 10), schedule_weights(5, 10)
    assert (early.region_aware, early.entropy, early.variance) == (False, 0.001, 0.0)
    assert (late.region_aware, late.entropy, late.variance) == (True, 0.002, 0.1)
    assert schedule_weights(10 ** 6, 10).region_aware   # online mapping stays in the second half


def test_gad_first_half_by_hand():
    out = language_losses(LATENTS, targets(), StubField(W_ALL), "gad", schedule_weights(0, 10))
    # supervised pixels: 0, 1, 2 (pixel 3 lacks a subpart mask)
    # pixel 0: pred [1,0] vs A [1,0] -> 0; pixel 1: [0,1] vs A -> (1+1)/2 = 1;
    # pixel 2: [0.6,0.8] vs part B [0,1] -> (0.6+0.2)/2 = 0.4
    l_d = (0 + 1 + 0.4) / 3
    l_h = -math.log(1 + EPS)          # one-hot weights
    assert out["pixels"] == 3
    assert out["distill"].item() == pytest.approx(l_d, abs=1e-6)
    assert out["entropy"].item() == pytest.approx(l_h, abs=1e-7)  # float32 log(1 + 1e-6)
    assert out["variance"].item() == 0.0
    assert out["loss"].item() == pytest.approx(l_d + 0.001 * l_h, abs=1e-6)


def test_gad_second_half_region_aware_by_hand():
    out = language_losses(LATENTS, targets(), StubField(W_ALL), "gad", schedule_weights(9, 10))
    # 5x5 mean of w over the 2x2 image = mean of all four = [0.5, 0.25, 0.25] -> argmax subpart
    # everywhere; regions: A = {pixel 0, pixel 1}, C = {pixel 2}.
    l_d = ((0 + 1) / 2 + 0.4) / 2
    # L_var: region A latents [1,0], [0,1], mean [.5,.5], per-pixel mean_c dev^2 = .25 -> sum .5;
    # region C: one pixel, 0; divided by H W = 4.
    l_var = 0.5 / 4
    l_h = -math.log(1 + EPS)
    assert out["distill"].item() == pytest.approx(l_d, abs=1e-6)
    assert out["variance"].item() == pytest.approx(l_var, abs=1e-6)
    assert out["loss"].item() == pytest.approx(l_d + 0.002 * l_h + 0.1 * l_var, abs=1e-6)


def test_smoothing_decides_the_region():
    # 3x3 image, all pixels covered; granularity says "part" at the centre pixel only and
    # "subpart" elsewhere. The 5x5 mean (every window covers the whole image) gives "subpart"
    # everywhere, so the centre joins subpart region 0: two regions. Without the smoothing the
    # centre would be a third region (part mask 2) and the loss would be (0 + .5 + .5) / 3.
    ids = torch.stack([torch.tensor([[0, 0, 0], [0, 0, 1], [1, 1, 1]]),
                       torch.full((3, 3), 2), torch.full((3, 3), 3)])
    emb = torch.eye(4)
    w = [[1, 0, 0]] * 9
    w[4] = [0, 1, 0]
    lat = torch.zeros(3, 3, 4)
    lat[..., 0] = 1.0                       # decodes to emb 0 everywhere
    out = language_losses(lat, TeacherTargets(ids, emb), StubField(w), "gad", LossWeights(True, 0.0, 0.0))
    # per pixel L1 vs its weighted target: subpart pixels with id 0 -> 0, id 1 -> (1+1)/4 = .5,
    # the centre (part weight, target emb 2) -> .5; region 0 = 5 pixels (4 zeros + centre .5),
    # region 1 = 4 pixels of .5
    assert out["distill"].item() == pytest.approx(((0.5 / 5) + 0.5) / 2, abs=1e-6)


@pytest.mark.parametrize("mode", ["avg", "subpart", "part", "whole"])
def test_fixed_modes_by_hand(mode):
    out = language_losses(LATENTS, targets(), StubField(W_ALL), mode, schedule_weights(0, 10))
    lat = LATENTS.reshape(4, 2)
    ids = IDS.reshape(3, 4)
    w = {"avg": [1 / 3] * 3, "subpart": [1, 0, 0], "part": [0, 1, 0], "whole": [0, 0, 1]}[mode]
    level = {"subpart": 0, "part": 1, "whole": 2}.get(mode)
    valid = [p for p in range(4) if ((ids[:, p] >= 0).all() if level is None else ids[level, p] >= 0)]
    total = 0.0
    for p in valid:
        tgt = sum(w[k] * EMB[ids[k, p]] for k in range(3) if w[k] > 0)
        total += float((lat[p] - tgt).abs().mean())
    assert out["pixels"] == len(valid)
    assert out["distill"].item() == pytest.approx(total / len(valid), abs=1e-6)
    assert out["entropy"].item() == 0.0     # fixed weights: no entropy term


def test_fixed_mode_regions_use_that_level():
    out = language_losses(LATENTS, targets(), StubField(W_ALL), "whole", LossWeights(True, 0.0, 1.0))
    # one region (whole W) over all 4 pixels: latents [1,0],[0,1],[.6,.8],[0,1]
    lat = LATENTS.reshape(4, 2)
    l_var = float(((lat - lat.mean(0)) ** 2).mean(1).sum()) / 4
    assert out["variance"].item() == pytest.approx(l_var, abs=1e-6)


def test_granularity_decoder_does_not_move_latents():
    field = LanguageField(16, 32)
    f = torch.randn(10, 16, requires_grad=True)
    field.granularity(f).pow(2).sum().backward()
    assert f.grad is None
    assert all(p.grad is not None for p in field.granularity_decoder.parameters())
    field.decode(f).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_decoder_shapes():
    fd = FeatureDecoder(16, 384)
    y = fd(torch.randn(5, 7, 16))
    assert y.shape == (5, 7, 384)
    assert torch.allclose(y.norm(dim=-1), torch.ones(5, 7), atol=1e-5)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in fd.modules())
    assert n_linear == 8                                   # in, six hidden, out
    gd = GranularityDecoder(16)
    w = gd(torch.randn(4, 16))
    assert w.shape == (4, 3) and torch.allclose(w.sum(-1), torch.ones(4))
    assert [m.out_features for m in gd.modules() if isinstance(m, torch.nn.Linear)] == [64, 128, 64, 32, 16, 3]


def test_losses_backpropagate_into_latents_and_decoders():
    torch.manual_seed(0)
    field = LanguageField(4, 2)
    lat = torch.randn(2, 2, 4, requires_grad=True)
    out = language_losses(lat, targets(), field, "gad", schedule_weights(9, 10))
    out["loss"].backward()
    assert lat.grad is not None and lat.grad.abs().sum() > 0
    assert all(p.grad is not None for p in field.parameters())


def test_weighted_target_matches_dense_gather_and_gradients(monkeypatch):
    from gags_ros.core.language import losses

    monkeypatch.setattr(losses, "TARGET_CHUNK", 7)       # several chunks on a small input
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 6, (3, 20), generator=g)
    ids[0, :4] = -1                                      # uncovered, weight 0 there
    w = torch.rand(20, 3, generator=g, dtype=torch.float64)
    w[:4, 0] = 0.0
    w.requires_grad_(True)
    dense = torch.einsum("pk,pkd->pd", w, emb[ids.clamp_min(0).T])
    out = losses.weighted_target(w, ids, emb)
    assert torch.allclose(out.double(), dense, atol=1e-6)
    gout = torch.randn(20, 5, generator=g, dtype=torch.float64)
    (gw,) = torch.autograd.grad((out.double() * gout).sum(), w)
    (gref,) = torch.autograd.grad((dense * gout).sum(), w)
    assert torch.allclose(gw, gref, atol=1e-5)
