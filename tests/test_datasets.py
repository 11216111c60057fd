"""Dataset loaders and the dataset writer (gags_ros.core.io.datasets)."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gags_ros.core import camera as C
from gags_ros.core.io import datasets as D
from gags_ros.core.types import Frame, Intrinsics, PoseError

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
FOX = DATASETS / "fox"
LEGO = DATASETS / "lego"


def _warnings(caplog):
    return [r for r in caplog.records if r.name == "gags_ros.datasets" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------ real datasets

def test_fox_missing_images_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="gags_ros.datasets")
    frames = D.load_nerfstudio(FOX, downscale=16)
    assert len(frames) == 50
    warns = _warnings(caplog)
    assert len(warns) == 1
    msg = warns[0].getMessage()
    assert "17" in msg and "67" in msg and "images/" in msg
    f = frames[0]
    assert f.image.dtype == np.uint8 and f.image.shape == (f.intrinsics.height, f.intrinsics.width, 3)
    assert (f.intrinsics.width, f.intrinsics.height) == (68, 120)  # 1080x1920 / 16
    # Undistorted with "crop": focal slightly longer than the scaled original (pincushion k1 > 0).
    assert 1375.52 / 16 < f.intrinsics.fx < 1.05 * 1375.52 / 16
    same = next(D.iter_nerfstudio(FOX, downscale=16, undistort="same"))
    assert same.intrinsics == Intrinsics(1375.52, 1374.49, 554.558, 965.268, 1080, 1920).scaled(1 / 16)
    # Stamps come from the position in the file's list: missing images leave gaps.
    idx = [fr.extra["index"] for fr in frames]
    assert idx == sorted(idx) and idx[-1] >= 50
    assert frames[1].stamp == pytest.approx(idx[1] / D.DEFAULT_RATE_HZ)


def test_fox_iter_is_lazy_and_agrees():
    it = D.iter_nerfstudio(FOX, downscale=16, rate=30.0)
    first = next(it)
    assert first.name == "0001" and first.stamp == 0.0
    second = next(it)
    assert second.stamp == pytest.approx(second.extra["index"] / 30.0)


def test_lego_blender_background_and_intrinsics():
    white = D.load_blender(LEGO, "train", downscale=8)
    assert len(white) == 100
    f = white[0]
    assert f.image.shape == (100, 100, 3)
    assert f.intrinsics.cx == pytest.approx(50.0) and f.intrinsics.fx == pytest.approx(
        0.5 * 800 / np.tan(0.5 * 0.6911112070083618) / 8)
    assert np.all(f.image[0, 0] == 255)
    black = D.load_blender(LEGO, "test", background=(0.0, 0.0, 0.0), downscale=8)
    assert len(black) == 25 and np.all(black[0].image[0, 0] == 0)
    assert black[0].extra["split"] == "test"
    # Object pixels do not depend on the background.
    mid = white[0].image.shape[0] // 2
    assert np.any(white[0].image[mid] < 250)


# ------------------------------------------------------------------ writer / reader round trip

def _scene_frames(n=6, w=40, h=30, seed=0):
    rng = np.random.default_rng(seed)
    k = Intrinsics(50.0, 52.0, 20.3, 14.8, w, h)
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        T = C.look_at([2 * np.cos(a), 2 * np.sin(a), 0.8], [0, 0, 0.2])
        depth = np.round(rng.uniform(0.3, 5.0, (h, w)), 3).astype(np.float32)
        depth[0, :3] = 0.0
        masks = {lvl: rng.integers(0, 70000 if lvl == "never" else 300, (h, w)).astype(np.int32) for lvl in D.LEVELS}
        frames.append(Frame(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), T_world_cam=T, intrinsics=k,
                            depth=depth, name=f"view_{i:03d}", masks=masks,
                            extra={"split": "eval" if i % 3 == 2 else "train"}))
    return frames


def test_nerfstudio_write_read_round_trip(tmp_path):
    frames = _scene_frames()
    labels = {"whole": {1: "table", 2: "mug"}, "part": {5: "table top"}, "subpart": {9: "mug handle"}}
    queries = [{"text": "mug", "level": "whole", "ids": [2], "box_min": [0, 0, 0], "box_max": [0.1, 0.1, 0.2]}]
    D.write_nerfstudio(tmp_path, frames, labels=labels, queries=queries)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert meta["fl_x"] == 50.0 and "fl_x" not in meta["frames"][0]
    assert meta["frames"][0]["mask_file_paths"].keys() == set(D.LEVELS)
    with Image.open(tmp_path / meta["frames"][0]["depth_file_path"]) as im:
        assert np.asarray(im).dtype == np.uint16
    back = D.load_nerfstudio(tmp_path)
    assert len(back) == len(frames)
    for a, b in zip(frames, back):
        assert b.name == a.name and b.intrinsics == a.intrinsics
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-12)
        np.testing.assert_allclose(b.depth, a.depth, atol=0.6e-3)
        assert b.depth.dtype == np.float32 and b.depth[0, 0] == 0.0
        for lvl in D.LEVELS:
            assert b.masks[lvl].dtype == np.int32
            np.testing.assert_array_equal(b.masks[lvl], a.masks[lvl])
        assert b.extra["split"] == a.extra["split"]
    ev = D.load_nerfstudio(tmp_path, split="eval")
    assert [f.name for f in ev] == ["view_002", "view_005"]
    assert D.load_labels(tmp_path / "labels.json") == labels
    assert D.load_queries(tmp_path / "queries.json")[0]["ids"] == [2]
    # Downscaled: depth and ids sampled, never blended.
    half = D.load_nerfstudio(tmp_path, downscale=2)[0]
    assert half.image.shape == (15, 20, 3) and half.intrinsics.fx == pytest.approx(25.0)
    assert set(np.unique(half.masks["part"])) <= set(np.unique(frames[0].masks["part"]))
    assert set(np.unique(half.depth)) <= set(np.unique(back[0].depth))


def test_per_frame_intrinsics_and_distortion(tmp_path):
    frames = _scene_frames(n=2)
    frames[1] = Frame(image=frames[1].image, T_world_cam=frames[1].T_world_cam,
                      intrinsics=Intrinsics(45.0, 45.0, 20.0, 15.0, 40, 30), name="other")
    D.write_nerfstudio(tmp_path, frames)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert "fl_x" not in meta and meta["frames"][1]["fl_x"] == 45.0
    back = D.load_nerfstudio(tmp_path)
    assert back[0].intrinsics == frames[0].intrinsics and back[1].intrinsics == frames[1].intrinsics
    # A per-frame distortion override is undistorted ("crop": no empty pixels).
    meta["frames"][1]["k1"] = 0.1
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    b0, b1 = D.load_nerfstudio(tmp_path)
    assert b0.intrinsics == frames[0].intrinsics and b1.intrinsics.fx > 45.0
    assert b1.image.shape == frames[1].image.shape


@pytest.mark.parametrize("bad,what", [("scale", "rotation"), ("nan", "non-finite")])
def test_non_rigid_pose_names_the_frame(tmp_path, bad, what):
    D.write_nerfstudio(tmp_path, _scene_frames(n=4))
    meta = json.loads((tmp_path / "transforms.json").read_text())
    m = np.array(meta["frames"][2]["transform_matrix"])
    if bad == "scale":
        m[:3, :3] *= 1.1
    else:
        m[0, 3] = np.nan
    meta["frames"][2]["transform_matrix"] = m.tolist()
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(PoseError, match=r"frame 2 .*view_002.*" + what):
        D.load_nerfstudio(tmp_path)
    with pytest.raises(PoseError, match="frame 2"):
        D.iter_nerfstudio(tmp_path)  # validated before the first frame


def test_writer_rejects_bad_input(tmp_path):
    frames = _scene_frames(n=1)
    frames[0].masks["whole"][0, 0] = 70000
    with pytest.raises(ValueError, match="65535"):
        D.write_nerfstudio(tmp_path, frames)
    with pytest.raises(ValueError, match="level"):
        D.write_queries(tmp_path / "q.json", [{"text": "x", "level": "room", "ids": [], "box_min": [0, 0, 0],
                                               "box_max": [1, 1, 1]}])


def test_unreadable_image_skipped(tmp_path, caplog):
    D.write_nerfstudio(tmp_path, _scene_frames(n=3))
    (tmp_path / "images" / "view_001.png").write_bytes(b"not a png")
    caplog.set_level(logging.WARNING, logger="gags_ros.datasets")
    frames = D.load_nerfstudio(tmp_path)
    assert [f.name for f in frames] == ["view_000", "view_002"]
    warns = _warnings(caplog)
    assert len(warns) == 1 and "skipped 1 of 3" in warns[0].getMessage()


# ------------------------------------------------------------------ COLMAP

CAMS = {  # id -> (model, params)
    1: ("PINHOLE", (60.0, 62.0, 24.0, 16.0)),
    2: ("SIMPLE_RADIAL", (58.0, 24.5, 15.5, -0.05)),
    3: ("OPENCV", (61.0, 60.0, 23.0, 16.5, 0.04, -0.01, 1e-3, -5e-4)),
    4: ("SIMPLE_PINHOLE", (59.0, 24.0, 16.0)),
    5: ("RADIAL", (59.0, 24.0, 16.0, 0.03, 0.01)),
}
W, H = 48, 32


def _colmap_scene(root: Path):
    """Images and ground truth; images are named so that name order differs from id order."""
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True)
    imgs = []
    for j in range(5):
        iid = 10 - j
        T = C.look_at([3 * np.cos(j), 3 * np.sin(j), 1.0], [0, 0, 0])
        q, t = C.colmap_from_T_world_cam(T)
        name = f"img_{j:02d}.png"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / name)
        imgs.append((iid, q, t, j + 1, name, T))
    pts = (rng.normal(size=(7, 3)), rng.integers(0, 256, (7, 3)).astype(np.uint8))
    return imgs, pts


def _write_colmap_text(model: Path, imgs, pts):
    model.mkdir(parents=True)
    with open(model / "cameras.txt", "w") as f:
        f.write("# Camera list\n")
        for cid, (m, p) in CAMS.items():
            f.write(f"{cid} {m} {W} {H} " + " ".join(repr(x) for x in p) + "\n")
    with open(model / "images.txt", "w") as f:
        f.write("# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n")
        for k, (iid, q, t, cid, name, _) in enumerate(imgs):
            f.write(f"{iid} " + " ".join(repr(float(x)) for x in (*q, *t)) + f" {cid} {name}\n")
            # Some images have 2D points, others an empty line (both occur in real files).
            f.write("1.0 2.0 -1 3.5 4.5 0\n" if k % 2 else "\n")
    with open(model / "points3D.txt", "w") as f:
        for i, (x, c) in enumerate(zip(*pts)):
            f.write(f"{i + 1} {float(x[0])!r} {float(x[1])!r} {float(x[2])!r} {c[0]} {c[1]} {c[2]} 0.5 {10 - (i % 5)} 0\n")


def _write_colmap_binary(model: Path, imgs, pts):
    ids = {name: i for i, (name, _) in D.COLMAP_MODELS.items()}
    model.mkdir(parents=True)
    with open(model / "cameras.bin", "wb") as f:
        f.write(struct.pack("<Q", len(CAMS)))
        for cid, (m, p) in CAMS.items():
            f.write(struct.pack("<iiQQ", cid, ids[m], W, H) + struct.pack("<" + "d" * len(p), *p))
    with open(model / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(imgs)))
        for k, (iid, q, t, cid, name, _) in enumerate(imgs):
            f.write(struct.pack("<i7di", iid, *q, *t, cid) + name.encode() + b"\x00")
            f.write(struct.pack("<Q", k))
            for n in range(k):
                f.write(struct.pack("<ddq", 1.0 + n, 2.0, -1))
    with open(model / "points3D.bin", "wb") as f:
        f.write(struct.pack("<Q", len(pts[0])))
        for i, (x, c) in enumerate(zip(*pts)):
            f.write(struct.pack("<Q3d3Bd", i + 1, *x, *c, 0.5))
            f.write(struct.pack("<Q", 2) + struct.pack("<ii", 10, i) + struct.pack("<ii", 9, i))


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_colmap_round_trip(tmp_path, fmt):
    imgs, pts = _colmap_scene(tmp_path)
    model = tmp_path / "sparse" / "0"
    (_write_colmap_text if fmt == "text" else _write_colmap_binary)(model, imgs, pts)
    frames = D.load_colmap(tmp_path)
    assert [f.extra["file_path"] for f in frames] == [i[4] for i in imgs]  # name order
    for f, (iid, q, t, cid, name, T) in zip(frames, imgs):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-9)
        model_name, params = CAMS[cid]
        assert f.image.shape == (H, W, 3)
        if model_name in ("PINHOLE", "SIMPLE_PINHOLE"):
            expect = Intrinsics(params[0], params[1 if model_name == "PINHOLE" else 0], params[-2], params[-1], W, H)
            assert f.intrinsics == expect
            with Image.open(tmp_path / "images" / name) as im:
                np.testing.assert_array_equal(f.image, np.asarray(im))
        else:
            assert f.intrinsics.fx != params[0]  # undistorted ("crop") camera
    xyz, rgb = D.load_colmap_points(model)
    np.testing.assert_allclose(xyz, pts[0])
    np.testing.assert_array_equal(rgb, pts[1])
    # The model folder itself also works, images found at <root>/images.
    assert len(D.load_colmap(model)) == 5


def test_colmap_text_and_binary_agree(tmp_path):
    imgs, pts = _colmap_scene(tmp_path)
    _write_colmap_text(tmp_path / "txt", imgs, pts)
    _write_colmap_binary(tmp_path / "bin", imgs, pts)
    ct, it = D.read_colmap_model(tmp_path / "txt")
    cb, ib = D.read_colmap_model(tmp_path / "bin")
    assert ct == cb and it == ib


def test_colmap_bad_quaternion_and_missing_image(tmp_path, caplog):
    imgs, pts = _colmap_scene(tmp_path)
    iid, q, t, cid, name, T = imgs[3]
    imgs[3] = (iid, q * 1.5, t, cid, name, T)
    _write_colmap_text(tmp_path / "sparse", imgs, pts)
    with pytest.raises(PoseError, match="img_03"):
        D.load_colmap(tmp_path)
    imgs[3] = (iid, q, t, cid, name, T)
    (tmp_path / "images" / "img_01.png").unlink()
    _write_colmap_text(tmp_path / "sparse2", imgs, pts)
    caplog.set_level(logging.WARNING, logger="gags_ros.datasets")
    frames = D.load_colmap(tmp_path / "sparse2", images_dir="../images")
    assert len(frames) == 4
    warns = _warnings(caplog)
    assert len(warns) == 1 and "img_01.png" in warns[0].getMessage()


def test_colmap_unsupported_model(tmp_path):
    imgs, pts = _colmap_scene(tmp_path)
    model = tmp_path / "sparse"
    _write_colmap_text(model, imgs, pts)
    txt = (model / "cameras.txt").read_text().replace("OPENCV 48 32 61.0", "OPENCV_FISHEYE 48 32 61.0")
    (model / "cameras.txt").write_text(txt)
    with pytest.raises(ValueError, match="OPENCV_FISHEYE"):
        D.load_colmap(tmp_path)


def test_package_does_not_read_shared_datasets():
    src = Path(D.__file__).read_text() + Path(C.__file__).read_text()
    assert "shared/datasets" not in src and "../shared" not in src
