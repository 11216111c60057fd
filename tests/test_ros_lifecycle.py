"""The mapping node as a managed (lifecycle) node. In-process, with real topics: active maps frames;
inactive ignores them, runs no background work and still answers queries with the map kept;
cleanup frees the pipeline; a failing configure is an error in status and diagnostics.
`gags-launch autostart:=false` leaves the node unconfigured, and its lifecycle services take it
through every transition (the README's `ros2 lifecycle` commands: tests/test_ros_cli.py)."""

import gc
import subprocess
import sys
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from rosutil import ROOT, stop

pytestmark = pytest.mark.ros

class CountingPipeline:
    """Stands in for the pipeline: counts frames and background steps, answers queries."""

    def __init__(self):
        self.frames = []
        self.idle_steps = 0

    def add_frame(self, frame):
        self.frames.append(frame)

    def idle_step(self):
        self.idle_steps += 1
        return False

    def query(self, texts, max_targets=None, min_score=None):
        return [SimpleNamespace(targets=[], reason=f"not found: {len(self.frames)} frames mapped") for _ in texts]

    def reset(self):
        self.frames = []

    def stats(self):
        return {"state": "mapping", "keyframes": len(self.frames)}


def _messages(t):
    """Image, CameraInfo and TF of one 32x24 frame at ``t`` s."""
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from gags_ros.core.types import Intrinsics
    from gags_ros.ros.conversions import camera_info_to_msg, image_to_msg, sec_to_stamp, transform_from_matrix

    h = Header(stamp=sec_to_stamp(t), frame_id="cam")
    T = np.eye(4)
    T[0, 3] = t
    tf = TFMessage(transforms=[TransformStamped(header=Header(stamp=h.stamp, frame_id="map"), child_frame_id="cam",
                                                transform=transform_from_matrix(T))])
    return (image_to_msg(np.full((24, 32, 3), 100, np.uint8), h),
            camera_info_to_msg(Intrinsics(30.0, 30.0, 16.0, 12.0, 32, 24), h), tf)


def test_transitions_in_process(rclpy_context):
    from lifecycle_msgs.msg import State
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from gags_ros.ros.client import call
    from gags_ros.ros.mapping_node import MappingNode
    from gags_ros.srv import Query

    built = []   # weak references to every pipeline the node built

    def factory(cfg):
        p = CountingPipeline()
        built.append(weakref.ref(p))
        return p

    node = MappingNode(factory, context=rclpy_context, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("ros.qos_reliable", value=True)])
    peer = Node("lifecycle_test_peer", context=rclpy_context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [peer.create_publisher(Image, "camera/image_raw", qos), peer.create_publisher(CameraInfo, "camera/camera_info", qos),
            peer.create_publisher(TFMessage, "/tf", qos)]
    client = peer.create_client(Query, "gags/query")
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    ex.add_node(peer)

    def spin(seconds, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            ex.spin_once(timeout_sec=0.05)
        return until()

    def pipeline():
        return built[-1]()

    def stream(times):
        """Publish frames once the node's image subscription is matched (or 2 s passed)."""
        spin(2.0, lambda: all(p.get_subscription_count() > 0 for p in pubs))
        for t in times:
            image, info, tf = _messages(t)
            pubs[2].publish(tf)
            pubs[1].publish(info)
            pubs[0].publish(image)
            spin(0.1)

    def ask():
        return call(peer, client, Query.Request(text="chair"), timeout=20, executor=ex)

    try:
        # autostart (the default): configured and active, mapping what arrives
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
        assert not node.cloud_timer.is_canceled()    # the map cloud is published while active
        stream([1.0, 2.0, 3.0])
        assert spin(10.0, lambda: len(pipeline().frames) == 3), node.status_msg()
        assert spin(5.0, lambda: pipeline().idle_steps > 0)

        # deactivate: frames ignored, no background work, the map kept, queries answered
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.status_msg().state == "inactive" and node.subs == [] and node.cloud_timer.is_canceled()
        received, steps = node.callback_count, pipeline().idle_steps
        stream([4.0, 5.0, 6.0])
        spin(1.5)
        assert node.callback_count == received and len(pipeline().frames) == 3
        assert pipeline().idle_steps <= steps + 1    # at most the step that was running
        answer = ask()
        assert answer.success and answer.message.startswith("not found: 3 frames mapped"), answer.message

        # activate again: the same map takes new frames
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert not node.cloud_timer.is_canceled()
        stream([7.0])
        assert spin(10.0, lambda: len(pipeline().frames) == 4), node.status_msg()

        # cleanup (from inactive): the worker stops and the pipeline (models, map) is freed
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert node.worker is None and built[0]() is None
        status = node.status_msg()
        assert status.state == "unconfigured" and status.keyframes == 0
        answer = ask()
        assert not answer.success and "unconfigured" in answer.message and "configure" in answer.message
        (diag,) = node.diagnostics(status).status
        values = {kv.key: kv.value for kv in diag.values}
        assert values["lifecycle_state"] == "unconfigured"
        assert "cleanup: unconfigured" in values["lifecycle_transition 0"], values
        assert "deactivate: inactive" in values["lifecycle_transition 1"], values

        # configure again: a new, empty pipeline; shutdown ends it
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert len(built) == 2 and pipeline().frames == [] and node.status_msg().state == "inactive"
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node.worker is None and node._state_machine.current_state[0] == State.PRIMARY_STATE_FINALIZED
    finally:
        ex.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_failed_configure_is_an_error_in_status_and_diagnostics(rclpy_context):
    from diagnostic_msgs.msg import DiagnosticStatus
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from gags_ros.ros.mapping_node import MappingNode

    def factory(cfg):
        raise OSError("no such model file: /models/sam.pth")

    node = MappingNode(factory, context=rclpy_context, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("ros.autostart", value=False)])
    try:
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node.status_msg().state == "unconfigured"
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED and node.worker is None
        status = node.status_msg()
        assert status.state == "error" and "configure failed" in status.message
        assert "no such model file: /models/sam.pth" in status.message, status.message
        (diag,) = node.diagnostics(status).status
        assert diag.level == DiagnosticStatus.ERROR and "configure failed" in diag.message, diag.message
    finally:
        node.destroy_node()


def test_autostart_false_leaves_it_unconfigured_then_every_transition(tmp_path, ros_env):
    """`gags-launch autostart:=false`: the node waits unconfigured; the lifecycle services (what `ros2
    lifecycle set / get` call; the README's commands run in tests/test_ros_cli.py) take it through
    every transition. Each client is first answered with a request without effect (GetState; a
    ChangeState of an unknown label), then each transition is sent once."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.node import Node

    from gags_ros.msg import MappingStatus
    from gags_ros.ros.client import call, call_served, wait_until_served

    log = tmp_path / "launch.log"
    proc = subprocess.Popen([sys.executable, "-m", "gags_ros.ros.launcher", "autostart:=false", "device:=cpu"],
                            cwd=ROOT, env=ros_env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = Node("lifecycle_test_client")
    get = node.create_client(GetState, "/gags_mapping/get_state")
    change = node.create_client(ChangeState, "/gags_mapping/change_state")
    status = []
    node.create_subscription(MappingStatus, "gags/status", status.append, 10)

    def state():
        return call_served(node, get, GetState.Request(), timeout=60).current_state.label

    try:
        assert state() == "unconfigured", log.read_text()
        refused = wait_until_served(node, change, ChangeState.Request(transition=Transition(label="no_such")),
                                    timeout=60)
        assert not refused.success and state() == "unconfigured"
        deadline = time.monotonic() + 30
        while not status and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert status and status[-1].state == "unconfigured", status[-1:]
        for transition, expected in [("configure", "inactive"), ("activate", "active"), ("deactivate", "inactive"),
                                     ("cleanup", "unconfigured"), ("shutdown", "finalized")]:
            answer = call(node, change, ChangeState.Request(transition=Transition(label=transition)), timeout=60,
                          attempts=1)
            assert answer.success, (transition, log.read_text())
            assert state() == expected, transition
    finally:
        text = stop(proc, 15)
        node.destroy_node()
        rclpy.try_shutdown()
        print(log.read_text(), text)
