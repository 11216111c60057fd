"""Camera conventions, in one place.

Every pose that enters gags_ros is converted here to ``T_world_cam``: a ``[4, 4]`` float64 rigid
transform from the camera's OpenCV optical frame (x right, y down, z forward) to the world frame.

Conventions handled:

- OpenGL / Blender / nerfstudio / instant-ngp ``transform_matrix``: camera-to-world with camera axes
  x right, y up, z backward. ``T_world_cam = c2w @ diag(1, -1, -1, 1)``.
- COLMAP ``images.txt`` / ``images.bin``: world-to-camera as a unit quaternion ``(qw, qx, qy, qz)``
  and a translation, already in the OpenCV optical frame. ``T_world_cam = inv([R(q) | t])``.
- ROS ``geometry_msgs`` quaternions are ``(x, y, z, w)``: use ``order="xyzw"``.

Pixel coordinates follow :class:`gags_ros.core.types.Intrinsics`: pixel ``(u, v)`` (column, row)
covers ``[u, u+1) x [v, v+1)`` and its centre is at ``(u + 0.5, v + 0.5)`` (the COLMAP, nerfstudio
and gsplat convention). Array index ``i`` therefore sits at continuous coordinate ``i + 0.5``.
ROS CameraInfo and OpenCV put pixel centres at integer coordinates instead, so their principal
point is half a pixel smaller; :mod:`gags_ros.core.camera_info` converts once at the ROS boundary.

Lens distortion is one of CameraInfo's models (:class:`Distortion`: plumb_bob, rational_polynomial,
equidistant) on normalised coordinates, so its coefficients do not change when an image is resized.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .types import Intrinsics

# Flips the y and z axes: OpenGL camera axes (y up, z backward) <-> OpenCV (y down, z forward).
# It is its own inverse.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------------
# Rigid transforms
# --------------------------------------------------------------------------------------------------

def make_pose(R: np.ndarray, t: Sequence[float]) -> np.ndarray:
    """``[4, 4]`` float64 transform from rotation ``R`` ``[3, 3]`` and translation ``t`` ``[3]``."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``[4, 4]`` transform (uses ``R^T``, no general matrix inverse)."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    return make_pose(R.T, -R.T @ t)


def T_world_cam_from_opengl(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (nerfstudio, instant-ngp, Blender ``transform_matrix``) -> ``T_world_cam``.

    ``c2w``: ``[4, 4]`` or ``[3, 4]``. Scale in the rotation block is kept (validate with
    :func:`gags_ros.core.types.check_rigid`).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    return c2w @ OPENGL_TO_OPENCV


def opengl_from_T_world_cam(T_world_cam: np.ndarray) -> np.ndarray:
    """``T_world_cam`` -> OpenGL camera-to-world ``[4, 4]`` (what ``transforms.json`` stores)."""
    return np.asarray(T_world_cam, dtype=np.float64) @ OPENGL_TO_OPENCV


# The three formats share the OpenGL camera axes; the aliases document intent at call sites.
T_world_cam_from_blender = T_world_cam_from_opengl
T_world_cam_from_nerfstudio = T_world_cam_from_opengl


def T_world_cam_from_colmap(qvec_wxyz: Sequence[float], tvec: Sequence[float]) -> np.ndarray:
    """COLMAP world-to-camera ``(qw, qx, qy, qz)``, ``(tx, ty, tz)`` -> ``T_world_cam``."""
    return invert_pose(make_pose(rotation_from_quat(qvec_wxyz, order="wxyz"), tvec))


def colmap_from_T_world_cam(T_world_cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``T_world_cam`` -> COLMAP ``(qvec_wxyz [4], tvec [3])`` of the world-to-camera transform."""
    T_cam_world = invert_pose(T_world_cam)
    return quat_from_rotation(T_cam_world[:3, :3], order="wxyz"), T_cam_world[:3, 3].copy()


def pose_from_translation_quat(t: Sequence[float], q: Sequence[float], order: str = "xyzw") -> np.ndarray:
    """``[4, 4]`` transform from a translation and a quaternion (ROS order ``xyzw`` by default)."""
    return make_pose(rotation_from_quat(q, order=order), t)


def translation_quat_from_pose(T: np.ndarray, order: str = "xyzw") -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pose_from_translation_quat`: ``(t [3], q [4])``."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), quat_from_rotation(T[:3, :3], order=order)


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_cam`` of a camera at ``eye`` whose optical axis (+z) points at ``target``.

    The camera's image "up" (-y) is as close to the world vector ``up`` as possible.
    Raises ``ValueError`` when ``eye == target`` or the view direction is parallel to ``up``.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= n
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise ValueError("look_at: view direction is parallel to the up vector")
    x /= nx
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), eye)


# --------------------------------------------------------------------------------------------------
# Quaternions (unit, Hamilton convention)
# --------------------------------------------------------------------------------------------------

def _to_wxyz(q: Sequence[float], order: str) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64).reshape(4)
    if order == "wxyz":
        return q
    if order == "xyzw":
        return q[[3, 0, 1, 2]]
    raise ValueError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def _from_wxyz(q: np.ndarray, order: str) -> np.ndarray:
    if order == "wxyz":
        return q
    if order == "xyzw":
        return q[[1, 2, 3, 0]]
    raise ValueError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def rotation_from_quat(q: Sequence[float], order: str = "wxyz") -> np.ndarray:
    """``[3, 3]`` rotation matrix of quaternion ``q`` (normalised first; zero or non-finite -> ValueError)."""
    w, x, y, z = _to_wxyz(q, order)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"not a valid quaternion: {list(np.asarray(q, dtype=float))}")
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def quat_from_rotation(R: np.ndarray, order: str = "wxyz") -> np.ndarray:
    """Unit quaternion of rotation ``R`` ``[3, 3]`` with ``w >= 0`` (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    # Pick the largest of (w, x, y, z) to divide by: numerically stable for every rotation.
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * np.sqrt(max(1.0 + tr, 1e-300))
        q = np.array([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    elif i == 1:
        s = 2.0 * np.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], 1e-300))
        q = np.array([(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s])
    elif i == 2:
        s = 2.0 * np.sqrt(max(1.0 + R[1, 1] - R[0, 0] - R[2, 2], 1e-300))
        q = np.array([(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s])
    else:
        s = 2.0 * np.sqrt(max(1.0 + R[2, 2] - R[0, 0] - R[1, 1], 1e-300))
        q = np.array([(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s])
    q /= np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return _from_wxyz(q, order)


def quat_slerp(q0: Sequence[float], q1: Sequence[float], alpha: float, order: str = "wxyz") -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; ``alpha`` 0 -> ``q0``, 1 -> ``q1``."""
    a = _to_wxyz(q0, order)
    b = _to_wxyz(q1, order)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    d = float(np.dot(a, b))
    if d < 0.0:  # q and -q are the same rotation: take the shorter way round
        b, d = -b, -d
    if d > 0.9995:  # nearly identical: slerp's sin(theta) denominator is ill-conditioned
        q = a + alpha * (b - a)
    else:
        theta = np.arccos(min(d, 1.0))
        q = (np.sin((1.0 - alpha) * theta) * a + np.sin(alpha * theta) * b) / np.sin(theta)
    q = q / np.linalg.norm(q)
    return _from_wxyz(q, order)


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose between ``T0`` (``alpha = 0``) and ``T1`` (``alpha = 1``): slerp rotation, lerp translation.

    Used to look up a camera pose at an image stamp between two TF samples.
    """
    T0 = np.asarray(T0, dtype=np.float64)
    T1 = np.asarray(T1, dtype=np.float64)
    q = quat_slerp(quat_from_rotation(T0[:3, :3]), quat_from_rotation(T1[:3, :3]), alpha)
    return make_pose(rotation_from_quat(q), (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3])


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of rotation ``R`` ``[3, 3]`` in degrees, in [0, 180]."""
    c = (np.trace(np.asarray(R, dtype=np.float64)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# --------------------------------------------------------------------------------------------------
# Lens distortion (CameraInfo's plumb_bob, rational_polynomial and equidistant models)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Distortion:
    """Lens distortion on normalised image coordinates (dimensionless coefficients).

    ``model`` names it as sensor_msgs/CameraInfo does (image_geometry / OpenCV):

    - ``plumb_bob``: radial-tangential ``k1, k2, p1, p2, k3`` (OpenCV's 5-coefficient model);
    - ``rational_polynomial``: the same with the radial factor divided by ``1 + k4 r^2 + k5 r^4 +
      k6 r^6`` (OpenCV's 8-coefficient model, ``D = [k1, k2, p1, p2, k3, k4, k5, k6]``);
    - ``equidistant``: OpenCV's fisheye model, ``D = [k1, k2, k3, k4]``: the angle ``theta`` of the
      ray from the optical axis maps to ``theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``.
    """

    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    k5: float = 0.0
    k6: float = 0.0
    model: str = "plumb_bob"

    @property
    def is_zero(self) -> bool:
        return not any((self.k1, self.k2, self.p1, self.p2, self.k3, self.k4, self.k5, self.k6))

    def as_array(self) -> np.ndarray:
        """The coefficients in CameraInfo / OpenCV order of ``model`` (5, 8 or 4 values)."""
        if self.model == "equidistant":
            return np.array([self.k1, self.k2, self.k3, self.k4])
        if self.model == "rational_polynomial":
            return np.array([self.k1, self.k2, self.p1, self.p2, self.k3, self.k4, self.k5, self.k6])
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3])

    @staticmethod
    def from_array(model: str, d: Sequence[float]) -> "Distortion":
        """From CameraInfo's ``distortion_model`` and ``d``; ValueError names an unsupported model or a
        wrong number of coefficients."""
        d = [float(v) for v in d]
        if model not in DISTORTION_MODELS:
            raise ValueError(f"distortion model '{model}' is not supported (supported: "
                             f"{', '.join(DISTORTION_MODELS)})")
        lo, hi = DISTORTION_MODELS[model]
        if not lo <= len(d) <= hi:
            raise ValueError(f"distortion model '{model}' needs {lo}..{hi} coefficients, d has {len(d)}")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"distortion coefficients are not finite: {d}")
        d = d + [0.0] * (hi - len(d))
        if model == "equidistant":
            return Distortion(k1=d[0], k2=d[1], k3=d[2], k4=d[3], model=model)
        if model == "rational_polynomial":
            return Distortion(*d[:8], model=model)
        return Distortion(*d[:5], model=model)


# CameraInfo distortion_model -> (fewest, most) coefficients accepted (missing ones are 0).
DISTORTION_MODELS = {"plumb_bob": (4, 5), "rational_polynomial": (5, 8), "equidistant": (4, 4)}


def _radial(r2: np.ndarray, d: Distortion) -> np.ndarray:
    num = 1.0 + r2 * (d.k1 + r2 * (d.k2 + r2 * d.k3))
    if d.model == "rational_polynomial":
        return num / (1.0 + r2 * (d.k4 + r2 * (d.k5 + r2 * d.k6)))
    return num


def _fisheye_theta_d(theta: np.ndarray, d: Distortion) -> np.ndarray:
    t2 = theta * theta
    return theta * (1.0 + t2 * (d.k1 + t2 * (d.k2 + t2 * (d.k3 + t2 * d.k4))))


def distort_normalized(x: np.ndarray, y: np.ndarray, d: Distortion) -> Tuple[np.ndarray, np.ndarray]:
    """Forward model: ideal normalised coordinates ``(x, y) = (X/Z, Y/Z)`` -> distorted ones."""
    if d.model == "equidistant":
        r = np.sqrt(x * x + y * y)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(r > 1e-12, _fisheye_theta_d(np.arctan(r), d) / r, 1.0)
        return x * s, y * s
    r2 = x * x + y * y
    radial = _radial(r2, d)
    xd = x * radial + 2.0 * d.p1 * x * y + d.p2 * (r2 + 2.0 * x * x)
    yd = y * radial + d.p1 * (r2 + 2.0 * y * y) + 2.0 * d.p2 * x * y
    return xd, yd


def undistort_normalized(xd: np.ndarray, yd: np.ndarray, d: Distortion,
                         iterations: int = 20) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`distort_normalized` by fixed-point iteration (as OpenCV's undistortPoints;
    Newton's method on theta for ``equidistant``).

    Accurate to ~1e-9 within the field of view of ordinary lenses; not for strong fisheye.
    """
    xd = np.asarray(xd, dtype=np.float64)
    yd = np.asarray(yd, dtype=np.float64)
    if d.model == "equidistant":
        rd = np.sqrt(xd * xd + yd * yd)
        theta = rd.copy()
        for _ in range(iterations):
            t2 = theta * theta
            f = _fisheye_theta_d(theta, d) - rd
            df = 1.0 + t2 * (3 * d.k1 + t2 * (5 * d.k2 + t2 * (7 * d.k3 + t2 * 9 * d.k4)))
            theta = theta - f / df
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(rd > 1e-12, np.tan(theta) / rd, 1.0)
        return xd * s, yd * s
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = _radial(r2, d)
        dx = 2.0 * d.p1 * x * y + d.p2 * (r2 + 2.0 * x * x)
        dy = d.p1 * (r2 + 2.0 * y * y) + 2.0 * d.p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return x, y


def distort_pixels(uv: np.ndarray, intrinsics: Intrinsics, d: Distortion) -> np.ndarray:
    """Ideal pinhole pixel coordinates ``[N, 2]`` -> where the distorted camera sees them ``[N, 2]``."""
    uv = np.asarray(uv, dtype=np.float64)
    x = (uv[..., 0] - intrinsics.cx) / intrinsics.fx
    y = (uv[..., 1] - intrinsics.cy) / intrinsics.fy
    xd, yd = distort_normalized(x, y, d)
    return np.stack([xd * intrinsics.fx + intrinsics.cx, yd * intrinsics.fy + intrinsics.cy], axis=-1)


def _source_coords(src: Intrinsics, d: Distortion, dst: Intrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Continuous source pixel coordinates ``(us, vs)``, each ``[H_dst, W_dst]``, of every output pixel centre."""
    u = np.arange(dst.width, dtype=np.float64) + 0.5
    v = np.arange(dst.height, dtype=np.float64) + 0.5
    x = ((u - dst.cx) / dst.fx)[None, :]
    y = ((v - dst.cy) / dst.fy)[:, None]
    x, y = np.broadcast_arrays(x, y)
    xd, yd = distort_normalized(x, y, d)
    return xd * src.fx + src.cx, yd * src.fy + src.cy


def undistorted_intrinsics(src: Intrinsics, d: Distortion, mode: str = "crop") -> Intrinsics:
    """Pinhole intrinsics for the undistorted image, same size as ``src``.

    ``mode``: ``"same"`` keeps ``src`` (output pixels that see outside the source become 0);
    ``"crop"`` scales the focal lengths by the smallest factor for which every output pixel centre
    samples inside the source image (OpenCV's ``alpha = 0``), keeping the principal point.
    """
    if mode == "same" or d.is_zero:
        return src
    if mode != "crop":
        raise ValueError(f"undistortion mode must be 'crop' or 'same', got {mode!r}")
    W, H = src.width, src.height
    # The extreme source coordinates come from the output border (distortion is monotonic across the
    # field of view of ordinary lenses), so test the border pixels only.
    u = np.arange(W, dtype=np.float64) + 0.5
    v = np.arange(H, dtype=np.float64) + 0.5
    bu = np.concatenate([u, u, np.full(H, 0.5), np.full(H, W - 0.5)])
    bv = np.concatenate([np.full(W, 0.5), np.full(W, H - 0.5), v, v])

    def inside(z: float) -> bool:
        x = (bu - src.cx) / (src.fx * z)
        y = (bv - src.cy) / (src.fy * z)
        xd, yd = distort_normalized(x, y, d)
        us, vs = xd * src.fx + src.cx, yd * src.fy + src.cy
        # Bilinear sampling needs both neighbours: array index in [0, W-1] <=> coordinate in [0.5, W-0.5].
        return bool(np.all((us >= 0.5) & (us <= W - 0.5) & (vs >= 0.5) & (vs <= H - 0.5)))

    lo, hi = 0.5, 4.0
    if inside(lo):
        return Intrinsics(src.fx * lo, src.fy * lo, src.cx, src.cy, W, H)
    if not inside(hi):
        raise ValueError(f"cannot find a valid undistorted view for distortion {d}")
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return Intrinsics(src.fx * hi, src.fy * hi, src.cx, src.cy, W, H)


@functools.lru_cache(maxsize=16)
def _cached_source_coords(src: Intrinsics, d: Distortion, dst: Intrinsics) -> np.ndarray:
    us, vs = _source_coords(src, d, dst)
    # map_coordinates wants array indices (row, col): index = coordinate - 0.5.
    coords = np.stack([vs - 0.5, us - 0.5]).astype(np.float32)
    coords.setflags(write=False)
    return coords


def undistort_image(image: np.ndarray, src: Intrinsics, d: Distortion, dst: Optional[Intrinsics] = None,
                    order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Resample a distorted image ``[H, W]`` or ``[H, W, C]`` into the pinhole camera ``dst``.

    For every output pixel centre the forward model gives its source coordinate, sampled with
    ``order`` 1 (bilinear; images) or 0 (nearest; depth, instance ids). Output pixels whose source is
    outside the image get ``fill``. ``dst`` defaults to ``undistorted_intrinsics(src, d, "crop")``.
    The sampling grid is cached per camera, so a stream from one camera pays for it once.
    Returns the same dtype as ``image`` (integers rounded and clipped).
    """
    image = np.asarray(image)
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order}")
    if image.shape[0] != src.height or image.shape[1] != src.width:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but intrinsics are "
                         f"{src.width}x{src.height}")
    if dst is None:
        dst = undistorted_intrinsics(src, d, "crop")
    if d.is_zero and dst == src:
        return image.copy()
    coords = _cached_source_coords(src, d, dst)
    chans = image[..., None] if image.ndim == 2 else image
    out = np.empty((dst.height, dst.width, chans.shape[2]), dtype=image.dtype)
    work = np.float32 if image.dtype.itemsize <= 2 and order > 0 else None
    inside = ((coords[0] >= -0.5) & (coords[0] <= src.height - 0.5)
              & (coords[1] >= -0.5) & (coords[1] <= src.width - 0.5))
    for c in range(chans.shape[2]):
        src_c = chans[..., c]
        if order == 0:
            # Nearest: round the coordinates ourselves so integer ids are copied, never blended.
            idx = np.clip(np.floor(coords + 0.5).astype(np.int64), 0, None)
            idx = np.minimum(idx, np.array([src.height - 1, src.width - 1])[:, None, None])
            valid = inside
            res = np.full((dst.height, dst.width), fill, dtype=image.dtype)
            res[valid] = src_c[idx[0][valid], idx[1][valid]]
            out[..., c] = res
            continue
        # Within half a pixel of the border, extend the edge pixel (the pixel covers that area);
        # beyond it, the output sees nothing.
        res = ndimage.map_coordinates(src_c.astype(work) if work else src_c, coords, order=order,
                                      mode="nearest", prefilter=False)
        res[~inside] = fill
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            res = np.clip(np.rint(res), info.min, info.max)
        out[..., c] = res
    return out[..., 0] if image.ndim == 2 else out


# --------------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------------

def world_to_camera(points_world: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """World points ``[N, 3]`` -> camera optical-frame points ``[N, 3]``."""
    T_cam_world = invert_pose(T_world_cam)
    return np.asarray(points_world, dtype=np.float64) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]


def project_points(points_world: np.ndarray, T_world_cam: np.ndarray, intrinsics: Intrinsics,
                   distortion: Optional[Distortion] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Project world points ``[N, 3]`` (m) to pixels.

    Returns ``(uv [N, 2], depth [N])``: continuous pixel coordinates (centre of pixel ``(u, v)`` at
    ``(u + 0.5, v + 0.5)``) and the z-depth in metres along the optical axis. Points with
    ``depth <= 0`` (behind the camera) get ``uv = nan``.
    """
    pc = world_to_camera(points_world, T_world_cam)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(z > 0, pc[:, 0] / z, np.nan)
        y = np.where(z > 0, pc[:, 1] / z, np.nan)
    if distortion is not None and not distortion.is_zero:
        x, y = distort_normalized(x, y, distortion)
    uv = np.stack([x * intrinsics.fx + intrinsics.cx, y * intrinsics.fy + intrinsics.cy], axis=1)
    return uv, z


def in_image(uv: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """``[N]`` bool: continuous pixel coordinates ``uv`` ``[N, 2]`` fall inside the image."""
    uv = np.asarray(uv)
    with np.errstate(invalid="ignore"):
        return (uv[:, 0] >= 0) & (uv[:, 0] < intrinsics.width) & (uv[:, 1] >= 0) & (uv[:, 1] < intrinsics.height)


def pixel_rays(intrinsics: Intrinsics, T_world_cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Ray through every pixel centre: ``(origin [3], directions [H, W, 3])`` in world frame.

    Directions have unit z-component in the camera frame (so ``origin + depth * dir`` is the point
    at z-depth ``depth``), then rotated to the world; they are not normalised.
    """
    T = np.asarray(T_world_cam, dtype=np.float64)
    u = np.arange(intrinsics.width) + 0.5
    v = np.arange(intrinsics.height) + 0.5
    x = np.broadcast_to(((u - intrinsics.cx) / intrinsics.fx)[None, :], (intrinsics.height, intrinsics.width))
    y = np.broadcast_to(((v - intrinsics.cy) / intrinsics.fy)[:, None], (intrinsics.height, intrinsics.width))
    d_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    return T[:3, 3].copy(), d_cam @ T[:3, :3].T


def backproject_depth(depth: np.ndarray, intrinsics: Intrinsics, T_world_cam: np.ndarray,
                      stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """World points of valid depth pixels (``depth > 0`` and finite).

    ``depth``: ``[H, W]`` z-depth in metres. Returns ``(points [M, 3], pixel_index [M, 2] as (row, col))``.
    ``stride`` subsamples rows and columns.
    """
    depth = np.asarray(depth)
    origin, dirs = pixel_rays(intrinsics, T_world_cam)
    rows, cols = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    dz = depth[rows, cols]
    ok = np.isfinite(dz) & (dz > 0)
    r, c = rows[ok], cols[ok]
    pts = origin + dirs[r, c] * dz[ok][:, None].astype(np.float64)
    return pts, np.stack([r, c], axis=1)
