"""CLIP-GS on the map's own objects (issue 24): the map-object dataset builder and its augmentation,
the initialisation recipe (CLIP-GS from the xyz+rgb model), the two-stage ranking and the
evaluation's scores, on hand-made cases (CPU, seconds; one small mapped room)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gags_ros.core.clipgs.classify import MapObject, ObjectIndex, two_stage
from gags_ros.core.clipgs.encoder import ClipGSEncoder
from gags_ros.core.clipgs.objects import ObjectGaussians
from gags_ros.core.gaussians import GaussianMap
from gags_ros.eval.clipgs_metrics import bootstrap_ci, map_metrics, object_to_text_r1
from gags_ros.sim.clipgs_mapdata import (EVAL_SEEDS, TRAIN_SEEDS, MapAugment, MapObjectSample, augment,
                                         build_map_dataset, check_disjoint, map_scene_objects)
from gags_ros.sim.clipgs_objects import SampledObject
from gags_ros.sim.clipgs_train import TrainConfig, build_triplets, init_from_xyzrgb, train_encoder
from gags_ros.sim.dataset import Preset
from test_clipgs import TINY, fake_text


NONE = MapAugment(cut_prob=0.0, keep=(1.0, 1.0), scale_sigma=0.0, leak_prob=0.0, yaw=False, gain=0.0, offset=0.0)


def _blob(n=200, centre=(0.0, 0.0, 0.0), rgb=(0.8, 0.2, 0.2), seed=0, sigma=(0.2, 0.1, 0.05)):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor(sigma) + torch.tensor(centre)
    quats = F.normalize(torch.randn(n, 4, generator=g), dim=1)
    scales = torch.rand(n, 3, generator=g) * 0.01 + 0.002
    return ObjectGaussians(means, quats, scales, torch.rand(n, generator=g) * 0.5 + 0.5,
                           torch.tensor(rgb).expand(n, 3).clone())


# ------------------------------------------------------------------------------------------------
# Dataset builder
# ------------------------------------------------------------------------------------------------

def test_seed_sets_are_disjoint():
    check_disjoint(TRAIN_SEEDS, EVAL_SEEDS)
    assert TRAIN_SEEDS == tuple(range(10)) and EVAL_SEEDS == (100, 101, 102)
    with pytest.raises(ValueError, match=r"\[3\]"):
        check_disjoint([1, 2, 3], [3, 100])


def test_augment_without_strength_is_identity():
    g = _blob()
    out = augment(g, np.random.default_rng(0), NONE)
    for a, b in zip((out.means, out.quats, out.scales, out.opacities, out.rgb),
                    (g.means, g.quats, g.scales, g.opacities, g.rgb)):
        assert torch.equal(a, b)


def test_augment_scale_density_colour_and_yaw():
    g = _blob(1000)
    cfg = dataclasses.replace(NONE, keep=(0.5, 0.5), scale_sigma=0.5, gain=0.1, offset=0.05)
    out = augment(g, np.random.default_rng(1), cfg)
    assert 400 < len(out) < 600                                        # about half kept
    # Every kept Gaussian is one of the object's, all scales times one factor (not 1), one colour shift.
    d = torch.cdist(out.means, g.means, compute_mode="donot_use_mm_for_euclid_dist")
    j = d.argmin(dim=1)
    assert float(d.min(dim=1).values.max()) < 1e-6
    ratio = out.scales / g.scales[j]
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), rtol=1e-5) and abs(float(ratio[0, 0]) - 1) > 1e-3
    assert torch.allclose(out.rgb, out.rgb[0].expand_as(out.rgb)) and not torch.allclose(out.rgb[0], g.rgb[0])
    assert torch.all((out.rgb >= 0) & (out.rgb <= 1))
    # Yaw: about the up axis through the centroid; heights and the centroid stay, shape rotates.
    rot = augment(g, np.random.default_rng(2), dataclasses.replace(NONE, yaw=True))
    assert torch.allclose(rot.means[:, 2], g.means[:, 2], atol=1e-6)
    assert torch.allclose(rot.means.mean(0), g.means.mean(0), atol=1e-5)
    r_old = (g.means[:, :2] - g.means[:, :2].mean(0)).norm(dim=1)
    r_new = (rot.means[:, :2] - rot.means[:, :2].mean(0)).norm(dim=1)
    assert torch.allclose(r_old, r_new, atol=1e-5) and not torch.allclose(rot.means, g.means, atol=1e-3)
    # Orientation turns with the object: the splats' axes rotate by the same yaw.
    assert not torch.allclose(rot.quats, g.quats, atol=1e-3)


def test_augment_cut_keeps_a_half_space_and_never_a_sliver():
    g = _blob(1000, sigma=(0.2, 0.2, 0.05))
    cfg = dataclasses.replace(NONE, cut_prob=1.0, cut_max=0.5)
    sizes = []
    for seed in range(6):
        cut = augment(g, np.random.default_rng(seed), cfg)
        sizes.append(len(cut))
        assert len(cut) >= 300
        # The dropped Gaussians lie beyond a vertical plane that (almost) no kept one crosses; a
        # random drop of as many would leave about half the kept ones beyond it.
        kept = torch.cdist(g.means, cut.means, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values < 1e-6
        if int((~kept).sum()) < 50:
            continue
        dropped = g.means[~kept][:, :2]
        c = g.means.mean(0)[:2]
        dirn = F.normalize(dropped.mean(0) - c, dim=0)
        beyond = ((g.means[kept][:, :2] - c) @ dirn) > float(((dropped - c) @ dirn).min())
        assert float(beyond.float().mean()) < 0.05, seed
    assert min(sizes) < 800                                            # some cuts are large
    tiny = augment(_blob(20), np.random.default_rng(0), dataclasses.replace(NONE, keep=(0.0, 0.0)))
    assert len(tiny) == 16


def test_augment_leaks_a_neighbour_patch_next_to_the_object():
    g, nb = _blob(400), _blob(400, centre=(3.0, 0.0, 0.0), rgb=(0.1, 0.1, 0.9), seed=1)
    out = augment(g, np.random.default_rng(0), dataclasses.replace(NONE, leak_prob=1.0, leak_max=0.2), nb)
    leaked = out.rgb[:, 2] > 0.5
    assert 0 < int(leaked.sum()) <= 80 and int((~leaked).sum()) == 400
    # Moved next to the object (within its extent), not left 3 m away.
    assert float(out.means[leaked].norm(dim=1).max()) < 1.0


def _sample(g, cat, scene):
    return MapObjectSample(SampledObject(g, cat, f"a {cat}", [], scene, 0), "seeded")


def test_build_map_dataset_copies_keep_labels_and_leak_from_the_same_scene():
    red, green = _blob(rgb=(0.9, 0.1, 0.1)), _blob(centre=(2.0, 0, 0), rgb=(0.1, 0.9, 0.1), seed=1)
    blue = _blob(centre=(0, 2.0, 0), rgb=(0.1, 0.1, 0.9), seed=2)
    samples = [_sample(red, "mug", 0), _sample(green, "lamp", 0), _sample(blue, "chair", 1)]
    cfg = dataclasses.replace(NONE, leak_prob=1.0)
    out = build_map_dataset(samples, 3, np.random.default_rng(0), cfg)
    assert len(out) == 3 + 3 * 3 and all(a is b for a, b in zip(out[:3], samples))
    assert sorted(s.obj.category for s in out).count("mug") == 4
    for s in out[3:]:
        rgb = s.obj.gaussians.rgb
        if s.obj.category == "mug":        # leaks come from the lamp (same scene), never the chair
            assert bool((rgb[:, 1] > 0.5).any()) and not bool((rgb[:, 2] > 0.5).any())
        if s.obj.category == "chair":      # alone in its scene: nothing leaks in
            assert len(s.obj.gaussians) == 200 and bool((rgb[:, 2] > 0.5).all())


@pytest.mark.slow
def test_map_scene_objects_cuts_seeded_and_optimised_maps():
    small = Preset(width=80, height=60, walk=10, orbit=6, closeups=1)
    out = map_scene_objects(11, steps=(0, 3), preset=small, renderer="torch", log=lambda s: None)
    kinds = [s.kind for s in out]
    assert set(kinds) == {"seeded", "optimised"} and kinds.count("seeded") == kinds.count("optimised") > 0
    from gags_ros.sim import make_scene

    truth = {o.whole_id: o.category for o in make_scene(11).objects if not o.structure}
    for s in out:
        assert s.obj.scene_seed == 11 and truth[s.obj.whole_id] == s.obj.category and len(s.obj.gaussians) >= 32
    seeded = {s.obj.whole_id: s.obj.gaussians for s in out if s.kind == "seeded"}
    opt = {s.obj.whole_id: s.obj.gaussians for s in out if s.kind == "optimised"}
    # Seeded Gaussians are isotropic; three optimisation steps make them anisotropic.
    k = next(iter(seeded))
    assert torch.allclose(seeded[k].scales, seeded[k].scales[:, :1].expand(-1, 3), rtol=1e-4)
    assert not torch.allclose(opt[k].scales, opt[k].scales[:, :1].expand(-1, 3), rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Initialisation recipe
# ------------------------------------------------------------------------------------------------

def test_init_from_xyzrgb_starts_equal_and_then_uses_the_attributes():
    torch.manual_seed(0)
    xcfg = dataclasses.replace(TINY, attributes="xyzrgb", tokenizer="point")
    x = ClipGSEncoder(xcfg)
    # Give BatchNorm non-trivial running statistics, as a trained model has.
    x.train()
    with torch.no_grad():
        for _ in range(3):
            x(torch.rand(4, 64, 19) * 2 - 1)
    x.eval()
    enc = init_from_xyzrgb(x, TINY).eval()
    a = torch.rand(5, 64, 19) * 2 - 1
    for order in range(3):
        assert torch.allclose(enc(a, order=order), x(a), atol=1e-5)
    b = a.clone()
    b[..., 6:] = torch.rand(5, 64, 13)          # other 3DGS attributes: no effect yet
    assert torch.allclose(enc(b), x(a), atol=1e-5)
    # A from-scratch CLIP-GS encoder does not agree (the test can fail).
    assert not torch.allclose(ClipGSEncoder(TINY).eval()(a), x(a), atol=1e-2)
    # Fine-tuning moves the zeroed branch: afterwards the 3DGS attributes change the output.
    objs = [_blob(100, seed=i) for i in range(6)]
    cfg = TrainConfig(encoder=TINY, steps=3, batch_size=6, warmup=1, lr=1e-2, log_every=0)
    trip = build_triplets(objs, [f"c{i % 3}" for i in range(6)], [f"c{i % 3}" for i in range(6)], cfg, fake_text)
    tuned, _ = train_encoder(TINY, trip, None, cfg, init=enc, steps=3, log=lambda s: None)
    assert float(tuned.tokenizer.refine_mlp.net[-1].weight.detach().abs().sum()) > 0
    assert not torch.allclose(tuned(b), tuned(a), atol=1e-4)
    assert torch.allclose(enc(a), x(a), atol=1e-5)                   # init itself was copied, not trained
    with pytest.raises(ValueError, match="xyz\\+rgb point encoder"):
        init_from_xyzrgb(enc)


# ------------------------------------------------------------------------------------------------
# Two-stage ranking
# ------------------------------------------------------------------------------------------------

def test_two_stage_on_hand_made_scores():
    # One query, five objects. The field proposes 0, 2, 3 (its top three); CLIP-GS prefers 4 overall
    # but 4 is not proposed; among the proposals CLIP-GS ranks 3 > 0 > 2.
    field = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2]])
    clip = torch.tensor([[0.5, 0.9, 0.1, 0.6, 0.95]])
    idx, s = two_stage(field, clip, proposals=3, k=5)
    assert idx.tolist() == [[3, 0, 2]] and torch.allclose(s, torch.tensor([[0.6, 0.5, 0.1]]))
    idx, _ = two_stage(field, clip, proposals=3, k=1)
    assert idx.tolist() == [[3]]
    idx, _ = two_stage(field, clip, proposals=0, k=2)                 # CLIP-GS alone
    assert idx.tolist() == [[4, 1]]
    idx, _ = two_stage(field, clip, proposals=1, k=3)                 # the field alone decides
    assert idx.tolist() == [[0]]
    with pytest.raises(ValueError, match="differ"):
        two_stage(field, clip[:, :4], 2, 2)


class _Enc:
    """Stand-in encoder: each object's 'CLIP-GS embedding' is the unit mean of its rgb padded to 32-d."""

    cfg = TINY
    device = torch.device("cpu")

    def encode_objects(self, objs):
        return torch.stack([F.normalize(F.pad(o.rgb.mean(0), (0, 29)), dim=0) for o in objs])


def _text(texts):
    lut = {"red": [1.0, 0, 0], "green": [0, 1.0, 0], "blue": [0, 0, 1.0], "yellow": [1.0, 1.0, 0]}
    return torch.stack([F.normalize(F.pad(torch.tensor(lut[t]), (0, 29)), dim=0) for t in texts])


def test_object_index_two_stage_retrieve_and_classify():
    cols = [(0.9, 0.1, 0.0), (0.1, 0.9, 0.0), (0.0, 0.1, 0.9)]
    allg = ObjectGaussians.cat([_blob(50, centre=(2.0 * i, 0, 0), rgb=c, seed=i) for i, c in enumerate(cols)])
    gmap = GaussianMap.from_points(allg.means, allg.rgb, 0.01, opacity=0.9)
    # The field's view of each object (hand-made): object 0 orange (between red and yellow), 1 red,
    # 2 blue.
    fe = [F.normalize(F.pad(torch.tensor([1.0, 0.5, 0.0]), (0, 29)), dim=0).numpy(), _text(["red"])[0].numpy(),
          _text(["blue"])[0].numpy()]
    objs = [MapObject(np.arange(50 * i, 50 * (i + 1)), np.zeros(3), np.zeros(3), np.ones(3), f"cluster {i}", fe[i])
            for i in range(3)]
    alone = ObjectIndex(_Enc(), gmap, objs, _text, proposals=0)
    assert not alone.two_stage and alone.retrieve("red", k=1)[0][0] is objs[0]
    both = ObjectIndex(_Enc(), gmap, objs, _text, proposals=1)
    assert both.two_stage
    # "red": the field proposes object 1 only (it thinks 1 is red); CLIP-GS scores it.
    (hit,) = both.retrieve("red", k=1)
    assert hit[0] is objs[1] and abs(hit[1] - float(both.embeddings[1] @ _text(["red"])[0])) < 1e-6
    # Asking for two widens the proposals to two (0 and 1), which CLIP-GS ranks: 0 is redder.
    two = both.retrieve("red", k=2)
    assert [h[0] for h in two] == [objs[0], objs[1]]
    # Classification: the field proposes labels, CLIP-GS ranks them.
    both.proposals = 2
    labels = [c.labels for c in both.classify(["red", "green", "blue", "yellow"], k=1)]
    # Object 0: field proposes yellow, red (its top two); CLIP-GS (mostly red) picks red.
    # Object 1: field proposes red, yellow; CLIP-GS (green) picks yellow, never green (not proposed).
    assert labels == [["red"], ["yellow"], ["blue"]]
    assert [c.labels for c in alone.classify(["red", "green", "blue", "yellow"], k=1)] == [["red"], ["green"], ["blue"]]
    # Objects without field embeddings (query targets): CLIP-GS alone, whatever proposals says.
    plain = ObjectIndex(_Enc(), gmap, [dataclasses.replace(o, field_embedding=None) for o in objs], _text, proposals=1)
    assert not plain.two_stage and plain.retrieve("green", k=1)[0][0] is plain.objects[1]


# ------------------------------------------------------------------------------------------------
# Evaluation scores
# ------------------------------------------------------------------------------------------------

def test_bootstrap_interval():
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0, 1.0)
    hits = np.arange(400) % 2 == 0
    mean, lo, hi = bootstrap_ci(hits)
    half = 1.96 * math.sqrt(0.25 / 400)                               # normal approximation: 0.049
    assert mean == 0.5 and abs((hi - lo) / 2 - half) < 0.01 and lo < 0.5 < hi
    mean, lo, hi = bootstrap_ci(np.arange(40) % 2 == 0)               # ten times fewer objects: wider
    assert (hi - lo) > 2.5 * 2 * half
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_map_metrics_on_hand_made_embeddings():
    caps = ["red", "green", "blue", "red"]
    emb = _text(["red", "green", "red", "red"])                       # object 2 is wrong
    m = map_metrics(emb, caps, caps, ["red", "green", "blue", "yellow"], _text, n_boot=200)
    assert m["objects"] == 4 and m["top1"] == 0.75 and m["top1_ci_low"] <= 0.75 <= m["top1_ci_high"]
    assert m["r1_3d_text"] == 0.75 == object_to_text_r1(emb, caps, _text)
    # Text -> 3D: "red" finds a red object, "green" the green one, "blue" finds none.
    assert abs(m["r1_text_3d"] - 2 / 3) < 1e-9
    assert "top5" not in m
    with pytest.raises(ValueError, match="vocabulary"):
        map_metrics(emb, caps, caps, ["red"], _text)
