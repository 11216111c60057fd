"""TF buffer and frame assembly (ROS-free): chains, interpolation, staleness, every rejection reason."""

import numpy as np
import pytest

from gags_ros.core.camera import make_pose, rotation_from_quat
from gags_ros.core.config import RosConfig
from gags_ros.core.frame_sync import FrameAssembler
from gags_ros.core.tf_buffer import TransformBuffer, TransformError
from gags_ros.core.types import Intrinsics


def rz(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_chain_composition_and_interpolation():
    tf = TransformBuffer()
    tf.set_transform("map", "odom", 0.0, make_pose(np.eye(3), [1, 0, 0]), static=True)
    tf.set_transform("odom", "base", 1.0, make_pose(rz(0), [0, 0, 0]))
    tf.set_transform("odom", "base", 2.0, make_pose(rz(90), [2, 0, 0]))
    tf.set_transform("base", "cam", 0.0, make_pose(np.eye(3), [0, 0, 1]), static=True)
    T = tf.lookup("map", "cam", 1.5)
    np.testing.assert_allclose(T[:3, :3], rz(45), atol=1e-9)
    np.testing.assert_allclose(T[:3, 3], [2, 0, 1], atol=1e-9)
    # Inverse direction and a lookup between siblings.
    np.testing.assert_allclose(tf.lookup("cam", "map", 1.5), np.linalg.inv(T), atol=1e-9)
    tf.set_transform("map", "landmark", 0.0, make_pose(np.eye(3), [5, 5, 5]), static=True)
    np.testing.assert_allclose(tf.lookup("landmark", "cam", 1.5)[:3, 3], np.array([2, 0, 1]) - 5, atol=1e-9)


def test_lookup_errors_say_what_is_missing():
    tf = TransformBuffer(cache_time=1.0)
    for t in (0.0, 0.5, 1.0, 2.0):
        tf.set_transform("map", "cam", t, make_pose(np.eye(3), [t, 0, 0]))
    with pytest.raises(TransformError) as e:
        tf.lookup("map", "cam", 2.5)
    assert e.value.kind == "future" and "no transform yet" in str(e.value)
    with pytest.raises(TransformError) as e:
        tf.lookup("map", "cam", 0.2)  # older than the 1 s cache before the newest sample
    assert e.value.kind == "past"
    with pytest.raises(TransformError) as e:
        tf.lookup("map", "lidar", 1.0)
    assert e.value.kind == "unknown_frame" and "'lidar'" in str(e.value)
    tf.set_transform("world2", "other", 1.0, np.eye(4))
    with pytest.raises(TransformError) as e:
        tf.lookup("map", "other", 1.0)
    assert e.value.kind == "not_connected"
    with pytest.raises(ValueError, match="finite"):
        tf.set_transform("map", "cam", 3.0, np.full((4, 4), np.nan))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(depth_topic="", pose_source="tf", timeout=0.2):
    cfg = RosConfig(depth_topic=depth_topic, pose_source=pose_source, tf_timeout=timeout, max_sync_offset=0.02)
    clock = Clock()
    return FrameAssembler(cfg, clock=clock), clock


IMG = np.zeros((24, 32, 3), np.uint8)
INTR = Intrinsics(30.0, 30.0, 16.0, 12.0, 32, 24)


def test_camera_info_waits_then_rejects_and_size_mismatch():
    a, clock = make()
    assert a.offer(IMG, 1.0, "cam") is None  # CameraInfo may still come (topics race at start)
    assert a.poll() == ([], [])
    clock.t = 0.5
    ready, rejected = a.poll()
    assert not ready and "no CameraInfo received yet" in rejected[0][1]
    a.set_intrinsics(Intrinsics(30.0, 30.0, 32.0, 24.0, 64, 48))
    assert a.offer(IMG, 1.0, "cam") == "image is 32x24 but CameraInfo says 64x48"


def test_frame_waits_for_its_pose_then_is_ready_or_rejected():
    a, clock = make()
    a.set_intrinsics(INTR)
    a.tf.set_transform("map", "cam", 0.9, make_pose(np.eye(3), [0, 0, 0]))
    assert a.offer(IMG, 1.0, "cam") is None
    ready, rejected = a.poll()
    assert not ready and not rejected and a.waiting == 1  # TF for 1.0 s not there yet
    a.tf.set_transform("map", "cam", 1.1, make_pose(np.eye(3), [2, 0, 0]))
    ready, rejected = a.poll()
    assert len(ready) == 1 and not rejected
    np.testing.assert_allclose(ready[0].T_world_cam[:3, 3], [1, 0, 0], atol=1e-9)
    # A frame whose pose never comes is given up after tf_timeout with the reason.
    a.offer(IMG, 5.0, "cam")
    clock.t = 0.1
    assert a.poll() == ([], [])
    clock.t = 0.5
    ready, rejected = a.poll()
    assert not ready and len(rejected) == 1 and "no pose" in rejected[0][1] and "no transform yet" in rejected[0][1]


def test_non_rigid_tf_is_rejected_naming_the_frame():
    a, _ = make()
    a.set_intrinsics(INTR)
    bad = np.eye(4)
    bad[:3, :3] *= 2.0  # a scale, not a rotation
    a.tf.set_transform("map", "cam", 1.0, bad)
    a.offer(IMG, 1.0, "cam", name="frame_7")
    ready, rejected = a.poll()
    assert not ready and rejected[0][0] == "frame_7" and "not a rotation" in rejected[0][1]


def test_depth_matching_and_pose_topic():
    a, clock = make(depth_topic="depth", pose_source="pose")
    a.set_intrinsics(INTR)
    a.add_pose(make_pose(rotation_from_quat([1, 0, 0, 0]), [0, 1, 0]), 1.0)
    a.add_pose(make_pose(np.eye(3), [0, 1, 0]), 3.0)
    a.add_depth(np.full((24, 32), 2.0, np.float32), 0.99)
    a.offer(IMG, 1.0, "cam")
    a.offer(IMG, 2.0, "cam")  # no depth yet near 2.0: waits
    ready, rejected = a.poll()
    assert len(ready) == 1 and ready[0].depth is not None and ready[0].depth[0, 0] == 2.0
    assert a.waiting == 1 and not rejected
    a.add_depth(np.full((24, 32), 3.0, np.float32), 2.5)  # newer than 2.0 + 0.02: none will match
    ready, rejected = a.poll()
    assert not ready and "no depth image within 0.02 s" in rejected[0][1]
    a.add_depth(np.full((12, 16), 3.0, np.float32), 3.0)
    a.offer(IMG, 3.0, "cam")
    ready, rejected = a.poll()
    assert "depth is 16x12 but the colour image is 32x24" in rejected[0][1]
    with pytest.raises(ValueError, match="non-finite"):
        a.add_pose(np.full((4, 4), np.inf), 4.0)


def test_pending_frames_are_bounded():
    cfg = RosConfig(tf_timeout=10.0)
    a = FrameAssembler(cfg, max_pending=3)
    a.set_intrinsics(INTR)
    for i in range(5):
        a.offer(IMG, float(i), "cam")
    assert a.waiting == 3 and a.dropped_waiting == 2
