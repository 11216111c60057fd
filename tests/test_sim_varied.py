"""The scene generators by name: classic rooms unchanged, the varied generator's rooms (sizes,
repeated classes with per-instance boxes, new kinds, unlabelled structure, cameras that see
everything) and the dataset files that record which generator made a scene."""

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage

from gags_ros.core.config import GagsConfig, set_value
from gags_ros.core.io.datasets import load_nerfstudio, load_queries
from gags_ros.sim import raycast
from gags_ros.sim.dataset import PRESETS, Preset, generate, main, scene_views
from gags_ros.eval.metrics import inside_any_box, query_boxes
from gags_ros.sim.scene import GENERATORS, LEVEL_NAMES, make_scene, scene_from_meta
from gags_ros.sim.teacher import NoiseModel, SimSegmenter
from gags_ros.sim.varied import NEW_CATEGORIES, SCALE_RANGES
from gags_ros.core.types import Frame

TINY = Preset(width=64, height=48, walk=8, orbit=6, closeups=1)
# Enough frames for the cameras to reach every object, at a quarter of the small preset's pixels.
SEEING = Preset(width=80, height=60, walk=28, orbit=16, closeups=2)
SEEDS = range(10)


def _r(x):
    return [round(float(v), 9) for v in np.ravel(x)]


def fingerprint(scene, views=()) -> str:
    """SHA-256 of a scene's primitives, materials, labels, objects and camera views (floats rounded
    to 1e-9, so a last-bit difference of a libm would not count but any real change does)."""
    data = {"room": _r(scene.room), "free_radius": round(float(scene.free_radius), 9),
            "primitives": [[p.kind, _r(p.T_world_local), _r(p.size), list(p.ids), _r(p.material.color),
                            _r(p.material.color2), p.material.pattern, round(p.material.period, 9),
                            _r(p.material.axis), p.material.seed, p.material.grain] for p in scene.primitives],
            "labels": {lv: {str(k): v for k, v in sorted(d.items())} for lv, d in scene.labels.items()},
            "objects": [[o.whole_id, o.category, o.label, o.structure] for o in scene.objects],
            "views": [[v.name, v.path, v.target, _r(v.T_world_cam)] for v in views]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def varied():
    return {s: make_scene(s, "varied") for s in SEEDS}


# --------------------------------------------------------------------------------------------------
# Classic rooms: what existing tests, the demo and recorded results were made with
# --------------------------------------------------------------------------------------------------

def test_classic_scenes_are_those_before_the_varied_generator():
    # Values computed with the generator of commit 71e3237 (before any generator choice existed).
    want = {0: "bd7a5c82e5f33011f5153249f8f5949f7b79d8975af703af1d916fc6efb6aa9d",
            1: "b871cd0f20940bf6f78bad896f6e8ea3f635cf4fddb5f97d9e202b22e3ef0b1e",
            5: "ee8f038858330af6438787d57eb8d66708dc2334b4acc90638f48c23b3b456b1"}
    for seed, h in want.items():
        s = make_scene(seed)
        views = scene_views(s, PRESETS["small"])[0] if seed == 0 else ()
        assert fingerprint(s, views) == h, seed
        assert fingerprint(make_scene(seed, "classic")) == fingerprint(s)
        assert s.generator == "classic" and s.structure_labelled
    with pytest.raises(ValueError, match="generator"):
        make_scene(0, "fancy")
    assert set(GENERATORS) == {"classic", "varied"}


# --------------------------------------------------------------------------------------------------
# Varied rooms
# --------------------------------------------------------------------------------------------------

def test_varied_rooms_span_3_to_10_m_and_keep_the_free_disc_clear(varied):
    sides = np.array([s.room[:2] for s in varied.values()])
    heights = np.array([s.room[2] for s in varied.values()])
    assert sides.min() >= 3.0 and sides.max() <= 10.0 and heights.min() >= 2.4 and heights.max() <= 3.5
    assert sides.min() < 4.0 and sides.max() > 8.5, sides  # both ends of the range occur
    assert heights.max() - heights.min() > 0.5
    for seed, s in varied.items():
        assert s.generator == "varied"
        assert fingerprint(s) == fingerprint(make_scene(seed, "varied"))  # deterministic
        assert fingerprint(s) != fingerprint(make_scene(seed))  # not the classic room
        # The free disc scales with the room and stays clear where the walk and orbit fly.
        assert 0.6 <= s.free_radius <= max(0.6, 0.2 * min(s.room[:2])) + 1e-9
        r = s.rig.orbit_radius * s.free_radius
        ring = np.array([[r * np.cos(a), r * np.sin(a), z] for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)
                         for z in (0.5, 1.5, min(2.1, s.room[2] - 0.3))])
        assert not s.inside_solid(ring, 0.05).any(), seed
        # Every primitive inside the room (objects) or bounding it (structure).
        for p in s.primitives:
            lo, hi = p.aabb()
            if not s.object(p.ids[0]).structure:
                assert np.all(np.abs(lo[:2]) <= np.array(s.room[:2]) / 2 + 1e-6), (seed, s.object(p.ids[0]).label)
                assert np.all(np.abs(hi[:2]) <= np.array(s.room[:2]) / 2 + 1e-6), (seed, s.object(p.ids[0]).label)
                assert lo[2] >= -1e-6 and hi[2] <= s.room[2], (seed, s.object(p.ids[0]).label)


def test_varied_rooms_have_new_kinds_scaled_objects_and_clutter(varied):
    cats = [o.category for s in varied.values() for o in s.objects if not o.structure]
    assert len(set(cats) & set(NEW_CATEGORIES)) >= 4, sorted(set(cats))
    for s in varied.values():
        objs = [o for o in s.objects if not o.structure]
        assert len(objs) >= 8, [o.label for o in objs]
        small = [o for o in objs if np.max(np.subtract(*s.object_aabb(o.whole_id)[::-1])) < 0.5]
        assert len(small) >= 3, [o.label for o in small]  # clutter
        # Tree of ids, as in the classic rooms.
        parent = {}
        for p in s.primitives:
            assert all(i > 0 for i in p.ids)
            assert parent.setdefault(("subpart", p.ids[2]), p.ids[1]) == p.ids[1]
            assert parent.setdefault(("part", p.ids[1]), p.ids[0]) == p.ids[0]
    # Scale factors: ball radii leave the classic 0.10-0.16 m range, within the category's range.
    radii = [p.size[0] for s in varied.values() for p in s.primitives
             if s.object(p.ids[0]).category == "ball"]
    lo, hi = SCALE_RANGES["ball"]
    assert min(radii) < 0.1 or max(radii) > 0.16, radii
    assert 0.1 * lo - 1e-9 <= min(radii) and max(radii) <= 0.16 * hi + 1e-9


def test_repeated_classes_give_queries_with_one_box_per_instance(varied):
    whole_multi, part_multi = [], []
    for s in varied.values():
        for q in s.queries():
            assert len(q["boxes"]) == len(q["ids"])
            for (lo, hi), iid in zip(q["boxes"], q["ids"]):
                assert np.all(np.array(lo) < np.array(hi))
                assert np.all(np.array(lo) >= np.array(q["box_min"]) - 1e-6)
                assert np.all(np.array(hi) <= np.array(q["box_max"]) + 1e-6)
                want = s.aabb_of(s.primitives_of(q["level"], [iid]))
                assert np.allclose(lo, want[0], atol=1e-6) and np.allclose(hi, want[1], atol=1e-6)
            if len(q["ids"]) >= 2:
                (whole_multi if q["level"] == "whole" else part_multi).append((s.seed, q))
    chairs = [q for _, q in whole_multi if q["text"].endswith(" chair")]
    assert chairs and all(2 <= len(q["boxes"]) <= 4 for q in chairs)
    assert any(q["text"].endswith(" mug") for _, q in whole_multi)  # two mugs of one colour
    assert any(q["text"] == "chair back" for _, q in part_multi)  # one box per chair's back
    # "Inside any instance's box" differs from "inside the union": the gap between two chairs.
    q = chairs[0]
    (lo0, hi0), (lo1, hi1) = q["boxes"][:2]
    c0, c1 = (np.array(lo0) + hi0) / 2, (np.array(lo1) + hi1) / 2
    assert inside_any_box(c0, q) and inside_any_box(c1, q)
    gap = np.where(np.array(hi0) < np.array(lo1), (np.array(hi0) + lo1) / 2,
                   np.where(np.array(hi1) < np.array(lo0), (np.array(hi1) + lo0) / 2, c0))
    if not np.allclose(gap, c0):
        assert not inside_any_box(gap, q)
    assert query_boxes({"box_min": [0, 0, 0], "box_max": [1, 1, 1]}) == [([0, 0, 0], [1, 1, 1])]


def test_a_third_of_varied_scenes_has_unlabelled_structure(varied):
    flags = {seed: make_scene(seed, "varied").structure_labelled for seed in range(30)}
    assert sum(not f for f in flags.values()) == 10
    s = varied[2]
    assert not s.structure_labelled
    structure = [o.whole_id for o in s.objects if o.structure]
    assert structure and not set(structure) & set(s.labels["whole"])
    assert all(q["text"] not in ("floor", "wall", "ceiling") for q in s.queries())
    assert make_scene(2, "varied", structure_labels=True).structure_labelled
    assert not make_scene(0, structure_labels=False).structure_labelled  # the option on classic rooms too
    assert make_scene(0, structure_labels=False).queries() == make_scene(0).queries()


def _frames(scene, preset, split=None):
    views, splits = scene_views(scene, preset)
    K = preset.intrinsics
    for i, (v, sp) in enumerate(zip(views, splits)):
        if split is None or sp == split:
            out = raycast.render(scene, v.T_world_cam, K)
            yield Frame(image=out.rgb, T_world_cam=v.T_world_cam, intrinsics=K, depth=out.depth,
                        name=f"{i:04d}_{v.name}", masks=out.masks), out


def test_unlabelled_structure_gets_no_teacher_mask():
    s = make_scene(2, "varied")
    labelled = make_scene(2, "varied", structure_labels=True)
    assert fingerprint(s, ()) != fingerprint(labelled, ())  # only the labels differ:
    assert [p.ids for p in s.primitives] == [p.ids for p in labelled.primitives]
    preset = Preset(width=80, height=60, walk=6, orbit=4, closeups=0)
    structure_px = covered_labelled = 0
    for (frame, out), (frame_l, _) in zip(_frames(s, preset), _frames(labelled, preset)):
        on_structure = np.isin(out.primitive, [i for i, p in enumerate(s.primitives) if s.object(p.ids[0]).structure])
        for lv in LEVEL_NAMES:
            assert not frame.masks[lv][on_structure].any()  # id 0 = no instance on the structure
        structure_px += int(on_structure.sum())
        # Farther from objects than the noise model's border shift (a square dilation): no mask at all.
        near = ndimage.binary_dilation(~on_structure, structure=np.ones((3, 3), bool),
                                       iterations=NoiseModel().border_px)
        far = on_structure & ~near
        for seg in (SimSegmenter(0), SimSegmenter(0, noise=NoiseModel.off())):
            for lv in seg.segment(frame):
                assert not lv.masks[:, far].any()
        for lv in SimSegmenter(0, noise=NoiseModel.off()).segment(frame):
            assert not lv.masks[:, on_structure].any()
        # Frames without masks (the ROS stream): the segmenter ray-casts them from the scene.
        bare = Frame(image=frame.image, T_world_cam=frame.T_world_cam, intrinsics=frame.intrinsics)
        for lv in SimSegmenter(0, noise=NoiseModel.off(), scene=s).segment(bare):
            assert not lv.masks[:, on_structure].any()
        # The labelled twin gets masks there: the check above can fail.
        covered_labelled += sum(int(lv.masks[:, far].any(0).sum()) for lv in SimSegmenter(0).segment(frame_l))
    assert structure_px > 1000 and covered_labelled > 0.5 * structure_px


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_every_varied_object_is_seen_by_a_train_view_at_plausible_depth(varied, seed):
    s = varied[seed]
    best = {}
    for frame, out in _frames(s, SEEING, split="train"):
        ids, n = np.unique(out.masks["whole"], return_counts=True)
        for i, c in zip(ids, n):
            best[int(i)] = max(best.get(int(i), 0), int(c))
        d = out.depth
        assert (d > 0).all()  # a closed room: every ray hits something
        assert d.min() > 0.05 and d.max() < np.linalg.norm(s.room) + 0.2
    # 40 px of 80x60 (about 160 px of the small preset's 160x120) in the best train view.
    unseen = {o.label: best.get(o.whole_id, 0) for o in s.objects
              if not o.structure and best.get(o.whole_id, 0) < 40}
    assert not unseen, unseen


# --------------------------------------------------------------------------------------------------
# Dataset files
# --------------------------------------------------------------------------------------------------

def test_dataset_records_the_generator_and_rebuilds_the_scene(tmp_path):
    d = generate(tmp_path / "v2", seed=2, preset=TINY, generator="varied")
    meta = json.loads((d / "scene.json").read_text())
    assert meta["scene_generator"] == "varied" and meta["structure_labels"] is False
    rebuilt = scene_from_meta(meta)
    assert fingerprint(rebuilt) == fingerprint(make_scene(2, "varied"))
    assert scene_from_meta({"seed": 2}).generator == "classic"  # scene.json written before generators
    labels = json.loads((d / "labels.json").read_text())
    assert "wall" not in labels["whole"].values() and "floor" not in labels["whole"].values()
    qs = load_queries(d / "queries.json")
    assert all(len(q["boxes"]) == len(q["ids"]) for q in qs)
    assert qs == json.loads((d / "queries.json").read_text())
    for f in load_nerfstudio(d):
        for lv in LEVEL_NAMES:
            assert set(np.unique(f.masks[lv]).tolist()) - {0} <= set(int(k) for k in labels[lv])
    # The sim teacher of a pipeline rebuilds the same scene (ray-casts masks for ROS frames).
    from gags_ros.core.teachers.factory import build_teacher

    cfg = GagsConfig()
    for k, v in {"device": "cpu", "teacher.segmenter": "sim", "teacher.sim_dataset": str(d)}.items():
        set_value(cfg, k, v)
    seg = build_teacher(cfg, "cpu").segmenter
    assert seg.scene.generator == "varied" and not seg.scene.structure_labelled
    # The CLI, a benchmark set: the generator reaches every scene and benchmark.json.
    assert main([str(tmp_path / "set"), "--seed", "100", "--scenes", "1", "--width", "32", "--height", "24",
                 "--generator", "varied", "--structure-labels", "off", "--workers", "1"]) == 0
    bench = json.loads((tmp_path / "set" / "benchmark.json").read_text())
    assert bench["scene_generator"] == "varied" and bench["seeds"] == [100]
    for name in bench["scenes"]:
        m = json.loads((tmp_path / "set" / name / "scene.json").read_text())
        assert m["scene_generator"] == "varied" and m["structure_labels"] is False


def test_query_files_keep_valid_boxes_and_refuse_bad_ones(tmp_path):
    from gags_ros.core.io.datasets import write_queries

    q = {"text": "brown chair", "level": "whole", "ids": [3, 4], "box_min": [0, 0, 0], "box_max": [2, 1, 1],
         "boxes": [[[0, 0, 0], [0.5, 1, 1]], [[1.5, 0, 0], [2, 1, 1]]]}
    write_queries(tmp_path / "q.json", [q])
    (back,) = load_queries(tmp_path / "q.json")
    assert back["boxes"] == [[[0.0, 0.0, 0.0], [0.5, 1.0, 1.0]], [[1.5, 0.0, 0.0], [2.0, 1.0, 1.0]]]
    assert inside_any_box([0.2, 0.5, 0.5], back) and not inside_any_box([1.0, 0.5, 0.5], back)
    for bad in ([], [[[0, 0, 0], [1, 1]]], [[[1, 0, 0], [0, 1, 1]]], [[0, 0, 0]]):
        with pytest.raises(ValueError, match="boxes"):
            write_queries(tmp_path / "bad.json", [{**q, "boxes": bad}])
