"""sensor_msgs/CameraInfo read as image_geometry reads it, ROS-free.

What a camera driver's CameraInfo means for the images the mapper gets:

- **Pixel convention.** ROS (and OpenCV) put the centre of pixel ``(u, v)`` at integer ``(u, v)``;
  :class:`~gags_ros.core.types.Intrinsics` puts it at ``(u + 0.5, v + 0.5)``. A principal point
  read from CameraInfo gets ``+0.5`` here, and :func:`camera_info_fields` (what our publishers
  send) takes it off again, so the conversion happens once at the boundary.
- **Which matrix.** ``raw`` images (``image_raw``) are described by ``K`` and ``D``: with a non-zero
  ``D`` they are undistorted into the pinhole camera ``P`` (image_geometry's ``rectifyImage``),
  colour bilinear and depth nearest, with sampling maps computed once per CameraInfo (cached in
  :func:`gags_ros.core.camera.undistort_image`). ``rectified`` images (image_proc's ``image_rect*``,
  which share the raw stream's CameraInfo) are described by ``P``. ``auto``: rectified when the
  image topic's last name contains ``rect``, else raw (a zero ``D`` then uses ``K`` as it is).
- **Binning and ROI** (``binning_x/y``, ``roi``) are applied to the matrix and the image size.
  Exactly, in the pixel-area convention: ``c' = (c - offset) / binning``, ``f' = f / binning``
  (image_geometry scales the integer-centre ``c`` instead, a quarter pixel off at binning 2).

Distortion models: ``plumb_bob``, ``rational_polynomial`` and ``equidistant``
(:class:`~gags_ros.core.camera.Distortion`); any other is refused with its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .camera import Distortion, undistort_image
from .types import Intrinsics

CAMERA_MODELS = ("auto", "raw", "rectified")
ROS_TO_INTERNAL = 0.5  # px added to a CameraInfo principal point (integer pixel centres -> centres at +0.5)


@dataclass(frozen=True)
class CameraInfoFields:
    """The fields of a sensor_msgs/CameraInfo that describe the camera (sizes in px)."""

    width: int
    height: int
    k: Tuple[float, ...]                      # [9] row-major 3x3
    d: Tuple[float, ...] = ()
    distortion_model: str = ""
    r: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    p: Tuple[float, ...] = (0.0,) * 12        # [12] row-major 3x4
    binning_x: int = 0
    binning_y: int = 0
    roi: Tuple[int, int, int, int] = (0, 0, 0, 0)  # x_offset, y_offset, width, height


@dataclass(frozen=True)
class CameraModel:
    """How the node turns incoming images into pinhole images for the mapper.

    ``intrinsics``: the pinhole camera of the images the mapper gets (internal convention).
    ``source``: the camera of the incoming images (their size is ``source.width x source.height``).
    ``distortion``: None when images are used as they come, else what :meth:`rectify` removes.
    ``matrix``: which CameraInfo matrix gave ``intrinsics`` ("k", "p" or "k+d -> p"), for logs.
    """

    intrinsics: Intrinsics
    source: Intrinsics
    distortion: Optional[Distortion] = None
    matrix: str = "k"
    notes: Tuple[str, ...] = field(default=())

    @staticmethod
    def pinhole(intr: Intrinsics) -> "CameraModel":
        return CameraModel(intr, intr)

    def rectify(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """``image`` ``[H, W]`` or ``[H, W, C]`` of the source camera -> the same in ``intrinsics``
        (bilinear, or nearest for depth: depth is never blended across edges)."""
        if self.distortion is None:
            return image
        return undistort_image(image, self.source, self.distortion, self.intrinsics, order=0 if nearest else 1)


def is_rectified_topic(topic: str) -> bool:
    """image_pipeline names rectified streams ``image_rect``, ``image_rect_color``, ..."""
    return "rect" in topic.rstrip("/").split("/")[-1]


def _matrix_ok(fx: float, fy: float, cx: float, cy: float) -> bool:
    return bool(np.all(np.isfinite([fx, fy, cx, cy])) and fx > 0 and fy > 0)


def camera_model_from_info(info: CameraInfoFields, mode: str = "auto", rectified_topic: bool = False) -> CameraModel:
    """The :class:`CameraModel` of ``info``; ValueError names every problem (without the plausibility
    limits: check ``model.intrinsics`` with :func:`gags_ros.core.plausibility.intrinsics_problems`)."""
    if mode not in CAMERA_MODELS:
        raise ValueError(f"camera model must be one of {', '.join(CAMERA_MODELS)}, got {mode!r}")
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    problems = []
    if not _matrix_ok(K[0, 0], K[1, 1], K[0, 2], K[1, 2]):
        problems.append(f"invalid camera matrix k={[float(v) for v in info.k]} (needs finite values, fx > 0, fy > 0)")
    if info.width == 0 or info.height == 0:
        problems.append(f"zero width or height ({info.width}x{info.height})")
    bx, by = max(int(info.binning_x), 1), max(int(info.binning_y), 1)
    x0, y0, rw, rh = (int(v) for v in info.roi)
    if rw == 0 or rh == 0:  # all zeros = the full image (sensor_msgs)
        x0, y0, rw, rh = 0, 0, int(info.width), int(info.height)
    elif x0 + rw > info.width or y0 + rh > info.height:
        problems.append(f"roi {rw}x{rh} at ({x0}, {y0}) is outside the {info.width}x{info.height} image")
    if rw // bx == 0 or rh // by == 0:
        problems.append(f"binning {bx}x{by} leaves no pixel of {rw}x{rh}")
    if problems:
        raise ValueError("; ".join(problems))
    w, h = rw // bx, rh // by

    def camera(fx: float, fy: float, cx: float, cy: float) -> Intrinsics:
        return Intrinsics(float(fx) / bx, float(fy) / by, (float(cx) + ROS_TO_INTERNAL - x0) / bx,
                          (float(cy) + ROS_TO_INTERNAL - y0) / by, w, h)

    src = camera(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4) if len(info.p) == 12 else np.zeros((3, 4))
    p_ok = _matrix_ok(P[0, 0], P[1, 1], P[0, 2], P[1, 2])
    p_cam = camera(P[0, 0], P[1, 1], P[0, 2], P[1, 2]) if p_ok else None
    if mode == "rectified" or (mode == "auto" and rectified_topic):
        if p_cam is None:
            if mode == "rectified":
                raise ValueError(f"ros.camera_model is 'rectified' but CameraInfo p={[float(v) for v in info.p]} has "
                                 "no valid projection matrix (needs finite values, fx > 0, fy > 0)")
            return CameraModel(src, src, None, "k", ("no valid p: k used",))
        return CameraModel(p_cam, p_cam, None, "p")
    d = np.asarray(info.d, dtype=np.float64)
    if d.size == 0 or not np.any(d):
        return CameraModel(src, src, None, "k")
    try:
        dist = Distortion.from_array(info.distortion_model, d)
    except ValueError as e:
        raise ValueError(f"{e}; if the images are already rectified, set ros.camera_model: rectified") from None
    R = np.asarray(info.r, dtype=np.float64).reshape(3, 3) if len(info.r) == 9 else np.eye(3)
    if np.any(R) and not np.allclose(R, np.eye(3), atol=1e-6):
        raise ValueError("CameraInfo r is a stereo rectification rotation (not identity): undistorting would "
                         "move the image out of its optical frame; use the rectified stream (image_rect) with "
                         "ros.camera_model: rectified")
    return CameraModel(p_cam or src, src, dist, "k+d -> p" if p_cam else "k+d -> k")


def camera_info_fields(intr: Intrinsics) -> dict:
    """CameraInfo fields (``width, height, distortion_model, d, k, r, p``) of a pinhole camera, in the
    ROS convention (principal point ``-0.5``): what our publishers send."""
    fx, fy = intr.fx, intr.fy
    cx, cy = intr.cx - ROS_TO_INTERNAL, intr.cy - ROS_TO_INTERNAL
    return {"width": int(intr.width), "height": int(intr.height), "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": [float(v) for v in (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [float(v) for v in (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0)]}


def register_depth(depth: np.ndarray, src: Intrinsics, T_dst_src: np.ndarray, dst: Intrinsics) -> np.ndarray:
    """Depth of another optical frame re-expressed in camera ``dst`` (what a driver's "aligned depth"
    does). Every valid pixel of ``depth`` ``[H_src, W_src]`` (z in metres, 0 = none) of pinhole
    camera ``src`` is a small square of surface at its depth; it is moved by ``T_dst_src``
    ``[4, 4]`` and its footprint (the projections of its corners) fills every ``dst`` pixel whose
    centre it covers with the z of its centre there, so a coarser depth camera leaves no holes (as
    librealsense's align does). Where footprints overlap the nearest wins (occlusion). Returns
    ``[dst.height, dst.width]`` float32, 0 where nothing landed (surfaces the depth camera does not
    see). numpy's ``minimum.at`` is the z-buffer: OpenCV is not in the environment."""
    depth = np.asarray(depth, dtype=np.float32)
    rows, cols = np.nonzero(depth > 0)
    z = depth[rows, cols].astype(np.float64)
    T = np.asarray(T_dst_src, dtype=np.float64)

    def to_dst(du: float, dv: float):
        """dst continuous coordinates and z of the source pixels' points at offsets (du, dv) px."""
        p = np.stack([(cols + du - src.cx) / src.fx * z, (rows + dv - src.cy) / src.fy * z, z], axis=1)
        q = p @ T[:3, :3].T + T[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            return q[:, 0] / q[:, 2] * dst.fx + dst.cx, q[:, 1] / q[:, 2] * dst.fy + dst.cy, q[:, 2]

    _, _, zc = to_dst(0.5, 0.5)
    corners = [to_dst(du, dv) for du, dv in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))]
    us = np.stack([c[0] for c in corners])
    vs = np.stack([c[1] for c in corners])
    front = np.all(np.stack([c[2] for c in corners]) > 0, axis=0) & (zc > 0)
    # dst pixel i (centre i + 0.5) is covered when x0 <= i + 0.5 < x1
    u0 = np.ceil(us.min(0) - 0.5)
    u1 = np.ceil(us.max(0) - 0.5)
    v0 = np.ceil(vs.min(0) - 0.5)
    v1 = np.ceil(vs.max(0) - 0.5)
    ok = front & np.isfinite(u0 + u1 + v0 + v1) & (u1 > 0) & (u0 < dst.width) & (v1 > 0) & (v0 < dst.height)
    u0, u1, v0, v1, zc = u0[ok].astype(np.int64), u1[ok].astype(np.int64), v0[ok].astype(np.int64), \
        v1[ok].astype(np.int64), zc[ok]
    out = np.full(dst.height * dst.width, np.inf)
    span = int(min(max((u1 - u0).max(initial=0), (v1 - v0).max(initial=0)), 8))  # footprints of a few px
    for dv in range(span):
        for du in range(span):
            u, v = u0 + du, v0 + dv
            m = (u < u1) & (v < v1) & (u >= 0) & (u < dst.width) & (v >= 0) & (v < dst.height)
            np.minimum.at(out, v[m] * dst.width + u[m], zc[m])
    out[~np.isfinite(out)] = 0.0
    out = out.reshape(dst.height, dst.width)
    _refine_on_smooth_surfaces(out, depth, src, T, dst)
    return out.astype(np.float32)


def _refine_on_smooth_surfaces(out: np.ndarray, depth: np.ndarray, src: Intrinsics, T_dst_src: np.ndarray,
                               dst: Intrinsics, iterations: int = 2, max_spread: float = 0.02) -> None:
    """Where the ``dst`` pixel's ray meets a smooth part of the source depth (its four bilinear
    neighbours within ``max_spread`` of each other, relatively), replace the footprint's z by the
    z where the ray meets the bilinearly interpolated surface (fixed-point iteration; in place).
    The footprint's z is that of the source pixel's centre, up to half a source pixel away along
    a slanted surface (mm at metres); edges keep it, as interpolating across them would invent
    surface."""
    rows, cols = np.nonzero(out > 0)
    if rows.size == 0:
        return
    R, t = T_dst_src[:3, :3], T_dst_src[:3, 3]
    d = np.stack([(cols + 0.5 - dst.cx) / dst.fx, (rows + 0.5 - dst.cy) / dst.fy, np.ones(rows.size)], axis=1)
    a = d @ R            # ray directions in the source frame (R^T d)
    b = -(R.T @ t)       # dst origin in the source frame
    s = out[rows, cols].astype(np.float64)
    H, W = depth.shape
    good = np.ones(rows.size, bool)
    for _ in range(iterations):
        p = s[:, None] * a + b
        with np.errstate(divide="ignore", invalid="ignore"):
            x = p[:, 0] / p[:, 2] * src.fx + src.cx - 0.5   # source array index coordinates
            y = p[:, 1] / p[:, 2] * src.fy + src.cy - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        inside = np.isfinite(x0 + y0) & (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
        xi = np.where(inside, x0, 0).astype(np.int64)
        yi = np.where(inside, y0, 0).astype(np.int64)
        q = np.stack([depth[yi, xi], depth[yi, xi + 1], depth[yi + 1, xi], depth[yi + 1, xi + 1]]).astype(np.float64)
        lo, hi = q.min(0), q.max(0)
        good &= inside & (lo > 0) & (hi - lo <= max_spread * lo)
        fx, fy = x - x0, y - y0
        z_src = (q[0] * (1 - fx) + q[1] * fx) * (1 - fy) + (q[2] * (1 - fx) + q[3] * fx) * fy
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(good, (z_src - b[2]) / a[:, 2], s)  # the ray's point whose source z is z_src
    good &= np.isfinite(s) & (s > 0)
    out[rows[good], cols[good]] = s[good]
