"""The label-grounded simulation teacher: its fixed noise model, determinism and embeddings."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from gags_ros.sim.teacher import NoiseModel, SimEmbedder, SimSegmenter, make_sim_teacher
from gags_ros.sim.text_model import TEXT_DIM, encode_texts
from gags_ros.core.teachers.base import LEVELS
from gags_ros.core.types import Frame, Intrinsics

LABELS = {"whole": {1: "red mug"}, "part": {1: "mug body", 2: "mug handle"},
          "subpart": {1: "mug rim", 2: "mug wall", 3: "handle top", 4: "handle bottom"}}


def square_object(s: int, name: str, pad: int = 4) -> Frame:
    """One object of s x s px: two parts (left / right half), four sub-parts (quadrants)."""
    n = s + 2 * pad
    w = np.zeros((n, n), np.int32)
    w[pad:pad + s, pad:pad + s] = 1
    p = np.zeros_like(w)
    p[pad:pad + s, pad:pad + s // 2] = 1
    p[pad:pad + s, pad + s // 2:pad + s] = 2
    sp = np.zeros_like(w)
    h = s // 2
    for k, (r, c) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        sp[pad + r * h:pad + (r + 1) * h, pad + c * h:pad + (c + 1) * h] = k + 1
    return Frame(np.zeros((n, n, 3), np.uint8), np.eye(4), Intrinsics(n, n, n / 2, n / 2, n, n),
                 masks={"whole": w, "part": p, "subpart": sp}, name=name)


def within(rate: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    return abs(rate - p) <= sigmas * math.sqrt(max(p * (1 - p), 1e-4) / n) + 1e-9


@pytest.fixture(scope="module")
def embedder():
    """The ``text`` regime (masks carry their label's text embedding + N(0, 0.05^2)): the noise model
    the tests below pin down; the ``clip`` regime has its own tests at the end."""
    return SimEmbedder(LABELS, seed=0, regime="text")


# --------------------------------------------------------------------------------------------------
# Noise model statistics
# --------------------------------------------------------------------------------------------------

def test_probabilities_follow_the_issue():
    nz = NoiseModel()
    assert [nz.p_whole_instead(s) for s in (0, 12.8, 32, 64, 100)] == pytest.approx([0.8, 0.8, 0.5, 0.0, 0.0])
    assert [nz.p_parts_instead(s) for s in (100, 256, 384, 512, 600)] == pytest.approx([0, 0, 0.25, 0.5, 0.5])


@pytest.mark.parametrize("s", [16, 32, 48, 80])
def test_part_levels_show_the_whole_object_at_the_stated_rate(s):
    seg, n = SimSegmenter(0), 400
    nz = seg.noise
    shown = {"part": 0, "subpart": 0}
    for i in range(n):
        out = seg.sample(square_object(s, f"frame_{i}"))
        for lv in shown:
            shown[lv] += any(m.source == "whole" for m, _ in out[lv])
    expected = nz.p_whole_instead(s) * (1 - nz.drop)  # a substituted whole mask may still be dropped
    for lv, k in shown.items():
        assert within(k / n, expected, n), (lv, s, k / n, expected)


@pytest.mark.parametrize("s,n", [(200, 60), (448, 160)])
def test_whole_level_shows_the_parts_at_the_stated_rate(s, n):
    seg = SimSegmenter(1)
    k = sum(any(m.source == "part" for m, _ in seg.sample(square_object(s, f"f{i}"))["whole"]) for i in range(n))
    expected = seg.noise.p_parts_instead(s) * (1 - seg.noise.drop ** 2)  # both part masks dropped: none seen
    assert within(k / n, expected, n), (s, k / n, expected)


def test_masks_are_dropped_one_time_in_ten_and_borders_move_by_at_most_two_px():
    seg, n = SimSegmenter(2), 250
    kept = total = 0
    radii = set()
    for i in range(n):
        fr = square_object(100, f"view{i}")  # s = 100: no substitution at any level
        out = seg.sample(fr)
        for lv, count in (("whole", 1), ("part", 2), ("subpart", 4)):
            total += count
            kept += len(out[lv])
            for info, m in out[lv]:
                assert info.source == lv and info.level == lv
                g = fr.masks[lv] == info.id
                grown = ndimage.binary_dilation(g, np.ones((5, 5), bool))
                shrunk = ndimage.binary_erosion(g, np.ones((5, 5), bool))
                assert np.all(m <= grown) and np.all(shrunk <= m)
                radii.add(int(m.sum()) - int(g.sum()))
    assert within(1 - kept / total, 0.1, total)
    assert min(radii) < 0 < max(radii) and 0 in radii  # erosion, dilation and untouched borders all occur


def test_embedding_noise_has_std_005_per_dimension_before_normalisation(embedder):
    seg = embedder.segmenter
    clean = encode_texts(["mug body", "mug handle"])
    sig, n = [], 0
    for i in range(150):
        fr = square_object(100, f"e{i}")
        masks = seg.segment(fr)[1].masks  # part level: "mug body", "mug handle"
        infos = embedder.provenance(fr, masks.numpy())
        emb = embedder.embed_masks(fr, masks).numpy().astype(np.float64)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        for info, y in zip(infos, emb):
            e = clean[info.id - 1].astype(np.float64)
            par = y @ e
            perp = np.linalg.norm(y - par * e)
            # y = (e + n) / |e + n|: |n_perp| / (1 + n.e) = |y_perp| / (y.e), |n_perp| ~ std sqrt(383)
            sig.append(perp / par / math.sqrt(TEXT_DIM - 1))
            n += 1
    assert n > 200
    assert abs(np.mean(sig) - 0.05) < 0.002, np.mean(sig)


# --------------------------------------------------------------------------------------------------
# Determinism and labels
# --------------------------------------------------------------------------------------------------

def test_identical_noise_in_every_run_and_different_with_another_seed(embedder):
    fr = square_object(40, "same_frame")
    a = SimSegmenter(0).segment(fr)
    b = SimSegmenter(0).segment(fr)
    for la, lb in zip(a, b):
        assert torch.equal(la.masks, lb.masks)
    ma = torch.cat([lv.masks for lv in a])
    e1 = embedder.embed_masks(fr, ma)
    assert torch.equal(e1, SimEmbedder(LABELS, seed=0, regime="text").embed_masks(fr, ma))
    # Another seed draws other masks, or at least other embedding noise, for the same frame.
    mc = torch.cat([lv.masks for lv in SimSegmenter(7).segment(fr)])
    e7 = SimEmbedder(LABELS, seed=7, regime="text").embed_masks(fr, mc)
    assert mc.shape != ma.shape or not torch.equal(mc, ma) or not torch.equal(e7, e1)


def test_each_mask_carries_its_own_label_and_text_queries_are_clean(embedder):
    seg, emb = make_sim_teacher(LABELS, seed=3, noise=NoiseModel.off(), regime="text")
    fr = square_object(120, "exact")
    levels = seg.segment(fr)
    assert [lv.masks.shape[0] for lv in levels] == [4, 2, 1]
    for lv, level_masks in zip(LEVELS, levels):
        got = emb.embed_masks(fr, level_masks.masks)
        for m, e in zip(level_masks.masks.numpy(), got):
            iid = int(np.bincount(fr.masks[lv][m]).argmax())
            want = emb.embed_text([LABELS[lv][iid]])[0]
            assert torch.allclose(e, want, atol=1e-6), (lv, iid)
    q = emb.embed_text(["red mug", "mug handle"])
    assert q.shape == (2, TEXT_DIM) and q.dtype == torch.float32
    assert torch.allclose(q.norm(dim=1), torch.ones(2), atol=1e-5)


def test_noisy_embeddings_stay_nearest_to_their_label(embedder):
    texts = [t for lv in LEVELS for t in LABELS[lv].values()]
    bank = embedder.embed_text(texts)
    right = total = 0
    for i in range(30):
        fr = square_object(100, f"near{i}")
        levels = embedder.segmenter.segment(fr)
        masks = torch.cat([lv.masks for lv in levels])
        infos = embedder.provenance(fr, masks.numpy())
        sims = embedder.embed_masks(fr, masks) @ bank.T
        for info, row in zip(infos, sims):
            right += texts[int(row.argmax())] == LABELS[info.source][info.id]
            total += 1
    assert right / total > 0.95


def test_prompts_keep_only_the_masks_they_touch():
    seg = SimSegmenter(0, noise=NoiseModel.off())
    fr = square_object(100, "prompted")
    pts = np.array([[4 + 10.5, 4 + 10.5]])  # (x, y) in the top-left quadrant: sub-part 1, part 1
    sub, part, whole = seg.segment(fr, pts)
    assert sub.masks.shape[0] == 1 and part.masks.shape[0] == 1 and whole.masks.shape[0] == 1
    assert sub.masks[0, 14, 14] and not sub.masks[0, 90, 90]
    assert seg.segment(fr, np.zeros((0, 2)))[2].masks.shape[0] == 0


def test_frames_without_ground_truth_are_refused():
    fr = square_object(20, "no_gt")
    fr.masks = None
    with pytest.raises(ValueError, match="ground-truth masks"):
        SimSegmenter(0).segment(fr)


def test_works_on_rendered_scenes():
    from gags_ros.sim.dataset import Preset, scene_frames
    from gags_ros.sim.scene import make_scene

    scene = make_scene(1)
    frames = list(scene_frames(scene, Preset(width=64, height=48, walk=2, orbit=1, closeups=0)))
    seg, emb = make_sim_teacher(scene.labels, seed=0)
    for fr in frames:
        levels = seg.segment(fr)
        masks = torch.cat([lv.masks for lv in levels])
        out = emb.embed_masks(fr, masks)
        assert out.shape == (masks.shape[0], TEXT_DIM)
        for info in emb.provenance(fr, masks.numpy()):
            assert scene.labels[info.source][info.id]


def test_frames_without_masks_get_them_ray_cast_from_the_scene():
    """Over ROS topics frames carry no ground truth: the teacher ray-casts it from the scene."""
    import dataclasses

    from gags_ros.sim.dataset import PRESETS, scene_frames
    from gags_ros.sim.scene import make_scene
    from gags_ros.sim.teacher import SimSegmenter

    scene = make_scene(3)
    frame = next(iter(scene_frames(scene, PRESETS["small"])))
    bare = dataclasses.replace(frame, masks=None)
    with_gt = SimSegmenter(seed=1).segment(frame)
    from_scene = SimSegmenter(seed=1, scene=scene).segment(bare)
    for a, b in zip(with_gt, from_scene):
        assert torch.equal(a.masks, b.masks)
    for lv in ("whole", "part", "subpart"):
        np.testing.assert_array_equal(bare.masks[lv], frame.masks[lv])
    with pytest.raises(ValueError, match="ground-truth masks"):
        SimSegmenter(seed=1).segment(dataclasses.replace(frame, masks=None))


def test_configured_teacher_uses_the_issues_noise_unless_told_otherwise():
    """build_teacher's sim teacher has the issue's embedding noise (0.05) by default;
    teacher.sim_embedding_std (sensitivity studies only) changes it, 0 gives the clean label embedding."""
    from gags_ros.core.config import GagsConfig, set_value
    from gags_ros.core.teachers.factory import build_teacher

    cfg = GagsConfig()
    set_value(cfg, "teacher.segmenter", "sim")
    set_value(cfg, "teacher.sim_regime", "text")
    assert build_teacher(cfg, "cpu", labels=LABELS).embedder.noise == NoiseModel()
    set_value(cfg, "teacher.sim_embedding_std", 0.0)
    teacher = build_teacher(cfg, "cpu", labels=LABELS)
    fr = square_object(100, "clean")
    masks = teacher.segmenter.segment(fr)[1].masks
    infos = teacher.embedder.provenance(fr, masks.numpy())
    emb = teacher.embedder.embed_masks(fr, masks).numpy()
    clean = encode_texts([LABELS[i.source][i.id] for i in infos])
    np.testing.assert_allclose(emb, clean / np.linalg.norm(clean, axis=1, keepdims=True), atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The clip regime (default): CLIP's numbers
# --------------------------------------------------------------------------------------------------

CANONICAL = ["object", "things", "stuff", "texture"]


@pytest.fixture(scope="module")
def rendered_scene():
    from gags_ros.sim.dataset import PRESETS, scene_frames
    from gags_ros.sim.scene import make_scene

    scene = make_scene(0)
    frames = list(scene_frames(scene, PRESETS["small"]))[::3]
    return scene, frames


def test_default_regime_speaks_clips_numbers(rendered_scene):
    """Over a scene: own-label cosine 0.20-0.35 (CLIP ViT-B/16), margin over the best canonical phrase
    0.01-0.10, other labels lower on average, mask embeddings closer to each other than to any text."""
    from gags_ros.core.config import GagsConfig
    from gags_ros.sim.teacher import embedding_statistics
    from gags_ros.core.teachers.factory import build_teacher

    scene, frames = rendered_scene
    cfg = GagsConfig()
    cfg.teacher.segmenter = "sim"
    emb = build_teacher(cfg, "cpu", labels=scene.labels).embedder
    assert emb.regime == "clip"
    st = embedding_statistics(emb, frames, CANONICAL)
    assert st["masks"] > 300
    assert 0.20 <= st["pos_cos_mean"] <= 0.35, st
    assert 0.01 <= st["canon_margin_mean"] <= 0.10, st
    assert 0.01 <= st["other_margin_mean"] <= 0.15, st
    assert 0.5 <= st["top1_accuracy"] < 0.95, st  # CLIP ranks its label first often, not always
    assert st["mask_mask_cos_mean"] > st["mask_text_cos_max"], st  # the modality gap
    text = embedding_statistics(SimEmbedder(scene.labels, regime="text"), frames, CANONICAL)
    assert text["pos_cos_mean"] > 0.6 and text["mask_mask_cos_mean"] < text["mask_text_cos_max"], text


def test_clip_regime_is_deterministic_and_its_clean_embeddings_are_the_noise_free_masks():
    fr = square_object(100, "clip_det")
    seg, emb = make_sim_teacher(LABELS, seed=0)
    masks = seg.segment(fr)[1].masks
    e = emb.embed_masks(fr, masks)
    assert torch.equal(e, make_sim_teacher(LABELS, seed=0)[1].embed_masks(fr, masks))
    assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-5)
    infos = emb.provenance(fr, masks.numpy())
    clean = emb.label_embeddings([LABELS[i.source][i.id] for i in infos])
    # Noise of std 0.025 per dimension: |noise| ~0.49, so cos(noisy, clean) ~ 1 / sqrt(1 + 0.24).
    cos = (e * clean).sum(1)
    assert torch.all((cos > 0.8) & (cos < 0.95)), cos
    # Texts and masks live in separate cones: a label's text is far from its clean mask embedding.
    t = emb.embed_text([LABELS[i.source][i.id] for i in infos])
    assert torch.all((t * clean).sum(1) < 0.4)
    with pytest.raises(ValueError, match="regime"):
        SimEmbedder(LABELS, regime="clipp")
