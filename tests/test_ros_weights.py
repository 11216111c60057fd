"""The mapping node and teacher weights: missing weights are one clear ERROR in status and
diagnostics (which file to put where, which parameter) while geometry keeps mapping, with no
traceback per frame; random weights, when explicitly allowed, are named on every status and
diagnostics report (in-process)."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

SAM_FILE = "sam_vit_h_4b8939.pth"


def _frames(n=3):
    from gags_ros.core.types import Frame, Intrinsics

    rng = np.random.default_rng(0)
    for i in range(n):
        T = np.eye(4)
        T[0, 3] = 0.3 * i          # 0.3 m apart: every frame is a keyframe
        yield Frame(image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), T_world_cam=T,
                    intrinsics=Intrinsics(60.0, 60.0, 32.0, 24.0, 64, 48), stamp=1.0 + i, name=f"f{i}")


@pytest.mark.parametrize("found", ["at start", "at the first keyframe"])
def test_missing_weights_are_one_error_and_geometry_keeps_mapping(rclpy_context, capfd, caplog, found):
    """The shipped defaults (SAM vit_h, CLIP laion2b tag) where neither file exists. "at start": the
    node's own check; "at the first keyframe": a pipeline built without it (e.g. weights removed after
    start) finds it when it first needs the teacher."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter

    from gags_ros.core.pipeline import GagsPipeline
    from gags_ros.ros.mapping_node import MappingNode

    overrides = [Parameter(k, value=v) for k, v in {
        "device": "cpu", "cpu_threads": 1, "mapping.steps_per_keyframe": 5, "mapping.final_refine_steps": 0,
        "mapping.init_points_per_keyframe": 300}.items()]
    factory = None if found == "at start" else (lambda cfg: GagsPipeline(cfg))
    node = MappingNode(factory, context=rclpy_context, parameter_overrides=overrides)
    try:
        for f in _frames():
            node.worker.submit_frame(f)
        deadline = time.monotonic() + 120
        while node.worker.pipeline is None or node.worker.pipeline.stats()["keyframes"] < 3 \
                or node.worker.pipeline.owes_work():
            assert time.monotonic() < deadline, "geometry did not map three keyframes"
            time.sleep(0.1)
        status = node.status_msg()
        assert status.keyframes == 3 and status.gaussians > 0 and status.mapping_steps > 0, status
        assert status.state != "error"
        assert status.message.startswith("ERROR: teacher weights missing, language disabled (mapping geometry "
                                         "only): teacher.sam_checkpoint is empty"), status.message
        for what in (f"Download {SAM_FILE}", "set teacher.sam_checkpoint to that path",
                     "teacher.clip_pretrained to its path"):   # which file, where, which parameter
            assert what in status.message, status.message
        (diag,) = node.diagnostics(status).status
        assert diag.level == DiagnosticStatus.ERROR and "teacher.sam_checkpoint" in diag.message, diag.message
        assert "3 keyframes" in diag.message     # the map's state is still reported
        answer = node.worker.call(lambda p: _refusal(p, "red mug"), timeout=30)
        assert answer.startswith("no language features yet") and "teacher weights missing" in answer, answer
    finally:
        node.destroy_node()
    out = capfd.readouterr()
    logs = out.out + out.err + caplog.text    # the node's log (rcutils) and the pipeline's (logging)
    assert logs.count(f"Download {SAM_FILE}") == 1, logs      # one report, not one per keyframe
    assert "Traceback" not in logs, logs


def _refusal(pipeline, text) -> str:
    from gags_ros.core.pipeline import NoMapError

    try:
        pipeline.query([text])
    except NoMapError as e:
        return str(e)
    return "answered"


class IdlePipeline:
    def add_frame(self, frame):
        return None

    def idle_step(self):
        return False

    def stats(self):
        return {"state": "waiting"}


def test_random_weights_are_named_on_every_report(rclpy_context):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter

    from gags_ros.ros.mapping_node import MappingNode

    node = MappingNode(lambda cfg: IdlePipeline(), context=rclpy_context, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("teacher.allow_random_weights", value=True),
        Parameter("teacher.clip_pretrained", value="")])
    try:
        for event in ("", "map saved"):  # with and without another message to report
            if event:
                node.note(event)
            status = node.status_msg()
            assert status.message.startswith("RANDOM WEIGHTS (teacher.allow_random_weights): SAM and CLIP "
                                             "untrained"), status.message
            assert event in status.message
            (diag,) = node.diagnostics(status).status
            assert diag.level == DiagnosticStatus.WARN and "SAM and CLIP untrained" in diag.message
        node.cfg.language.enabled = False  # no teacher: nothing to warn about
        assert "RANDOM WEIGHTS" not in node.status_msg().message
    finally:
        node.destroy_node()
