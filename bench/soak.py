"""Soak probe: stream a synthetic camera into a mapping node and watch its memory and drops.

    python -m bench.soak [--seconds 120] [--rate 30] [--width 640] [--height 480]

Starts a mapping node (the launch spec's node, with the given parameter overrides), publishes
rgb8 images of a textured static scene, CameraInfo and TF at ``rate`` Hz from this process, and
samples the node's MappingStatus, diagnostics and resident memory. Reports:

- images published vs images that reached the node's callbacks (callback-side drops: messages lost
  between publisher and subscription; must be 0);
- frames dropped by the worker's bounded buffer (expected when mapping is slower than the camera);
- resident memory over time (must stay bounded) and the callbacks' mean cost per image.

The test suite runs it (tests/test_ros_soak.py); bench/ros.py records its numbers. A measurement
harness, not part of the node: it lives with the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

# Light mapping so the worker's pace is not what is measured; language off (no teacher needed).
SOAK_PARAMS = {
    "device": "cpu",
    "cpu_threads": 1,
    "language.enabled": False,
    "mapping.max_image_width": 160,
    "mapping.steps_per_keyframe": 5,
    "mapping.final_refine_steps": 50,
    "mapping.init_points_per_keyframe": 2000,
    "ros.status_period": 1.0,
    "ros.cloud_period": 0.0,
    # One second of slack in the subscription queue: a 2-core machine running the worker, this
    # publisher and the executor can stall a callback thread for longer than 5 frames.
    "ros.qos_depth": 30,
    "ros.qos_reliable": True,
}


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def soak(seconds: float = 120.0, rate: float = 30.0, width: int = 640, height: int = 480,
         params: Optional[Dict[str, object]] = None, log=print) -> dict:
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from gags_ros.ros.dds import ensure_profile_env

    ensure_profile_env()  # this process publishes / receives camera-sized messages too
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from gags_ros.msg import MappingStatus
    from gags_ros.ros.launch_spec import mapping_nodes
    from gags_ros.ros.launcher import start

    (proc,) = start(mapping_nodes(overrides=dict(SOAK_PARAMS, **(params or {}))))
    rclpy.init()
    node = Node("gags_soak")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    statuses: List[MappingStatus] = []
    diags: List[DiagnosticArray] = []
    node.create_subscription(MappingStatus, "gags/status", statuses.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = (node.create_publisher(Image, "camera/image_raw", qos),
            node.create_publisher(CameraInfo, "camera/camera_info", qos),
            node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)))
    try:
        _wait_for_node(ex, proc, statuses, pubs)
        published, samples = _stream(node, ex, proc, pubs, seconds, rate, width, height)
        # Let the last messages arrive and one more status go out.
        t_end = time.monotonic()
        while time.monotonic() - t_end < 3.0:
            ex.spin_once(timeout_sec=0.1)
        res = _result(statuses[-1], diags, published, samples, seconds, rate, width, height)
        log(json.dumps({k: v for k, v in res.items() if k != "rss_mb"}))
        return res
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(15)
            except Exception:  # a stuck node must not hide the result
                proc.kill()


def _wait_for_node(ex, proc, statuses: list, pubs, timeout: float = 120.0) -> None:
    """Until the node publishes its status (it imports torch) and subscribes to every publisher of
    ``pubs``, so no image precedes its CameraInfo; RuntimeError when it exits or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not statuses and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.1)
        if proc.poll() is not None:
            raise RuntimeError("the mapping node exited")
    if not statuses:
        raise RuntimeError(f"the mapping node published no status within {timeout:g} s")
    while min(p.get_subscription_count() for p in pubs) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the mapping node did not subscribe to the camera topics")
        ex.spin_once(timeout_sec=0.05)


def _stream(node, ex, proc, pubs, seconds: float, rate: float, width: int, height: int):
    """Publish TF, CameraInfo and a textured rgb8 image at ``rate`` Hz for ``seconds``, sampling the
    node's resident memory every 5 s; returns ``(images published, [(t s, MiB)])``."""
    from std_msgs.msg import Header
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from gags_ros.core.types import Intrinsics
    from gags_ros.ros.conversions import camera_info_to_msg, image_to_msg, transform_from_matrix

    pub_img, pub_info, pub_tf = pubs
    rng = np.random.default_rng(0)
    # A textured, smoothly varying image: gives the mapper something to fit.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(np.sin(xx / 17.0) + 1) * 110, (np.cos(yy / 23.0) + 1) * 110, (xx + yy) % 255], -1)
    base = (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)
    intr = Intrinsics(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)
    T = np.eye(4)
    samples: List[tuple] = []
    published = 0
    period = 1.0 / rate
    t0 = time.monotonic()
    next_t = next_sample = t0
    while time.monotonic() - t0 < seconds:
        now = time.monotonic()
        if now >= next_t:
            stamp = node.get_clock().now().to_msg()
            h = Header(stamp=stamp, frame_id="camera")
            pub_tf.publish(TFMessage(transforms=[TransformStamped(header=Header(stamp=stamp, frame_id="map"),
                                                                  child_frame_id="camera",
                                                                  transform=transform_from_matrix(T))]))
            pub_info.publish(camera_info_to_msg(intr, h))
            pub_img.publish(image_to_msg(base, h, "rgb8"))
            published += 1
            next_t += period
        if now >= next_sample:
            samples.append((now - t0, rss_mb(proc.pid)))
            next_sample += 5.0
        ex.spin_once(timeout_sec=max(0.0, min(next_t, next_sample) - time.monotonic()))
    return published, samples


def _result(s, diags: list, published: int, samples: list, seconds: float, rate: float, width: int,
            height: int) -> dict:
    """The soak's numbers from the last MappingStatus ``s`` and the diagnostics seen."""
    callback_ms = float("nan")
    for d in reversed(diags):
        vals = {kv.key: kv.value for st in d.status for kv in st.values}
        if "callback_ms_mean" in vals:
            callback_ms = float(vals["callback_ms_mean"])
            break
    return {"seconds": seconds, "rate_hz": rate, "width": width, "height": height, "published": published,
            "received": int(s.frames_received), "callback_drops": published - int(s.frames_received),
            "worker_drops": int(s.frames_dropped), "rejected": int(s.frames_rejected),
            "keyframes": int(s.keyframes), "callback_ms_mean": callback_ms,
            "rss_mb": [(round(t, 1), round(m, 1)) for t, m in samples]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    a = ap.parse_args(argv)
    r = soak(a.seconds, a.rate, a.width, a.height)
    print(json.dumps(r["rss_mb"]))
    return 0 if r["callback_drops"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
