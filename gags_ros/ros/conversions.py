"""Message <-> numpy conversions (no cv_bridge: it is not available on PyPI installs).

Converters are named ``x_from_msg`` / ``x_to_msg``. Every input check raises :class:`InputError`
with a message fit for a log line or a diagnostics entry; callers count and report it and go on.
"""

from __future__ import annotations

import array
import io
from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..core.camera import pose_from_translation_quat, translation_quat_from_pose
from ..core.camera_info import (CameraInfoFields, CameraModel, camera_info_fields, camera_model_from_info,
                                is_rectified_topic)
from ..core.config import LimitsConfig
from ..core.plausibility import depth_in_range, intrinsics_problems, quaternion_problem
from ..core.types import Intrinsics

COLOR_ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True),
                   "mono8": (1, False)}
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class InputError(ValueError):
    """A message the node cannot use; the text says why."""


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


def sec_to_stamp(t: float) -> Time:
    sec = int(np.floor(t))
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def _rows(msg: Image, channels: int, dtype: np.dtype) -> np.ndarray:
    """``[H, W, channels]`` view of an Image's data honouring ``step`` padding and endianness."""
    h, w = int(msg.height), int(msg.width)
    item = np.dtype(dtype).itemsize
    row = w * channels * item
    if h == 0 or w == 0:
        raise InputError(f"empty image ({w}x{h})")
    if msg.step < row:
        raise InputError(f"image step {msg.step} is smaller than width*channels*bytes = {row}")
    if len(msg.data) < h * msg.step:
        raise InputError(f"image data has {len(msg.data)} bytes; {h} rows of step {msg.step} need {h * msg.step}")
    buf = np.frombuffer(msg.data, np.uint8, count=h * msg.step).reshape(h, msg.step)[:, :row]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<") if item > 1 else np.dtype(dtype)
    return buf.view(dt).reshape(h, w, channels)


def image_from_msg(msg: Image) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB from rgb8 / bgr8 / rgba8 / bgra8 / mono8 images (a copy)."""
    enc = msg.encoding.lower()
    if enc not in COLOR_ENCODINGS:
        raise InputError(f"unsupported colour encoding '{msg.encoding}' (supported: "
                         f"{', '.join(COLOR_ENCODINGS)}); for depth images use the depth topic")
    ch, bgr = COLOR_ENCODINGS[enc]
    a = _rows(msg, ch, np.uint8)
    if ch == 1:
        return np.repeat(a, 3, axis=2)
    a = a[..., :3]
    return np.ascontiguousarray(a[..., ::-1] if bgr else a)


def image_from_compressed(msg: CompressedImage) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB from a JPEG / PNG CompressedImage."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types for corrupt data
        raise InputError(f"cannot decode compressed image (format '{msg.format}'): {e}") from None


def depth_from_msg(msg: Image, limits: Optional[LimitsConfig] = None) -> np.ndarray:
    """``[H, W]`` float32 metres from 16UC1 / mono16 (millimetres) or 32FC1 (metres).

    Non-finite and non-positive values, and values outside ``[limits.min_depth, limits.max_depth]``,
    become 0 (= no measurement). An image without any valid pixel is refused.
    """
    enc = msg.encoding
    if enc in ("16UC1", "mono16"):
        d = _rows(msg, 1, np.uint16)[..., 0].astype(np.float32) * 1e-3
    elif enc == "32FC1":
        d = _rows(msg, 1, np.float32)[..., 0].astype(np.float32, copy=True)
    else:
        raise InputError(f"unsupported depth encoding '{enc}' (supported: {', '.join(DEPTH_ENCODINGS)})")
    try:
        return depth_in_range(d, limits or LimitsConfig())
    except ValueError as e:
        raise InputError(str(e)) from None


def camera_model_from_msg(msg: CameraInfo, limits: Optional[LimitsConfig] = None, mode: str = "auto",
                          image_topic: str = "") -> CameraModel:
    """How images described by ``msg`` become pinhole images, as image_geometry reads CameraInfo
    (:mod:`gags_ros.core.camera_info`: the ROS pixel convention converted, k or p by ``mode`` and
    ``image_topic``, distortion, binning, ROI). Every problem is named: a camera matrix that is not
    finite with fx, fy > 0, a zero size, an unsupported distortion model, a field of view outside
    ``limits``."""
    roi = msg.roi
    fields = CameraInfoFields(int(msg.width), int(msg.height), tuple(float(v) for v in msg.k),
                              tuple(float(v) for v in msg.d), str(msg.distortion_model),
                              tuple(float(v) for v in msg.r), tuple(float(v) for v in msg.p),
                              int(msg.binning_x), int(msg.binning_y),
                              (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))
    try:
        model = camera_model_from_info(fields, mode, is_rectified_topic(image_topic))
    except ValueError as e:
        raise InputError(f"CameraInfo has {e}") from None
    problems = intrinsics_problems(model.intrinsics, limits or LimitsConfig())
    if problems:
        raise InputError("CameraInfo implausible: " + "; ".join(problems))
    return model


def intrinsics_from_msg(msg: CameraInfo, limits: Optional[LimitsConfig] = None) -> Intrinsics:
    """Pinhole intrinsics (internal pixel convention) of a CameraInfo read with ``camera_model: auto``
    (see :func:`camera_model_from_msg`)."""
    return camera_model_from_msg(msg, limits).intrinsics


def camera_info_to_msg(intr: Intrinsics, header: Header) -> CameraInfo:
    """CameraInfo of pinhole intrinsics, in the ROS convention (pixel centres at integers)."""
    return CameraInfo(header=header, **camera_info_fields(intr))


def image_to_msg(image: np.ndarray, header: Header, encoding: Optional[str] = None) -> Image:
    """rgb8 from ``[H, W, 3]`` uint8, 16UC1 from uint16 ``[H, W]``, 32FC1 from float32 ``[H, W]``."""
    a = np.ascontiguousarray(image)
    if encoding is None:
        encoding = {np.dtype(np.uint8): "rgb8", np.dtype(np.uint16): "16UC1",
                    np.dtype(np.float32): "32FC1"}[a.dtype]
    h, w = a.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                step=int(a.strides[0]))
    msg.data = array.array("B", a.tobytes())  # ~1 ms; assigning numpy arrays takes 24-72 ms
    return msg


def _checked_matrix(what: str, t: Sequence[float], q: Sequence[float], tolerance: float) -> np.ndarray:
    problems = []
    if not np.all(np.isfinite(t)):
        problems.append(f"non-finite translation {list(t)}")
    why = quaternion_problem(q, tolerance)
    if why:
        problems.append(f"rotation {list(q)}: {why}")
    if problems:
        raise InputError(f"{what} refused: " + "; ".join(problems))
    return pose_from_translation_quat(t, q, order="xyzw")


def matrix_from_transform(t: Transform, quaternion_tolerance: float = 0.01) -> np.ndarray:
    """``[4, 4]`` T_parent_child; refused (as tf2 refuses it) unless finite with a unit quaternion
    within ``quaternion_tolerance`` (tf2's rule, see :func:`~gags_ros.core.plausibility.quaternion_problem`)."""
    return _checked_matrix("transform", [t.translation.x, t.translation.y, t.translation.z],
                           [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w], quaternion_tolerance)


def matrix_from_pose(p: Pose, quaternion_tolerance: float = 0.01) -> np.ndarray:
    """``[4, 4]`` pose; refused like :func:`matrix_from_transform`."""
    return _checked_matrix("pose", [p.position.x, p.position.y, p.position.z],
                           [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w],
                           quaternion_tolerance)


def transform_from_matrix(T: np.ndarray) -> Transform:
    t, q = translation_quat_from_pose(T, order="xyzw")
    return Transform(translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                     rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def pose_from_matrix(T: np.ndarray) -> Pose:
    tr = transform_from_matrix(T)
    return Pose(position=Point(x=tr.translation.x, y=tr.translation.y, z=tr.translation.z),
                orientation=tr.rotation)


def pointcloud2_to_msg(xyz: np.ndarray, rgb: Optional[np.ndarray], header: Header,
                       relevancy: Optional[np.ndarray] = None, coverage: Optional[np.ndarray] = None) -> PointCloud2:
    """PointCloud2 with fields x y z (float32, m), rgb (packed float32, RViz's convention) and
    optionally relevancy (float32 in [0, 1]; -1 = unknown: no teacher supervision) and coverage
    (float32 in [0, 1]: supervised share of the Gaussian's seen blend weight)."""
    n = int(xyz.shape[0])
    names = ["x", "y", "z"] + (["rgb"] if rgb is not None else []) + (["relevancy"] if relevancy is not None else [])
    names += ["coverage"] if coverage is not None else []
    dtype = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [4 * i for i in range(len(names))],
                      "itemsize": 4 * len(names)})
    pts = np.zeros(n, dtype=dtype)
    pts["x"], pts["y"], pts["z"] = (xyz[:, i].astype(np.float32) for i in range(3))
    if rgb is not None:
        c = (np.clip(rgb, 0, 1) * 255).astype(np.uint32)
        packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        pts["rgb"] = packed.view(np.float32)
    if relevancy is not None:
        pts["relevancy"] = relevancy.astype(np.float32)
    if coverage is not None:
        pts["coverage"] = coverage.astype(np.float32)
    fields = [PointField(name=nm, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, nm in enumerate(names)]
    msg = PointCloud2(header=header, height=1, width=n, fields=fields, is_bigendian=False,
                      point_step=dtype.itemsize, row_step=dtype.itemsize * n, is_dense=True)
    msg.data = array.array("B", pts.tobytes())
    return msg


def pointcloud2_from_msg(msg: PointCloud2) -> np.ndarray:
    """Structured array of the cloud's float32 fields (for tests and tools)."""
    dtype = np.dtype({"names": [f.name for f in msg.fields], "formats": ["<f4"] * len(msg.fields),
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)


def _color(score: float) -> ColorRGBA:
    """Green (strong) to orange (weak) by a value in [0, 1] (a target's confidence)."""
    s = float(np.clip(score, 0.0, 1.0))
    return ColorRGBA(r=float(1.0 - 0.8 * s), g=float(0.4 + 0.6 * s), b=0.1, a=1.0)


def target_markers(targets: Sequence, header: Header, text: str, ns: str = "gags_targets",
                   clear: bool = True) -> MarkerArray:
    """Markers of query targets: a sphere at each centroid, its translucent box and a text label.

    ``targets``: objects with ``label, score, centroid [3], box_min [3], box_max [3], count`` and
    optionally ``confidence`` (colour and label show it when present, else the score). With
    ``clear``, a DELETEALL first removes the markers of the previous query.
    """
    out = MarkerArray()
    if clear:
        out.markers.append(Marker(header=header, ns=ns, action=Marker.DELETEALL))
    for i, t in enumerate(targets):
        c = np.asarray(t.centroid, dtype=float)
        lo, hi = np.asarray(t.box_min, dtype=float), np.asarray(t.box_max, dtype=float)
        size = np.maximum(hi - lo, 1e-3)
        extent = float(np.clip(size.max() * 0.15, 0.02, 0.2))
        conf = getattr(t, "confidence", None)
        col = _color(t.score if conf is None else conf)
        sphere = Marker(header=header, ns=ns, id=3 * i, type=Marker.SPHERE, action=Marker.ADD)
        sphere.pose.position = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
        sphere.pose.orientation.w = 1.0
        sphere.scale = Vector3(x=extent, y=extent, z=extent)
        sphere.color = col
        box = Marker(header=header, ns=ns, id=3 * i + 1, type=Marker.CUBE, action=Marker.ADD)
        mid = 0.5 * (lo + hi)
        box.pose.position = Point(x=float(mid[0]), y=float(mid[1]), z=float(mid[2]))
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
        box.color = ColorRGBA(r=col.r, g=col.g, b=col.b, a=0.25)
        label = Marker(header=header, ns=ns, id=3 * i + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.pose.position = Point(x=float(mid[0]), y=float(mid[1]), z=float(hi[2] + 1.5 * extent))
        label.pose.orientation.w = 1.0
        label.scale.z = max(extent, 0.05)
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = (f"{t.label} #{i + 1} ({t.score:.2f})" if conf is None else
                      f"{t.label} #{i + 1} (p={conf:.2f}, score {t.score:.2f})")
        out.markers.extend([sphere, box, label])
    return out


def labelled_markers(objects: Sequence[dict], header: Header, ns: str = "gags_objects") -> MarkerArray:
    """Markers of classified objects (``ObjectIndex.labelled`` dicts: position, size, text): a
    translucent box and a text label each, after a DELETEALL of the previous set."""
    out = MarkerArray(markers=[Marker(header=header, ns=ns, action=Marker.DELETEALL)])
    for i, o in enumerate(objects):
        p, size = np.asarray(o["position"], float), np.maximum(np.asarray(o["size"], float), 1e-3)
        box = Marker(header=header, ns=ns, id=2 * i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
        box.color = ColorRGBA(r=0.3, g=0.6, b=1.0, a=0.25)
        label = Marker(header=header, ns=ns, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2] + 0.6 * size[2] + 0.05))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.08
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = str(o["text"])
        out.markers.extend([box, label])
    return out
