"""Fault injection against a real mapping node process: the matrix of issue 15 plus the bad inputs
the README lists. After each case: the process is alive, the map is unchanged (a hash of the
Gaussian state, read back through SaveMap) unless the input was valid, and the node's answer or its
diagnostics name the reason.

The node runs with language distillation off and a tiny mapping budget so a valid frame changes the
map in well under a second on a CPU; the map it starts from is loaded through LoadMap.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rosutil import call, start_node, stop

pytestmark = pytest.mark.ros

W, H = 64, 48
RESULTS = []  # (case, outcome) for the report


def gaussian_hash(path: str) -> str:
    """sha256 over the Gaussian parameters of a saved map (names, shapes, values)."""
    params = torch.load(path, map_location="cpu", weights_only=True)["params"]
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode() + str(tuple(params[k].shape)).encode() + params[k].numpy().tobytes())
    return h.hexdigest()


class Rig:
    """Publishers, service clients and the diagnostics of the node under test."""

    def __init__(self, node, proc, save_dir: Path):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import Trigger
        from tf2_msgs.msg import TFMessage

        from gags_ros.ros.client import service_qos
        from gags_ros.srv import LoadMap, Query, SaveMap

        self.node, self.proc, self.save_dir = node, proc, save_dir
        self.ex = SingleThreadedExecutor(context=node.context)
        self.ex.add_node(node)
        self.diag = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.pub_img = node.create_publisher(Image, "camera/image_raw", 10)
        self.pub_depth = node.create_publisher(Image, "camera/depth", 10)
        self.pub_info = node.create_publisher(CameraInfo, "camera/camera_info", 10)
        self.pub_tf = node.create_publisher(TFMessage, "/tf", 100)
        self.query = node.create_client(Query, "gags/query", qos_profile=service_qos())
        self.save = node.create_client(SaveMap, "gags/save_map")
        self.load = node.create_client(LoadMap, "gags/load_map")
        self.reset = node.create_client(Trigger, "gags/reset_map")
        self.rng = np.random.default_rng(0)

    def wait_matched(self, timeout: float = 30.0):
        """Until the node subscribes to every topic we publish (messages sent earlier are lost)."""
        pubs = (self.pub_img, self.pub_depth, self.pub_info, self.pub_tf)
        end = time.monotonic() + timeout
        while time.monotonic() < end and not all(p.get_subscription_count() > 0 for p in pubs):
            self.spin(0.05)
        assert all(p.get_subscription_count() > 0 for p in pubs), "the node never subscribed"

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == "gags_ros: mapping":
                self.diag = {kv.key: kv.value for kv in st.values}
                self.diag["_level"], self.diag["_message"] = st.level, st.message

    def spin(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.02)

    # ---- inputs ---------------------------------------------------------------------------------
    def info(self, fx=50.0, w=W, h=H):
        from std_msgs.msg import Header

        from gags_ros.core.types import Intrinsics
        from gags_ros.ros.conversions import camera_info_to_msg

        self.pub_info.publish(camera_info_to_msg(Intrinsics(fx, fx, w / 2, h / 2, w, h), Header(frame_id="cam")))

    def tf(self, t, T=None, q=None, child="cam"):
        from geometry_msgs.msg import TransformStamped
        from std_msgs.msg import Header
        from tf2_msgs.msg import TFMessage

        from gags_ros.ros.conversions import sec_to_stamp, transform_from_matrix

        tr = transform_from_matrix(np.eye(4) if T is None else T)
        if q is not None:
            tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = (float(v) for v in q)
        self.pub_tf.publish(TFMessage(transforms=[TransformStamped(
            header=Header(stamp=sec_to_stamp(t), frame_id="map"), child_frame_id=child, transform=tr)]))

    def image(self, t, encoding="rgb8", w=W, h=H, frame="cam"):
        from std_msgs.msg import Header

        from gags_ros.ros.conversions import image_to_msg, sec_to_stamp

        msg = image_to_msg(self.rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                           Header(stamp=sec_to_stamp(t), frame_id=frame))
        msg.encoding = encoding
        self.pub_img.publish(msg)

    def depth(self, t, value=1.5, w=W, h=H):
        from std_msgs.msg import Header

        from gags_ros.ros.conversions import image_to_msg, sec_to_stamp

        self.pub_depth.publish(image_to_msg(np.full((h, w), value, np.float32), Header(stamp=sec_to_stamp(t),
                                                                                        frame_id="cam")))

    def frame(self, t, T=None, **image):
        """A complete frame: TF, depth, image at stamp ``t``."""
        self.tf(t, T)
        self.depth(t)
        self.image(t, **image)

    # ---- observations ---------------------------------------------------------------------------
    def rejected(self, kind: str) -> int:
        return int(self.diag.get(f"rejections {kind}", 0))

    def wait_rejection(self, kind: str, before: int, timeout: float = 8.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.spin(0.05)
            if self.rejected(kind) > before:
                return self.diag.get(f"last_rejection {kind}", "")
        raise AssertionError(f"no {kind} rejection within {timeout} s; diagnostics {self.diag}")

    def call(self, client, request, timeout: float = 30.0):
        return call(self.node, client, request, timeout, executor=self.ex)

    def map_hash(self) -> str:
        from gags_ros.srv import SaveMap

        res = self.call(self.save, SaveMap.Request(path=str(self.save_dir / "probe.gags")), timeout=60)
        assert res.success, res.message
        return gaussian_hash(res.path)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, ros_env_module):
    import rclpy
    from rclpy.node import Node

    from gags_ros.core import config as C
    from gags_ros.core.gaussians import GaussianMap
    from gags_ros.core.io.mapfile import save_map
    from gags_ros.ros.dds import ensure_profile_env

    save_dir = tmp_path_factory.mktemp("maps")
    (save_dir / ".left.gags.999999.abcd1234.tmp").write_bytes(b"x" * 1000)    # a save killed earlier
    g = GaussianMap.from_points(torch.rand(500, 3) + torch.tensor([0.0, 0.0, 1.0]), torch.rand(500, 3), 0.02)
    save_map(save_dir / "start.gags", g, None, C.GagsConfig())
    params = {"device": "cpu", "cpu_threads": 1, "save_dir": str(save_dir), "language.enabled": False,
              "mapping.renderer": "torch", "mapping.steps_per_keyframe": 5, "mapping.final_refine_steps": 0,
              "mapping.init_points_per_keyframe": 500, "ros.depth_topic": "camera/depth",
              "ros.tf_timeout": 0.3, "ros.status_period": 0.1, "ros.message_expiry": 3.0}
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}")]
    log = save_dir.parent / "node.log"
    proc = start_node("gags_ros.ros.mapping_node", args, ros_env_module, log=log)
    ensure_profile_env()
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = Node("fault_injector", context=ctx)
    r = Rig(node, proc, save_dir)
    r.log = log
    try:
        from gags_ros.srv import LoadMap

        res = r.call(r.load, LoadMap.Request(path=str(save_dir / "start.gags")), timeout=120)
        assert res.success and res.gaussians == 500, res.message
        r.wait_matched()
        yield r
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stop(proc)
        print("\nfault matrix:\n" + "\n".join(f"  {c:58s} {o}" for c, o in RESULTS))


@pytest.fixture(scope="module")
def ros_env_module():
    import os

    from gags_ros.ros.dds import ensure_profile_env

    env = ensure_profile_env(dict(os.environ))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return env


def check(rig, case: str, h0: str, reason: str, expected: str, changed: bool = False) -> str:
    """The three assertions after every case; returns the new hash."""
    assert rig.proc.poll() is None, f"{case}: the node died; see {rig.log}"
    h = rig.map_hash()
    assert (h != h0) == changed, f"{case}: map {'unchanged' if not changed else 'changed'} unexpectedly"
    assert expected in reason, f"{case}: {expected!r} not in {reason!r}"
    RESULTS.append((case, f"alive, map {'changed (valid input)' if changed else 'unchanged'}: {reason[:90]}"))
    return h


def test_fault_matrix(rig):
    from std_srvs.srv import Trigger

    from gags_ros.srv import LoadMap, Query

    r = rig
    r.spin(0.5)
    h = r.map_hash()
    assert not list(r.save_dir.glob(".left.gags.*.tmp")), "the stale temporary file is removed at start-up"
    assert (r.save_dir / "probe.gags").stat().st_mode & 0o777 == 0o666 & ~_umask()
    RESULTS.append(("stale .<name>.<pid>.*.tmp in save_dir at start", "removed at start-up"))

    # -- images before any CameraInfo, then the README's bad inputs ------------------------------
    n = r.rejected("frame")
    r.frame(1.0)
    h = check(r, "image before any CameraInfo", h, r.wait_rejection("frame", n), "no CameraInfo received yet")
    r.info()
    r.spin(0.3)
    n = r.rejected("image")
    r.image(2.0, encoding="yuv422")
    h = check(r, "unsupported encoding yuv422", h, r.wait_rejection("image", n), "unsupported colour encoding")
    n = r.rejected("image")
    r.frame(3.0, w=32, h=24)
    h = check(r, "image 32x24, CameraInfo 64x48", h, r.wait_rejection("image", n), "image is 32x24 but CameraInfo")
    n = r.rejected("frame")
    r.frame(4.0, frame="nowhere")
    h = check(r, "missing TF (unknown frame)", h, r.wait_rejection("frame", n), "does not exist")
    n = r.rejected("frame")
    r.tf(40.0)                                           # the TF history now starts at 30 s
    r.depth(12.5)
    r.image(12.5)
    h = check(r, "stale TF (image older than the TF history)", h, r.wait_rejection("frame", n),
              "older than the oldest transform kept")
    n = r.rejected("TF")
    r.tf(5.0, np.full((4, 4), np.nan))
    h = check(r, "TF with NaN", h, r.wait_rejection("TF", n), "non-finite translation")
    n = r.rejected("depth")
    r.depth(6.0, value=float("nan"))
    h = check(r, "depth all NaN", h, r.wait_rejection("depth", n), "no value in [limits.min_depth")

    # -- the plausible garbage ------------------------------------------------------------
    n = r.rejected("CameraInfo")
    r.info(fx=1e-3)
    h = check(r, "CameraInfo fx = 1e-3 px", h, r.wait_rejection("CameraInfo", n), "field of view 180 deg")
    n = r.rejected("depth")
    r.depth(7.0, value=1e6)
    h = check(r, "depth 1e6 m", h, r.wait_rejection("depth", n), "limits.max_depth")
    for q, name in (((0, 0, 0, 2.0), "TF quaternion norm 2"), ((0, 0, 0, 1e-6), "TF quaternion norm 1e-6")):
        n = r.rejected("TF")
        r.tf(8.0, q=q)
        h = check(r, name, h, r.wait_rejection("TF", n), "quaternion is not unit")

    # -- a valid frame changes the map (the hash sees it), then a pose jump is refused -------------
    n_frames = r.rejected("frame")
    r.frame(50.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (r.diag.get("keyframes") == "1" and r.diag["_message"].startswith("idle")):
        r.spin(0.1)                                      # mapped, and its owed steps done
    assert r.rejected("frame") == n_frames
    h = check(r, "valid frame (control)", h, f"keyframes {r.diag.get('keyframes')}", "keyframes 1", changed=True)
    n = r.rejected("frame")
    T = np.eye(4)
    T[0, 3] = 200e3
    r.frame(51.0, T=T)
    h = check(r, "pose jump of 200 km", h, r.wait_rejection("frame", n), "camera moved 2e+05 m")

    # -- services: crash sequence (WARN then INFO / ERROR, both orders), queries, bad map files ------
    n = r.rejected("image")
    r.image(52.0, encoding="yuv422")
    r.wait_rejection("image", n)
    res = r.call(r.load, LoadMap.Request(path=str(r.save_dir / "missing.gags")))
    assert not res.success
    h = check(r, "rejected frame, then save (INFO) and failed load (ERROR)", h, res.message, "load failed")
    n = r.rejected("image")
    r.image(53.0, encoding="yuv422")
    h = check(r, "failed load (ERROR), then rejected frame (WARN)", h, r.wait_rejection("image", n),
              "unsupported colour encoding")
    for text, expected in (("", "empty query text"), ("x" * 300, "at most 256"),
                           ("the red mug", "no language features yet")):
        res = r.call(r.query, Query.Request(text=text))
        assert not res.success
        h = check(r, f"query {text[:12]!r}", h, res.message, expected)
    futs = [r.query.call_async(Query.Request(text=f"mug {i}")) for i in range(30)]
    end = time.monotonic() + 20
    while not all(f.done() for f in futs) and time.monotonic() < end:
        r.spin(0.05)
    msgs = [f.result().message for f in futs if f.done()]
    h = check(r, "30 concurrent queries", h, f"{len(msgs)} answered", "30 answered")
    assert all(m.startswith(("no language features", "busy:")) for m in msgs), set(msgs)

    for name, corrupt, expected in (
            ("map file: all means NaN", lambda d: d["params"]["means"].fill_(float("nan")), "not finite"),
            ("map file: 0 Gaussians", lambda d: d["params"].update({k: v[:0] for k, v in d["params"].items()}),
             "no Gaussian"),
            ("map file: scales rows != means rows", lambda d: d["params"].update(scales=torch.zeros(3, 3)),
             "rows but 'means' has")):
        path = r.save_dir / "bad.gags"
        data = torch.load(r.save_dir / "start.gags", weights_only=True)
        corrupt(data)
        torch.save(data, path)
        res = r.call(r.load, LoadMap.Request(path=str(path)))
        assert not res.success
        h = check(r, name, h, res.message, expected)
    path = r.save_dir / "junk.gags"
    path.write_bytes(b"not a map")
    res = r.call(r.load, LoadMap.Request(path=str(path)))
    h = check(r, "map file: not a map", h, res.message, "not a gags_ros map")

    # -- status: the current state; old errors expire ------------------------------------------------
    from diagnostic_msgs.msg import DiagnosticStatus

    def expired():
        return r.diag.get("_level") == DiagnosticStatus.OK and "no errors or rejections" in r.diag["last_message"]

    end = time.monotonic() + 15
    while time.monotonic() < end and not expired():
        r.spin(0.1)
    assert expired(), r.diag                              # once ros.message_expiry (3 s) has passed
    assert not any(k.startswith("last_rejection") for k in r.diag) and int(r.diag["frames_rejected"]) >= 10
    RESULTS.append(("status after ros.message_expiry", "OK; last reasons gone, counts kept"))

    res = r.call(r.reset, Trigger.Request())
    assert res.success and r.proc.poll() is None
    RESULTS.append(("reset (valid)", "alive, map reset"))


def _umask() -> int:
    from gags_ros.core.files import _umask as umask

    return umask()
