"""The mapping node's real Query service, called from another process through the generated
interfaces; bad configuration refused at start with a message naming parameter, value and range."""

import pytest

from rosutil import ROOT, call, random_weights_params, start_node, stop

pytestmark = pytest.mark.ros


def test_query_service_across_processes(ros_env, rclpy_context, tmp_path, capfd):
    """The node is started by gags-launch (the launch description of mapping.launch.py)."""
    from rclpy.node import Node

    from gags_ros.ros.launcher import specs_from_args, start
    from gags_ros.srv import ClassifyObjects, Query, RetrieveObjects

    params = random_weights_params(tmp_path)   # the shipped parameters, random teacher weights allowed
    (proc,) = start(specs_from_args([f"params_file:={params}", "device:=cpu"]), env=ros_env)
    node = Node("query_client", context=rclpy_context)
    try:
        client = node.create_client(Query, "gags/query")
        res = call(node, client, Query.Request(text="the red mug", max_targets=3, min_score=-1.0))
        assert not res.success and "no map yet" in res.message
        assert res.header.frame_id == "map" and len(res.targets) == 0
        res = call(node, client, Query.Request(text="   "))
        assert not res.success and "empty query text" in res.message
        res = call(node, client, Query.Request(text="x" * 300))
        assert not res.success and "at most 256" in res.message
        # the CLIP-GS services: the same text checks and the same "no map" answer
        retrieve = node.create_client(RetrieveObjects, "gags/retrieve_objects")
        res = call(node, retrieve, RetrieveObjects.Request(text="  "))
        assert not res.success and "empty query text" in res.message
        res = call(node, retrieve, RetrieveObjects.Request(text="x" * 300))
        assert not res.success and "at most 256" in res.message
        res = call(node, retrieve, RetrieveObjects.Request(text="a chair", min_score=-1.0))
        assert not res.success and "no map yet" in res.message and len(res.objects) == 0
        classify = node.create_client(ClassifyObjects, "gags/classify_objects")
        res = call(node, classify, ClassifyObjects.Request(vocabulary=["chair", "mug"]))
        assert not res.success and "no map yet" in res.message and len(res.objects) == 0
        assert proc.poll() is None, "the node must keep running after bad requests"
    finally:
        node.destroy_node()
        stop(proc)
    out = capfd.readouterr()
    assert "gags_mapping ready" in out.err + out.out


def test_invalid_parameter_is_refused_with_its_range(ros_env):
    proc = start_node("gags_ros.ros.mapping_node", ["-p", "query.threshold:=2.5"], ros_env)
    out = stop(proc, timeout=60) if proc.wait(60) is None else proc.stdout.read()
    assert proc.returncode == 2, out
    assert "query.threshold" in out and "2.5" in out and "[0.0, 1.0]" in out, out
