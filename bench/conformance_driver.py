"""A fake RGB-D camera driver written from the ROS standards, not from our replay node, and the
conformance cases of issue 21 run against a real mapping node.

Standards followed (each written here from the text, with no gags_ros code on the driver side):

- REP 105: frames ``map -> odom -> base_link``; the base moves (``odom -> base_link`` on /tf, or
  as nav_msgs/Odometry with ``child_frame_id: base_link``); ``map -> odom`` on /tf.
- REP 103 / the RealSense, ZED and Orbbec URDFs: ``base_link -> camera_link`` (x forward, z up) and
  ``camera_link -> camera_color_optical_frame`` with the optical rotation (z forward, x right,
  y down), quaternion (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5), both on /tf_static.
- sensor_msgs/CameraInfo (and image_geometry): pixel centres at integer (u, v), ``K`` of the raw
  image with ``D`` (plumb_bob), ``P`` of the rectified image, ``binning_x/y`` and ``roi`` relative
  to the full sensor; REP 118: depth as z along the optical axis, 16UC1 in millimetres (0 = no
  measurement) or 32FC1 in metres, registered ("aligned") depth in the colour optical frame.
- Sensor topics best effort, keep last 5 (rclpy's ``qos_profile_sensor_data``).

The scene has known true surfaces (a floor, a wall and a box) ray-cast analytically, so the map
cloud's distance to them measures the node end to end: images -> conventions -> seeds. The node
runs geometry-only (language off, no optimisation steps: the map cloud holds the depth seeds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

# ---- scene (metres, in map = odom = the world) -----------------------------------------------------
WALL_X = 3.2
BOX_LO = np.array([1.8, -0.55, 0.0])
BOX_HI = np.array([2.3, 0.05, 0.6])


def raycast(origin: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(t [N], surface id [N])`` of rays ``origin + t dirs`` (``dirs`` [N, 3]); ``inf`` = no hit.
    Surfaces: 1 floor (z = 0), 2 wall (x = WALL_X), 3 box."""
    n = dirs.shape[0]
    t = np.full(n, np.inf)
    sid = np.zeros(n, np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
        tw = np.where(dirs[:, 0] > 0, (WALL_X - origin[0]) / dirs[:, 0], np.inf)
        t1 = (BOX_LO - origin) / dirs
        t2 = (BOX_HI - origin) / dirs
    tnear = np.nanmax(np.minimum(t1, t2), axis=1)
    tfar = np.nanmin(np.maximum(t1, t2), axis=1)
    tb = np.where((tnear <= tfar) & (tnear > 0), tnear, np.inf)
    for s, ts in ((1, tf), (2, tw), (3, tb)):
        closer = (ts > 0) & (ts < t)
        t = np.where(closer, ts, t)
        sid = np.where(closer, s, sid)
    return t, sid


def distance_to_surfaces(p: np.ndarray) -> np.ndarray:
    """Distance [m] of points ``p`` [N, 3] to the nearest true surface (floor, wall, box faces)."""
    c, h = 0.5 * (BOX_LO + BOX_HI), 0.5 * (BOX_HI - BOX_LO)
    q = np.abs(p - c) - h
    box = np.abs(np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0))
    return np.minimum(np.minimum(np.abs(p[:, 2]), np.abs(p[:, 0] - WALL_X)), box)


# ---- rigid transforms, written out (Hamilton quaternions, x y z w) -----------------------------------
def quat_to_R(q) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def yaw_pitch_quat(yaw: float = 0.0, pitch: float = 0.0) -> Tuple[float, float, float, float]:
    """q = q_z(yaw) * q_y(pitch) (x, y, z, w)."""
    cy, sy, cp, sp = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2)
    return (-sy * sp, cy * sp, sy * cp, cy * cp)


def T(t, q) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = quat_to_R(q)
    M[:3, 3] = t
    return M


OPTICAL_Q = (-0.5, 0.5, -0.5, 0.5)  # camera_link -> *_optical_frame (REP 103 / realsense-ros)
MAP_ODOM = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
BASE_CAMERA = ((0.15, 0.02, 1.0), yaw_pitch_quat(0.05, math.radians(18)))  # looks down 18 deg
CAMERA_OPTICAL = ((0.0, 0.015, 0.0), OPTICAL_Q)       # colour: 15 mm left of the depth sensor
DEPTH_OPTICAL = ((0.0, 0.0, 0.0), OPTICAL_Q)          # camera_link -> camera_depth_optical_frame


def base_pose(i: int, n: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """odom -> base_link of frame ``i`` of ``n``: driving forward 0.5 m while turning 10 deg."""
    a = i / max(n - 1, 1)
    return (0.5 * a, 0.1 * a, 0.0), yaw_pitch_quat(math.radians(-5 + 10 * a))


# ---- the camera ---------------------------------------------------------------------------------------
@dataclass
class Camera:
    """A camera as its CameraInfo states it (ROS convention: integer pixel centres)."""

    width: int = 640
    height: int = 480
    K: Tuple[float, float, float, float] = (615.0, 615.0, 321.7, 238.4)  # fx fy cx cy of the image
    D: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    P: Optional[Tuple[float, float, float, float]] = None  # rectified camera (None: = K)
    binning: int = 0
    roi: Tuple[int, int, int, int] = (0, 0, 0, 0)

    def info_fields(self) -> dict:
        """CameraInfo fields of the full sensor: K and P scaled back from the image by binning / ROI."""
        b = max(self.binning, 1)
        x0, y0, rw, rh = self.roi
        fx, fy, cx, cy = self.K
        px, py, pcx, pcy = self.P or self.K
        # The image's intrinsics come from the full sensor's ones as image_geometry computes them
        # (c' = (c - offset) / binning in the convention used here: pixel areas, so half a pixel
        # of each convention is taken into account).
        full = lambda f, c, off: (f * b, (c + 0.5) * b - 0.5 + off)  # noqa: E731
        FX, CX = full(fx, cx, x0)
        FY, CY = full(fy, cy, y0)
        PFX, PCX = full(px, pcx, x0)
        PFY, PCY = full(py, pcy, y0)
        W = self.width * b if not rw else x0 + rw + 16
        H = self.height * b if not rh else y0 + rh + 16
        return {"width": W, "height": H, "distortion_model": "plumb_bob", "d": [float(v) for v in self.D],
                "k": [float(v) for v in (FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)], "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                "p": [float(v) for v in (PFX, 0.0, PCX, 0.0, 0.0, PFY, PCY, 0.0, 0.0, 0.0, 1.0, 0.0)],
                "binning_x": self.binning, "binning_y": self.binning,
                "roi": (x0, y0, rw, rh)}

    def rays(self) -> np.ndarray:
        """``[H, W, 3]`` ray directions (z = 1) in the optical frame through every pixel centre
        (u, v) = (column, row), undoing plumb_bob D by fixed-point iteration (OpenCV's method)."""
        fx, fy, cx, cy = self.K
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        xd, yd = (u - cx) / fx, (v - cy) / fy
        k1, k2, p1, p2, k3 = (list(self.D) + [0.0] * 5)[:5]
        x, y = xd.copy(), yd.copy()
        for _ in range(30):
            r2 = x * x + y * y
            rad = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
            x = (xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / rad
            y = (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / rad
        return np.stack([x, y, np.ones_like(x)], axis=-1)


def render(cam: Camera, T_world_optical: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(rgb [H, W, 3] uint8, z-depth [H, W] float64 m, 0 = no hit)`` of the scene."""
    d = cam.rays()
    dw = d.reshape(-1, 3) @ T_world_optical[:3, :3].T
    t, sid = raycast(T_world_optical[:3, 3], dw)
    z = np.where(np.isfinite(t), t, 0.0).reshape(cam.height, cam.width)  # d has z = 1: t is the z-depth
    p = T_world_optical[:3, 3] + dw * np.where(np.isfinite(t), t, 0.0)[:, None]
    checker = ((np.floor(p[:, 0] * 5) + np.floor(p[:, 1] * 5) + np.floor(p[:, 2] * 5)) % 2).reshape(z.shape)
    base = np.array([[40, 40, 40], [180, 160, 120], [120, 170, 200], [200, 60, 50]], np.float64)
    rgb = base[sid.reshape(z.shape)] * (0.7 + 0.3 * checker[..., None])
    return rgb.astype(np.uint8), z


# ---- cases ----------------------------------------------------------------------------------------
@dataclass
class Case:
    """One driver set-up. ``expect``: "map" (a map within tolerance) or the text every refusal names."""

    name: str
    group: str                        # which node configuration ("tf" or "odometry")
    expect: str = "map"
    frames: int = 3
    color: str = "rgb8"
    depth: str = "16UC1"
    depth_frame: str = "camera_color_optical_frame"
    camera: Camera = field(default_factory=Camera)
    image_camera: Optional[Camera] = None  # the camera the images really come from (default: camera)
    tf: str = "dynamic"                # dynamic, static_only, late
    odom_child: str = "base_link"
    time_jump: float = 0.0              # seconds the stamps go back after the first half
    p90_mm: float = 3.0                 # tolerance (issue 21: 3 mm for 16UC1 at 1-3 m)
    healthy_tail: float = 0.0           # then stream good frames this long [s]: diagnostics return to OK
    depth_camera: Optional[Camera] = None  # depth from its own optical frame (camera_depth_optical_frame)
    padded_bigendian: bool = False      # images with padded rows (step > width * bytes) and big-endian depth
    statics_before_node: bool = False   # /tf_static only as published before the node started (late joiner)


W, H = 640, 480
RAW = Camera(D=(-0.12, 0.03, 4e-4, -3e-4, 0.0), P=(615.0, 615.0, 321.7, 238.4))
# image_proc's rectified stream: CameraInfo carries the raw K and D; the image is the pinhole P.
RECT_INFO = Camera(K=(640.0, 638.0, 318.2, 241.9), D=(-0.12, 0.03, 4e-4, -3e-4, 0.0), P=(560.0, 560.0, 322.5, 236.0))
RECT_IMAGE = Camera(K=(560.0, 560.0, 322.5, 236.0))
BINNED = Camera(binning=2)  # CameraInfo 1280x960, images 640x480
ROI = Camera(width=480, height=360, K=(615.0, 615.0, 241.7, 178.4), roi=(80, 60, 480, 360))
DEPTH_CAMERA = Camera(K=(385.0, 385.0, 320.2, 241.1))  # RealSense D435-like depth at 640x480

CASES: List[Case] = [
    Case("base: rgb8 + 16UC1 mm, TF chain", "tf"),
    # float32 depth is exact to 0.2 um at 3 m: seeds re-cast through the ROS pixel centres must lie
    # on the true surfaces (half a pixel off would put them ~1 mm off at 2 m)
    Case("bgr8 + 32FC1 m", "tf", color="bgr8", depth="32FC1", p90_mm=0.1),
    Case("TF 1 s late (first frames refused)", "tf", tf="late", frames=4, healthy_tail=4.0),
    Case("tree on /tf_static only", "tf", tf="static_only", frames=2),
    Case("raw image, plumb_bob D (undistorted)", "tf", camera=RAW),
    Case("binning 2 (CameraInfo 1280x960)", "tf", camera=BINNED),
    Case("ROI 480x360 at (80, 60)", "tf", camera=ROI),
    Case("depth in camera_depth_optical_frame", "tf", depth_frame="camera_depth_optical_frame", depth_camera=DEPTH_CAMERA,
         expect="is in frame 'camera_depth_optical_frame' but the colour image in 'camera_color_optical_frame'"),
    Case("padded rows, big-endian 16UC1", "tf", padded_bigendian=True),
    Case("clock jumps back 60 s (bag loop)", "tf", frames=4, time_jump=60.0),
    # first of its node: later, base_link's edge from the Odometry exists (stale, not unconnected)
    Case("Odometry of an unconnected frame", "odometry", odom_child="base_footprint",
         expect="'map' and 'camera_color_optical_frame' are not connected"),
    Case("Odometry of base_link + TF", "odometry"),
    Case("rectified stream: P (K, D of raw)", "odometry", camera=RECT_INFO, image_camera=RECT_IMAGE),
    Case("unregistered depth + its CameraInfo (registered here); /tf_static from before the node started",
         "unaligned", depth_camera=DEPTH_CAMERA, depth_frame="camera_depth_optical_frame", statics_before_node=True),
]

GROUPS: Dict[str, Dict[str, str]] = {
    # launch arguments (README: "Camera drivers", RealSense-style names)
    "tf": {"image_topic": "/camera/color/image_raw", "camera_info_topic": "/camera/color/camera_info",
           "depth_topic": "/camera/aligned_depth_to_color/image_raw"},
    "odometry": {"image_topic": "/camera/color/image_rect", "camera_info_topic": "/camera/color/camera_info",
                 "depth_topic": "/camera/aligned_depth_to_color/image_raw", "pose_source": "odometry",
                 "pose_topic": "/odom"},
    "unaligned": {"image_topic": "/camera/color/image_raw", "camera_info_topic": "/camera/color/camera_info",
                  "depth_topic": "/camera/depth/image_rect_raw", "depth_camera_info_topic": "/camera/depth/camera_info"},
}

GEOMETRY_ONLY = {"device": "cpu", "cpu_threads": 1, "language.enabled": False, "mapping.renderer": "torch",
                 "mapping.steps_per_keyframe": 0, "mapping.final_refine_steps": 0,
                 "mapping.init_points_per_keyframe": 3000, "mapping.max_frame_rate": 100.0,
                 "ros.tf_timeout": 0.5, "ros.status_period": 0.2, "ros.cloud_period": 0.3,
                 "ros.message_expiry": 3.0}


def params_file(path) -> str:
    """The geometry-only parameter file (shipped defaults plus GEOMETRY_ONLY and random teacher
    weights allowed: the teacher is never used with language off)."""
    from gags_ros.core import config as C

    cfg = C.GagsConfig()
    for k, v in {**GEOMETRY_ONLY, "teacher.allow_random_weights": True, "teacher.clip_pretrained": ""}.items():
        C.set_value(cfg, k, v)
    path.write_text(C.ros_params_yaml(cfg))
    return str(path)


# ---- the ROS side -----------------------------------------------------------------------------------
class Driver:
    """Publishers of the fake driver and the observer of the node's outputs (in the test process)."""

    def __init__(self, group: str, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_srvs.srv import Trigger
        from tf2_msgs.msg import TFMessage

        from gags_ros.msg import MappingStatus

        self.group = group
        topics = GROUPS[group]
        self.node = Node(f"fake_driver_{group}", context=context)
        self.ex = SingleThreadedExecutor(context=context)
        self.ex.add_node(self.node)
        n = self.node
        self.pub_img = n.create_publisher(Image, topics["image_topic"], qos_profile_sensor_data)
        self.pub_info = n.create_publisher(CameraInfo, topics["camera_info_topic"], qos_profile_sensor_data)
        self.pub_depth = n.create_publisher(Image, topics["depth_topic"], qos_profile_sensor_data)
        self.pub_depth_info = n.create_publisher(CameraInfo, topics.get("depth_camera_info_topic", "/camera/depth/camera_info"),
                                                 qos_profile_sensor_data)
        self.pub_tf = n.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_static = n.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_odom = n.create_publisher(Odometry, "/odom", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.reset = n.create_client(Trigger, "gags/reset_map")
        self.status: Optional[MappingStatus] = None
        self.messages: List[str] = []
        self.diag: Dict[str, str] = {}
        self.reasons: List[str] = []  # every distinct "last_rejection frame" seen
        self.cloud = None
        n.create_subscription(MappingStatus, "gags/status", self._on_status, 10)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        n.create_subscription(PointCloud2, "gags/map", self._on_cloud, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.clock = 1000.0  # stamps of the next case [s]

    def _on_status(self, m):
        self.status = m
        if not self.messages or self.messages[-1] != m.message:
            self.messages.append(m.message)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == "gags_ros: mapping":
                self.diag = {kv.key: kv.value for kv in st.values}
                level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
                self.diag["_level"], self.diag["_message"] = level, st.message  # 0 OK, 1 WARN, 2 ERROR
                r = self.diag.get("last_rejection frame", "").rsplit(" (", 1)[0]
                if r and (not self.reasons or self.reasons[-1] != r):
                    self.reasons.append(r)

    def _on_cloud(self, m):
        self.cloud = m

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.01)

    def wait(self, cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.spin(0.05)
        return bool(cond())

    def ready(self, timeout: float = 120.0) -> None:
        pubs = (self.pub_img, self.pub_info, self.pub_depth)
        ok = self.wait(lambda: all(p.get_subscription_count() > 0 for p in pubs) and self.status is not None
                       and self.status.state != "starting", timeout)
        assert ok, "the mapping node did not subscribe or report a state"

    # ---- publishing -----------------------------------------------------------------------------
    def _tfs(self, pairs, stamp):
        from geometry_msgs.msg import Quaternion, TransformStamped, Vector3
        from std_msgs.msg import Header
        from tf2_msgs.msg import TFMessage

        out = []
        for parent, child, (t, q) in pairs:
            ts = TransformStamped(header=Header(stamp=_stamp(stamp), frame_id=parent), child_frame_id=child)
            ts.transform.translation = Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2]))
            ts.transform.rotation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
            out.append(ts)
        return TFMessage(transforms=out)

    def publish_statics(self, case: Case, base=None) -> None:
        pairs = [("base_link", "camera_link", BASE_CAMERA), ("camera_link", "camera_color_optical_frame", CAMERA_OPTICAL),
                 ("camera_link", "camera_depth_optical_frame", DEPTH_OPTICAL)]
        if case.tf == "static_only":
            pairs = [("map", "odom", MAP_ODOM), ("odom", "base_link", base)] + pairs
        self.pub_static.publish(self._tfs(pairs, 0.0))

    def publish_frame(self, case: Case, stamp: float, base, tf_now: bool = True) -> None:
        from nav_msgs.msg import Odometry
        from std_msgs.msg import Header

        if case.group == "odometry":
            self.pub_tf.publish(self._tfs([("map", "odom", MAP_ODOM)], stamp))
            odom = Odometry(header=Header(stamp=_stamp(stamp), frame_id="odom"), child_frame_id=case.odom_child)
            t, q = base
            p = odom.pose.pose
            p.position.x, p.position.y, p.position.z = (float(v) for v in t)
            p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
            self.pub_odom.publish(odom)
        elif case.tf != "static_only" and tf_now:
            self.pub_tf.publish(self._tfs([("map", "odom", MAP_ODOM), ("odom", "base_link", base)], stamp))
        img_cam = case.image_camera or case.camera
        T_world_optical = (T(*MAP_ODOM) @ T(*base) @ T(*BASE_CAMERA) @ T(*CAMERA_OPTICAL))
        rgb, z = render(img_cam, T_world_optical)
        header = Header(stamp=_stamp(stamp), frame_id="camera_color_optical_frame")
        self.pub_info.publish(_camera_info(case.camera, header))
        dheader = Header(stamp=header.stamp, frame_id=case.depth_frame)
        if case.depth_camera is not None:  # the depth sensor's own image, not aligned to colour
            _, z = render(case.depth_camera, T(*MAP_ODOM) @ T(*base) @ T(*BASE_CAMERA) @ T(*DEPTH_OPTICAL))
            self.pub_depth_info.publish(_camera_info(case.depth_camera, dheader))
        pad = 64 if case.padded_bigendian else 0
        if case.depth == "16UC1":
            mm = np.round(z * 1000.0).astype(">u2" if case.padded_bigendian else "<u2")
            self.pub_depth.publish(_image(mm, dheader, "16UC1", pad))
        else:
            self.pub_depth.publish(_image(z.astype(np.float32), dheader, "32FC1", pad))
        self.pub_img.publish(_image(rgb[..., ::-1] if case.color == "bgr8" else rgb, header, case.color, pad))


def _stamp(t: float):
    from builtin_interfaces.msg import Time

    sec = int(math.floor(t))
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def _image(a: np.ndarray, header, encoding: str, pad: int = 0):
    """sensor_msgs/Image: rows of ``step`` bytes (``pad`` bytes of padding each), byte order of ``a``."""
    import array

    from sensor_msgs.msg import Image

    rows = np.ascontiguousarray(a).reshape(a.shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((a.shape[0], pad), np.uint8)], axis=1) if pad else rows
    msg = Image(header=header, height=a.shape[0], width=a.shape[1], encoding=encoding,
                is_bigendian=int(a.dtype.byteorder == ">"), step=int(rows.shape[1]))
    msg.data = array.array("B", np.ascontiguousarray(rows).tobytes())
    return msg


def _camera_info(cam: Camera, header):
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    f = cam.info_fields()
    x0, y0, rw, rh = f.pop("roi")
    return CameraInfo(header=header, roi=RegionOfInterest(x_offset=x0, y_offset=y0, width=rw, height=rh), **f)


def run_case(drv: Driver, case: Case, period: float = 0.15) -> dict:
    """Stream ``case`` into the node (after a map reset) and measure. Returns ``{case, frames,
    received, refused, reason, points, median_mm, p90_mm, within_1cm, messages}``."""
    from std_srvs.srv import Trigger

    from gags_ros.ros.client import call_served

    res = call_served(drv.node, drv.reset, Trigger.Request(), timeout=60, executor=drv.ex)
    assert res.success, res.message
    drv.wait(lambda: drv.status is not None and drv.status.gaussians == 0, 10)
    drv.cloud = None
    s0 = drv.status
    rejected0 = int(drv.diag.get("rejections frame", 0))
    n_msgs, n_reasons = len(drv.messages), len(drv.reasons)
    drv.clock += 100.0
    t0 = drv.clock
    n = case.frames
    if not case.statics_before_node:
        drv.publish_statics(case, base_pose(0, n))
    drv.spin(0.3)
    stamps = [t0 + i * 0.1 for i in range(n)]
    if case.time_jump:
        stamps = stamps[: n // 2] + [s - case.time_jump for s in stamps[n // 2:]]
    for i, st in enumerate(stamps):
        late = case.tf == "late"
        drv.publish_frame(case, st, base_pose(i, n), tf_now=not late)
        drv.spin(period)
    if case.tf == "late":  # TF arrives 1 s after the images (the first frames expire waiting)
        drv.spin(1.0)
        for i, st in enumerate(stamps):
            drv.publish_frame(case, st + 0.5, base_pose(i, n), tf_now=True)
            drv.spin(period)
    received = lambda: drv.status.frames_received - s0.frames_received  # noqa: E731
    refused = lambda: int(drv.diag.get("rejections frame", 0)) - rejected0  # noqa: E731

    last = {"g": -1, "since": time.monotonic()}

    def settled():  # every frame taken or refused, and the map unchanged for 1 s
        s = drv.status
        if s.gaussians != last["g"]:
            last["g"], last["since"] = s.gaussians, time.monotonic()
        return (s.queue_length == 0 and int(drv.diag.get("frames_waiting_for_pose", 1)) == 0
                and s.frames_received - s0.frames_received >= 1 and s.state in ("idle", "waiting")
                and time.monotonic() - last["since"] >= 1.0)

    drv.wait(settled, 60)
    if case.healthy_tail:  # the camera keeps streaming, standing still: the refusals age out
        end, i = time.monotonic() + case.healthy_tail, 0
        last_stamp = stamps[-1] + 0.5
        while time.monotonic() < end:
            i += 1
            drv.publish_frame(case, last_stamp + 0.2 * i, base_pose(n - 1, n))
            drv.spin(0.2)
        drv.wait(settled, 30)
    out = {"case": case.name, "frames": len(stamps) * (2 if case.tf == "late" else 1), "received": received(),
           "refused": refused(), "reasons": drv.reasons[n_reasons:], "points": 0,
           "median_mm": math.nan, "p90_mm": math.nan, "within_1cm": math.nan,
           "messages": drv.messages[n_msgs:], "keyframes": drv.status.keyframes,
           "level": drv.diag.get("_level"), "diagnostics": drv.diag.get("_message", ""),
           "recent_rejections": {k: v for k, v in drv.diag.items() if k.startswith("recent_rejections")}}
    g = drv.status.gaussians
    if g > 0:
        assert drv.wait(lambda: drv.cloud is not None and drv.cloud.width == drv.status.gaussians, 20), \
            "no map cloud with every Gaussian"
        from gags_ros.ros.conversions import pointcloud2_from_msg

        pts = pointcloud2_from_msg(drv.cloud)
        xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float64)
        d = distance_to_surfaces(xyz) * 1e3
        out.update(points=int(len(d)), median_mm=float(np.median(d)), p90_mm=float(np.percentile(d, 90)),
                   within_1cm=float(np.mean(d <= 10.0)))
    return out


def verdict(case: Case, r: dict) -> Tuple[bool, str]:
    """(conforms, why): a map within tolerance, or every frame refused naming the problem."""
    if case.expect == "map":
        ok = r["points"] > 0 and r["median_mm"] <= min(1.5, case.p90_mm) and r["p90_mm"] <= case.p90_mm
        return ok, f"map: {r['points']} points, median {r['median_mm']:.3f} mm, p90 {r['p90_mm']:.3f} mm"
    ok = (r["points"] == 0 and r["refused"] >= r["received"] >= 1 and bool(r["reasons"])
          and all(case.expect in x for x in r["reasons"]))
    return ok, f"refused {r['refused']} of {r['received']} frames: {' | '.join(r['reasons'])[:200]}"
