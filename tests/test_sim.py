"""Scene generator, analytic ray-caster and dataset writer of the simulation."""

import json

import numpy as np
import pytest

from gags_ros.core.camera import backproject_depth, look_at, pixel_rays, project_points
from gags_ros.core.io.datasets import load_labels, load_nerfstudio, load_queries
from gags_ros.sim import raycast
from gags_ros.sim.dataset import PRESETS, Preset, generate, main, scene_views
from gags_ros.sim.scene import (CATEGORIES, LEVEL_NAMES, PALETTE, Material, Primitive, Scene, SceneObject,
                                     make_scene)
from gags_ros.core.types import Intrinsics

TINY = Preset(width=64, height=48, walk=8, orbit=6, closeups=1)


def _tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("sim") / "scene", seed=3, preset=TINY)


@pytest.fixture(scope="module")
def tiny_frames(tiny):
    return load_nerfstudio(tiny)


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes(tiny, tmp_path):
    again = generate(tmp_path / "again", seed=3, preset=TINY, workers=2)  # and in two processes
    a, b = _tree(tiny), _tree(again)
    assert list(a) == list(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_different_seed_gives_a_different_scene(tiny, tmp_path):
    other = generate(tmp_path / "other", seed=4, preset=TINY)
    a, b = _tree(tiny), _tree(other)
    for name in ("transforms.json", "labels.json", "queries.json", "scene.json"):
        assert a[name] != b[name], name
    images = sorted(k for k in a if k.startswith("images/"))
    assert not any(a[k] == b.get(k) for k in images)


def test_existing_output_is_kept_unless_overwrite(tiny):
    with pytest.raises(FileExistsError):
        generate(tiny, seed=5, preset=TINY)
    assert json.loads((tiny / "scene.json").read_text())["seed"] == 3


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------

def test_scenes_are_furnished_with_labelled_three_level_objects():
    seen = set()
    for seed in range(8):
        s = make_scene(seed)
        objs = [o for o in s.objects if not o.structure]
        assert len(objs) >= 6, (seed, [o.label for o in objs])
        seen |= {o.category for o in objs}
        for p in s.primitives:
            assert all(i > 0 for i in p.ids)
            for lv, i in zip(LEVEL_NAMES, p.ids):
                assert s.labels[lv][i]
        # Tree: each sub-part in one part, each part in one object.
        parent = {}
        for p in s.primitives:
            assert parent.setdefault(("subpart", p.ids[2]), p.ids[1]) == p.ids[1]
            assert parent.setdefault(("part", p.ids[1]), p.ids[0]) == p.ids[0]
        for o in objs:
            if o.category in ("table", "chair", "mug", "lamp", "bottle", "ball", "rug", "door", "monitor",
                              "bookshelf"):
                assert o.label.split()[0] in PALETTE, o.label
        # The room is closed and nothing overlaps the cameras' free disc at robot height.
        assert not s.inside_solid(np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 1.5]]), 0.05).any()
    assert len(seen) >= 6 and seen <= set(CATEGORIES)
    assert len(CATEGORIES) >= 6


def test_queries_name_every_level_once_with_boxes():
    s = make_scene(2)
    qs = s.queries()
    texts = [q["text"] for q in qs]
    assert len(texts) == len(set(texts))
    assert {q["level"] for q in qs} == set(LEVEL_NAMES)
    mug = next(o for o in s.objects if o.category == "mug")
    assert any(q["text"] == mug.label and q["level"] == "whole" for q in qs)
    assert any(q["text"] == "mug handle" for q in qs)
    assert any(q["text"] == "table leg" and q["level"] == "subpart" and len(q["ids"]) == 4 for q in qs)
    assert not any(q["text"] in ("wall", "floor", "ceiling") for q in qs)
    for q in qs:
        assert np.all(np.array(q["box_min"]) < np.array(q["box_max"]))


# --------------------------------------------------------------------------------------------------
# Ray-caster
# --------------------------------------------------------------------------------------------------

def _one(kind, center, size):
    T = np.eye(4)
    T[:3, 3] = center
    prim = Primitive(kind, T, size, Material((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), (1, 1, 1))
    labels = {lv: {1: kind} for lv in LEVEL_NAMES}
    return Scene(0, (10.0, 10.0, 10.0), [prim], labels, [SceneObject(1, kind, kind)], 1.0)


K_TEST = Intrinsics(50.0, 50.0, 32.0, 24.0, 64, 48)


def test_depth_is_z_along_the_optical_axis_not_ray_length():
    s = _one("box", (0.0, 0.0, 2.5), (10.0, 10.0, 0.5))  # a wall 2 m in front of the camera
    out = raycast.render(s, np.eye(4), K_TEST)
    assert np.all(out.masks["whole"] == 1) and np.all(out.primitive == 0)
    np.testing.assert_allclose(out.depth, 2.0, atol=1e-6)


@pytest.mark.parametrize("kind,size", [("sphere", (0.5,)), ("cylinder", (0.4, 0.3)), ("box", (0.3, 0.2, 0.4))])
def test_hits_lie_on_the_surface_and_silhouettes_are_exact(kind, size):
    center = np.array([0.1, -0.05, 3.0])
    s = _one(kind, center, size)
    T = look_at((0.6, -0.8, 0.5), center, up=(0.0, -1.0, 0.0))
    out = raycast.render(s, T, K_TEST)
    hit = out.masks["whole"] > 0
    assert 50 < hit.sum() < hit.size
    pts, rc = backproject_depth(out.depth, K_TEST, T)
    assert len(pts) == hit.sum()
    q = (pts - center) @ s.primitives[0].R
    if kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), size[0], atol=1e-5)
    elif kind == "cylinder":
        side = np.abs(np.hypot(q[:, 0], q[:, 1]) - size[0]) < 1e-5
        cap = np.abs(np.abs(q[:, 2]) - size[1]) < 1e-5
        assert np.all(side | cap)
        assert np.all(np.hypot(q[:, 0], q[:, 1]) <= size[0] + 1e-5) and np.all(np.abs(q[:, 2]) <= size[1] + 1e-5)
    else:
        d = np.abs(np.abs(q) - np.array(size)).min(axis=1)
        assert np.all(d < 1e-5) and np.all(np.abs(q) <= np.array(size) + 1e-5)
    # Every surface point projects back to the centre of its pixel.
    uv, _ = project_points(pts, T, K_TEST)
    np.testing.assert_allclose(uv, rc[:, ::-1] + 0.5, atol=1e-6)
    # Independent check by marching every pixel's ray (of a smaller image) in 1 mm steps: pixels
    # whose ray passes inside the solid shrunk by 2 mm must be hit, those whose ray stays outside it
    # grown by 2 mm missed.
    small = Intrinsics(25.0, 25.0, 16.0, 12.0, 32, 24)
    hit = raycast.render(s, T, small).masks["whole"] > 0
    origin, dirs = T[:3, 3], pixel_rays(small, T)[1].reshape(-1, 3)
    ts = np.arange(1.8, 3.6, 0.001)
    strict = np.zeros(len(dirs), bool)
    loose = np.zeros(len(dirs), bool)
    for chunk in np.array_split(np.arange(len(dirs)), 16):
        samples = origin + ts[None, :, None] * dirs[chunk, None, :]
        flat = samples.reshape(-1, 3)
        strict[chunk] = s.primitives[0].contains(flat, -0.002).reshape(len(chunk), -1).any(axis=1)
        loose[chunk] = s.primitives[0].contains(flat, 0.002).reshape(len(chunk), -1).any(axis=1)
    got = hit.ravel()
    assert np.all(got[strict]) and not np.any(got[~loose])
    assert strict.sum() > 0.8 * got.sum()


def test_nearest_surface_wins_and_ids_follow_it():
    s = _one("box", (0.0, 0.0, 3.0), (0.5, 0.5, 0.5))
    T2 = np.eye(4)
    T2[:3, 3] = (0.0, 0.0, 2.0)
    s.primitives.append(Primitive("sphere", T2, (0.2,), s.primitives[0].material, (2, 2, 2)))
    s.labels = {lv: {1: "box", 2: "ball"} for lv in LEVEL_NAMES}
    s.objects.append(SceneObject(2, "ball", "ball"))
    out = raycast.render(s, np.eye(4), K_TEST)
    centre = out.masks["whole"][23:25, 31:33]
    assert np.all(centre == 2)
    assert out.depth[24, 32] < 2.0 and np.isclose(out.depth[24, 40], 2.5) and out.masks["whole"][24, 40] == 1


# --------------------------------------------------------------------------------------------------
# Dataset consistency
# --------------------------------------------------------------------------------------------------

def test_dataset_files_follow_the_format(tiny, tiny_frames):
    meta = json.loads((tiny / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "frames"} <= set(meta)
    assert (meta["w"], meta["h"]) == (64, 48)
    splits = [f["split"] for f in meta["frames"]]
    assert set(splits) == {"train", "eval"} and splits.count("eval") == len(splits) // 8 + (len(splits) % 8 > 4)
    for f in meta["frames"]:
        assert set(f["mask_file_paths"]) == set(LEVEL_NAMES)
        assert f["depth_file_path"].endswith(".png")
    scene = make_scene(3)
    views, _ = scene_views(scene, TINY)
    assert len(tiny_frames) == len(views)
    for fr, v in zip(tiny_frames, views):
        np.testing.assert_allclose(fr.T_world_cam, v.T_world_cam, atol=1e-12)
        out = raycast.render(scene, v.T_world_cam, TINY.intrinsics)
        assert np.array_equal(fr.image, out.rgb)
        assert np.abs(fr.depth - out.depth).max() <= 0.0005 + 1e-6  # millimetre PNG
        for lv in LEVEL_NAMES:
            assert np.array_equal(fr.masks[lv], out.masks[lv])


def test_masks_depth_and_labels_are_consistent(tiny, tiny_frames):
    labels = load_labels(tiny / "labels.json")
    parent = {}
    for fr in tiny_frames:
        w, p, s = (fr.masks[lv] for lv in LEVEL_NAMES)
        assert np.all(fr.depth[(w > 0) | (p > 0) | (s > 0)] > 0)
        assert np.all(np.isfinite(fr.depth))
        assert np.all(p[s > 0] > 0) and np.all(w[p > 0] > 0)
        for child, par, name in ((s, p, "subpart"), (p, w, "part")):
            for c, q in set(zip(child[child > 0].tolist(), par[child > 0].tolist())):
                assert parent.setdefault((name, c), q) == q, f"{name} {c} lies in two parents"
        for lv in LEVEL_NAMES:
            ids = set(np.unique(fr.masks[lv]).tolist()) - {0}
            assert ids <= set(labels[lv]), (lv, ids - set(labels[lv]))


def test_query_boxes_contain_their_back_projected_pixels(tiny, tiny_frames):
    queries = load_queries(tiny / "queries.json")
    assert len(queries) > 10
    checked = 0
    for fr in tiny_frames:
        pts, rc = backproject_depth(fr.depth, fr.intrinsics, fr.T_world_cam)
        for q in queries:
            sel = np.isin(fr.masks[q["level"]][rc[:, 0], rc[:, 1]], q["ids"])
            if not sel.any():
                continue
            checked += 1
            tol = 0.002  # depth quantised to 1 mm
            assert np.all(pts[sel] >= np.array(q["box_min"]) - tol), q["text"]
            assert np.all(pts[sel] <= np.array(q["box_max"]) + tol), q["text"]
    assert checked > 50


def test_benchmark_cli_writes_several_scenes(tmp_path, capsys):
    assert main([str(tmp_path / "bench"), "--preset", "small", "--scenes", "2", "--seed", "7",
                 "--width", "32", "--height", "24", "--workers", "1"]) == 0
    listing = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert listing["scenes"] == ["scene_007", "scene_008"]
    for name in listing["scenes"]:
        meta = json.loads((tmp_path / "bench" / name / "transforms.json").read_text())
        assert (meta["w"], meta["h"]) == (32, 24)
    assert "done in" in capsys.readouterr().out
    assert PRESETS["default"].scenes >= 3  # the default benchmark set
