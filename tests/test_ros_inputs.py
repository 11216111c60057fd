"""Bad input to the mapping node: each gives a clear message and a count, the node keeps running,
and nothing already accepted is lost. Callbacks are driven directly on a real node (in-process)."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


class RecordingPipeline:
    """Stands in for the GPU pipeline: records what the worker hands it."""

    def __init__(self):
        self.frames = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def add_frame(self, frame):
        self.frames.append(frame)

    def idle_step(self):
        return False

    def stats(self):
        return {"state": "mapping", "keyframes": len(self.frames)}


@pytest.fixture
def node(rclpy_context):
    from rclpy.parameter import Parameter

    from gags_ros.ros.mapping_node import MappingNode

    rec = RecordingPipeline()
    n = MappingNode(lambda cfg: rec, context=rclpy_context, parameter_overrides=[
        Parameter("ros.depth_topic", value="camera/depth"), Parameter("ros.tf_timeout", value=0.3),
        Parameter("device", value="cpu")])
    n.worker.start(wait=True) if not n.worker.alive else None
    n.rec = rec
    yield n
    n.destroy_node()


def header(t, frame="cam"):
    from std_msgs.msg import Header

    from gags_ros.ros.conversions import sec_to_stamp

    return Header(stamp=sec_to_stamp(t), frame_id=frame)


def image(t, w=32, h=24, encoding="rgb8", value=100):
    from gags_ros.ros.conversions import image_to_msg

    msg = image_to_msg(np.full((h, w, 3), value, np.uint8), header(t))
    msg.encoding = encoding
    return msg


def info(w=32, h=24):
    from gags_ros.core.types import Intrinsics
    from gags_ros.ros.conversions import camera_info_to_msg

    return camera_info_to_msg(Intrinsics(30.0, 30.0, w / 2, h / 2, w, h), header(0.0))


def depth(t, w=32, h=24, value=1.5):
    from gags_ros.ros.conversions import image_to_msg

    return image_to_msg(np.full((h, w), value, np.float32), header(t))


def tf(t, T=None, child="cam"):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from gags_ros.ros.conversions import transform_from_matrix

    T = np.eye(4) if T is None else T
    return TFMessage(transforms=[TransformStamped(header=header(t, "map"), child_frame_id=child,
                                                  transform=transform_from_matrix(T))])


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_each_bad_input_is_reported_and_counted(node):
    rejected = lambda: node.status_msg().frames_rejected  # noqa: E731
    node._on_image(image(1.0))  # waits tf_timeout for a CameraInfo that never comes
    assert wait_for(lambda: (node._flush(), rejected() == 1)[1], 3.0)
    assert "no CameraInfo received yet on 'camera/camera_info'" in node.last_message
    node._on_info(info(64, 48))
    node._on_image(image(1.0))
    assert rejected() == 2 and "image is 32x24 but CameraInfo says 64x48" in node.last_message
    node._on_info(info())
    node._on_image(image(1.0, encoding="yuv422"))
    assert rejected() == 3 and "unsupported colour encoding 'yuv422'" in node.last_message
    bad_info = info()
    bad_info.k = [0.0] * 9
    node._on_info(bad_info)
    assert rejected() == 4 and "invalid camera matrix" in node.last_message
    node._on_depth(depth(1.0, value=float("nan")))
    assert rejected() == 5 and "no value in [limits.min_depth, limits.max_depth]" in node.last_message
    node._on_depth(image(1.0))  # a colour image on the depth topic
    assert rejected() == 6 and "unsupported depth encoding 'rgb8'" in node.last_message
    nan_tf = tf(1.0, np.full((4, 4), np.nan))
    node._on_tf(nan_tf, False)
    assert rejected() == 7 and "TF map -> cam" in node.last_message and "non-finite" in node.last_message
    # Depth and colour match but no TF: the frame waits tf_timeout, then is dropped with the reason.
    node._on_depth(depth(2.0))
    node._on_image(image(2.0))
    assert wait_for(lambda: (node._flush(), rejected() == 8)[1], 3.0)
    assert "no pose" in node.last_message and "does not exist" in node.last_message
    assert node.rec.frames == [] and node.worker.alive


def test_valid_frame_reaches_the_worker_after_bad_ones(node):
    node._on_info(info())
    node._on_image(image(0.5, encoding="bgr8"))  # supported, but no pose: waits
    node._on_tf(tf(3.0, np.diag([1.0, 1.0, 1.0, 1.0])), False)
    node._on_depth(depth(3.0, value=2.0))
    node._on_image(image(3.0, encoding="bgra8", w=32, h=24))  # wrong channel count for its size
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    node._on_tf(tf(4.0, T), False)
    node._on_depth(depth(4.0, value=2.0))
    msg = image(4.0)
    node._on_image(msg)
    assert wait_for(lambda: len(node.rec.frames) >= 1)
    f = node.rec.frames[-1]
    assert f.stamp == pytest.approx(4.0) and f.depth is not None and float(f.depth[0, 0]) == 2.0
    np.testing.assert_allclose(f.T_world_cam[:3, 3], [1, 2, 3])
    assert f.image.shape == (24, 32, 3)
    s = node.status_msg()
    assert s.frames_received >= 1 and s.frames_dropped == 0 and node.worker.alive
    d = node.diagnostics(s)
    assert d.status[0].name == "gags_ros: mapping"


def test_backward_time_jumps_clear_the_history_and_reset_the_map_when_asked(rclpy_context):
    """A bag loop (stamps 60 s back) and a simulated clock jumping back: mapping goes on, the jump is
    reported, and with ros.time_jump_resets_map the map is reset once per jump."""
    from rclpy.parameter import Parameter
    from rclpy.time import Time

    from gags_ros.ros.mapping_node import MappingNode

    rec = RecordingPipeline()
    n = MappingNode(lambda cfg: rec, context=rclpy_context, parameter_overrides=[
        Parameter("ros.depth_topic", value="camera/depth"), Parameter("ros.time_jump_resets_map", value=True),
        Parameter("use_sim_time", value=True), Parameter("device", value="cpu")])
    try:
        n.worker.start(wait=True) if not n.worker.alive else None
        n._on_info(info())
        for t in (100.0, 100.5, 40.0, 40.5):                # the bag starts again at 40 s
            n._on_tf(tf(t), False)
            n._on_depth(depth(t))
            n._on_image(image(t))
        # the frames after the jump are mapped (older ones still queued may go with the reset map)
        assert wait_for(lambda: (n._flush(), [f.stamp for f in rec.frames][-2:] == [40.0, 40.5])[1]), n.last_message
        assert wait_for(lambda: rec.resets == 1) and n.frames_rejected == 0
        assert "image stamps went back from 100.500 to 40.000 s" in n.last_message and "new map" in n.last_message
        clock = n.get_clock()                                # use_sim_time: /clock drives it
        clock.set_ros_time_override(Time(seconds=200))
        clock.set_ros_time_override(Time(seconds=150))
        assert wait_for(lambda: rec.resets == 2) and "the clock jumped back by 50.000 s" in n.last_message
        assert n.tf.frames() == []                           # dynamic TF cleared as tf2 does
    finally:
        n.destroy_node()
