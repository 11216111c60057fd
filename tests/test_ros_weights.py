"""The mapping node and teacher weights: missing or untrained weights refuse to configure; random
weights, when explicitly allowed, are named on every status and diagnostics report (in-process)."""

import pytest

pytestmark = pytest.mark.ros


def test_shipped_defaults_refuse_to_configure(rclpy_context):
    """segmenter sam without a checkpoint: the node does not start (main exits 2 with this message)."""
    from rclpy.parameter import Parameter

    from gags_ros.core.config import ConfigError
    from gags_ros.ros.mapping_node import MappingNode

    with pytest.raises(ConfigError, match="teacher.sam_checkpoint is empty.*sam_vit_h_4b8939.pth"):
        MappingNode(context=rclpy_context, parameter_overrides=[Parameter("device", value="cpu")])


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
