"""Camera conventions, quaternions, interpolation, distortion and projection (gags_ros.core.camera)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gags_ros.core import camera as C
from gags_ros.core.types import Intrinsics, check_rigid

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
K = Intrinsics(fx=300.0, fy=310.0, cx=160.0, cy=120.0, width=320, height=240)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return C.rotation_from_quat(q / np.linalg.norm(q))


# ------------------------------------------------------------------ conventions

def test_opengl_point_in_front_has_positive_depth():
    rng = np.random.default_rng(0)
    for _ in range(20):
        R_gl, eye = random_rotation(rng), rng.normal(size=3) * 5
        c2w = C.make_pose(R_gl, eye)
        # In OpenGL camera axes the camera looks down -z.
        p = eye + R_gl @ np.array([0.0, 0.0, -2.5])
        T = C.T_world_cam_from_opengl(c2w)
        check_rigid(T)
        uv, z = C.project_points(p[None], T, K)
        assert z[0] == pytest.approx(2.5)
        np.testing.assert_allclose(uv[0], [K.cx, K.cy], atol=1e-9)
        # OpenGL +y (up) is image up: a point above the axis lands in a smaller row.
        uv_up, _ = C.project_points((p + R_gl @ np.array([0.0, 0.3, 0.0]))[None], T, K)
        assert uv_up[0, 1] < K.cy
        np.testing.assert_allclose(C.opengl_from_T_world_cam(T), c2w, atol=1e-12)


def test_colmap_point_in_front_has_positive_depth_and_round_trips():
    rng = np.random.default_rng(1)
    for _ in range(20):
        R_cw, t_cw = random_rotation(rng), rng.normal(size=3)
        q = C.quat_from_rotation(R_cw)
        p_world = R_cw.T @ (np.array([0.2, -0.1, 3.0]) - t_cw)  # camera-frame (0.2, -0.1, 3) -> world
        T = C.T_world_cam_from_colmap(q, t_cw)
        uv, z = C.project_points(p_world[None], T, K)
        assert z[0] == pytest.approx(3.0)
        np.testing.assert_allclose(uv[0], [K.fx * 0.2 / 3 + K.cx, K.fy * -0.1 / 3 + K.cy], atol=1e-9)
        q2, t2 = C.colmap_from_T_world_cam(T)
        np.testing.assert_allclose(C.rotation_from_quat(q2), R_cw, atol=1e-12)
        np.testing.assert_allclose(t2, t_cw, atol=1e-12)


def test_look_at_and_behind_camera():
    T = C.look_at([2.0, 1.0, 1.5], [0.0, 0.0, 0.5], up=[0, 0, 1])
    check_rigid(T)
    uv, z = C.project_points(np.array([[0.0, 0.0, 0.5], [4.0, 2.0, 2.5]]), T, K)
    np.testing.assert_allclose(uv[0], [K.cx, K.cy], atol=1e-9)
    assert z[0] > 0 and z[1] < 0 and np.all(np.isnan(uv[1]))
    # World up appears as image up (smaller row).
    uv_up, _ = C.project_points(np.array([[0.0, 0.0, 0.8]]), T, K)
    assert uv_up[0, 1] < K.cy
    with pytest.raises(ValueError):
        C.look_at([0, 0, 1], [0, 0, 0], up=[0, 0, 1])


def _frames_of(json_path: Path):
    meta = json.loads(json_path.read_text())
    return meta, [C.T_world_cam_from_opengl(np.array(f["transform_matrix"])) for f in meta["frames"]]


def test_lego_cameras_look_at_the_origin():
    meta, poses = _frames_of(DATASETS / "lego" / "transforms_train.json")
    w = 800
    f = 0.5 * w / np.tan(0.5 * meta["camera_angle_x"])
    k = Intrinsics(f, f, w / 2, w / 2, w, w)
    for T in poses:
        uv, z = C.project_points(np.zeros((1, 3)), T, k)
        assert z[0] > 0
        assert np.abs(uv[0] - w / 2).max() < 2.0  # the origin is at the image centre


def test_fox_cameras_look_at_a_common_point():
    meta, poses = _frames_of(DATASETS / "fox" / "transforms.json")
    # Least-squares point closest to every optical axis.
    A, b = np.zeros((3, 3)), np.zeros(3)
    for T in poses:
        d = T[:3, 2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ T[:3, 3]
    p = np.linalg.solve(A, b)
    k = Intrinsics(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], int(meta["w"]), int(meta["h"]))
    for T in poses:
        uv, z = C.project_points(p[None], T, k)
        assert z[0] > 0
        assert C.in_image(uv, k)[0]
        ang = np.degrees(np.arccos(((p - T[:3, 3]) / np.linalg.norm(p - T[:3, 3])) @ T[:3, 2]))
        assert ang < 20.0


# ------------------------------------------------------------------ quaternions, interpolation

def test_quaternion_orders_and_round_trip():
    Rz90 = C.rotation_from_quat([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], order="wxyz")
    np.testing.assert_allclose(Rz90 @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(C.rotation_from_quat([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)], order="xyzw"),
                               Rz90, atol=1e-12)
    rng = np.random.default_rng(2)
    for _ in range(200):
        R = random_rotation(rng)
        q = C.quat_from_rotation(R)
        assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(C.rotation_from_quat(q), R, atol=1e-12)
        np.testing.assert_allclose(C.quat_from_rotation(R, order="xyzw"), q[[1, 2, 3, 0]])
    # Near 180 degrees (trace ~ -1) still stable.
    R180 = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(C.rotation_from_quat(C.quat_from_rotation(R180)), R180, atol=1e-12)
    t, q = C.translation_quat_from_pose(C.make_pose(Rz90, [1, 2, 3]))
    np.testing.assert_allclose(C.pose_from_translation_quat(t, q), C.make_pose(Rz90, [1, 2, 3]), atol=1e-12)
    with pytest.raises(ValueError):
        C.rotation_from_quat([0, 0, 0, 0])


def test_interpolate_pose():
    T0 = C.make_pose(np.eye(3), [0.0, 0.0, 0.0])
    R1 = C.rotation_from_quat([np.cos(np.radians(40)), 0, np.sin(np.radians(40)), 0])  # 80 deg about y
    T1 = C.make_pose(R1, [2.0, -4.0, 1.0])
    np.testing.assert_allclose(C.interpolate_pose(T0, T1, 0.0), T0, atol=1e-12)
    np.testing.assert_allclose(C.interpolate_pose(T0, T1, 1.0), T1, atol=1e-12)
    Tm = C.interpolate_pose(T0, T1, 0.25)
    check_rigid(Tm)
    assert C.rotation_angle_deg(Tm[:3, :3]) == pytest.approx(20.0)
    np.testing.assert_allclose(Tm[:3, 3], [0.5, -1.0, 0.25])
    # Shorter arc regardless of quaternion sign.
    q1 = C.quat_from_rotation(R1)
    np.testing.assert_allclose(C.quat_slerp([1, 0, 0, 0], -q1, 0.5), C.quat_slerp([1, 0, 0, 0], q1, 0.5),
                               atol=1e-12)
    # Nearly identical rotations take the linear branch without NaNs.
    Ta = C.make_pose(C.rotation_from_quat([1, 1e-9, 0, 0]), [0, 0, 0])
    assert np.all(np.isfinite(C.interpolate_pose(T0, Ta, 0.5)))


# ------------------------------------------------------------------ distortion

DIST = C.Distortion(k1=-0.25, k2=0.06, p1=1.5e-3, p2=-8e-4, k3=0.0)
# CameraInfo's three models (issue 16 item 3): the same tests run for each.
MODELS = [DIST,
          C.Distortion.from_array("rational_polynomial", [-0.25, 0.06, 1.5e-3, -8e-4, 0.0, 0.2, -0.02, 0.0]),
          C.Distortion.from_array("equidistant", [-0.1, 0.01, -0.002, 0.0005])]


@pytest.mark.parametrize("dist", MODELS, ids=lambda d: d.model)
def test_undistort_points_inverts_forward_model(dist):
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.6, 0.6, 500), rng.uniform(-0.5, 0.5, 500)
    xd, yd = C.distort_normalized(x, y, dist)
    assert np.abs(xd - x).max() > 1e-2  # the model does distort
    xu, yu = C.undistort_normalized(xd, yd, dist)
    np.testing.assert_allclose(xu, x, atol=1e-9)
    np.testing.assert_allclose(yu, y, atol=1e-9)


def _pattern(u, v):
    """Smooth test image on continuous pixel coordinates of the ideal pinhole camera."""
    return 0.5 + 0.25 * np.sin(u / 7.0) * np.cos(v / 9.0) + 0.2 * np.sin((u + 2 * v) / 23.0)


def test_distortion_models_from_camera_info():
    d = C.Distortion.from_array("rational_polynomial", [1, 2, 3, 4, 5, 6, 7, 8])
    assert (d.k1, d.p1, d.k3, d.k4, d.k6) == (1, 3, 5, 6, 8) and list(d.as_array()) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(C.Distortion.from_array("equidistant", [1, 2, 3, 4]).as_array()) == [1, 2, 3, 4]
    assert C.Distortion.from_array("plumb_bob", [1, 2, 3, 4]).k3 == 0.0
    with pytest.raises(ValueError, match="'fov' is not supported"):
        C.Distortion.from_array("fov", [0.1])
    with pytest.raises(ValueError, match="needs 4..4 coefficients, d has 5"):
        C.Distortion.from_array("equidistant", [0.0] * 5)


@pytest.mark.parametrize("dist", MODELS, ids=lambda d: d.model)
def test_undistort_image_recovers_pinhole_image(dist):
    DIST = dist
    # Synthesize what the distorted camera sees: each distorted pixel centre shows the pattern at
    # its ideal (undistorted) location.
    ud, vd = np.meshgrid(np.arange(K.width) + 0.5, np.arange(K.height) + 0.5)
    xu, yu = C.undistort_normalized((ud - K.cx) / K.fx, (vd - K.cy) / K.fy, DIST)
    distorted = _pattern(xu * K.fx + K.cx, yu * K.fy + K.cy).astype(np.float32)

    for mode in ("same", "crop"):
        dst = C.undistorted_intrinsics(K, DIST, mode)
        out = C.undistort_image(distorted, K, DIST, dst)
        u, v = np.meshgrid(np.arange(dst.width) + 0.5, np.arange(dst.height) + 0.5)
        truth = _pattern((u - dst.cx) / dst.fx * K.fx + K.cx, (v - dst.cy) / dst.fy * K.fy + K.cy)
        src = C.distort_pixels(np.stack([u, v], -1), dst, DIST)  # where each output pixel looks (dst units)
        su = (src[..., 0] - dst.cx) / dst.fx * K.fx + K.cx
        sv = (src[..., 1] - dst.cy) / dst.fy * K.fy + K.cy
        inside = (su > 1) & (su < K.width - 1) & (sv > 1) & (sv < K.height - 1)
        err = np.abs(out - truth)[inside]
        assert inside.mean() > 0.8
        assert err.max() < 0.01, (mode, err.max())
        # Without undistortion the same comparison is far off: the test measures the correction.
        assert np.abs(distorted - truth)[inside].max() > 0.1

@pytest.mark.parametrize("dist", [DIST, C.Distortion(k1=0.15, k2=0.02, p1=-1e-3, p2=5e-4)])
def test_crop_mode_has_no_empty_pixels(dist):
    const = np.full((K.height, K.width, 3), 200, np.uint8)
    dst = C.undistorted_intrinsics(K, dist, "crop")
    # Barrel lenses (k1 < 0) see more than the pinhole: widen; pincushion: narrow.
    assert (dst.fx < K.fx) == (dist.k1 < 0)
    crop = C.undistort_image(const, K, dist)
    assert crop.dtype == np.uint8 and np.all(crop == 200)
    same = C.undistort_image(const, K, dist, K)
    assert same[K.height // 2, K.width // 2, 0] == 200
    if dist.k1 > 0:  # a pincushion lens's pinhole corners lie outside the source: left empty
        assert same[0, 0, 0] == 0


def test_undistort_nearest_keeps_ids():
    ids = (np.arange(K.width)[None, :] // 40 + 10 * (np.arange(K.height)[:, None] // 40)).astype(np.int32)
    out = C.undistort_image(ids, K, DIST, order=0)
    assert out.dtype == np.int32 and set(np.unique(out)) <= set(np.unique(ids))


# ------------------------------------------------------------------ projection

def test_backproject_then_project():
    rng = np.random.default_rng(4)
    T = C.look_at([1.0, -2.0, 1.0], [0.0, 0.0, 0.3])
    depth = rng.uniform(0.5, 4.0, size=(K.height, K.width)).astype(np.float32)
    depth[::7, ::5] = 0.0  # unknown
    pts, rc = C.backproject_depth(depth, K, T)
    assert len(pts) == int((depth > 0).sum())
    uv, z = C.project_points(pts, T, K)
    np.testing.assert_allclose(z, depth[rc[:, 0], rc[:, 1]], rtol=1e-6)
    np.testing.assert_allclose(uv, rc[:, ::-1] + 0.5, atol=1e-6)
    o, d = C.pixel_rays(K, T)
    np.testing.assert_allclose(o, T[:3, 3])
    uv, z = C.project_points(o + d[7, 11][None], T, K)
    np.testing.assert_allclose(uv[0], [11.5, 7.5], atol=1e-9)
    assert z[0] == pytest.approx(1.0)
