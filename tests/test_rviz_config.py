"""config/gags.rviz shows what the node publishes (map cloud in RGB and by relevancy of the last
query, query targets, classified objects) and its camera image follows `image_topic:=`: RViz gets the
launch file's remaps and the display names the unremapped, relative topic. (RViz itself is not
installable here; `rviz:=true` without it is tests/test_ros_launch.py's.)"""

import yaml

from rosutil import ROOT


def _displays():
    cfg = yaml.safe_load((ROOT / "config" / "gags.rviz").read_text())
    return cfg["Visualization Manager"]["Displays"]


def test_displays_show_the_node_outputs():
    shown = {(d["Class"].split("/")[-1], d.get("Topic", {}).get("Value")): d for d in _displays() if d.get("Enabled")}
    for key in [("MarkerArray", "/gags/targets"), ("MarkerArray", "/gags/objects"), ("Image", "camera/image_raw")]:
        assert key in shown, f"no enabled display {key}: {sorted(shown)}"
    clouds = [d for d in _displays() if d["Class"].endswith("PointCloud2") and d["Topic"]["Value"] == "/gags/map"]
    by_relevancy = [d for d in clouds if d.get("Channel Name") == "relevancy"]
    assert len(by_relevancy) == 1 and by_relevancy[0]["Enabled"] and by_relevancy[0]["Color Transformer"] == "Intensity"
    # fixed bounds: a colour means the same relevancy after every query (-1 = unknown sits below 0)
    assert by_relevancy[0]["Autocompute Intensity Bounds"] is False
    assert (by_relevancy[0]["Min Intensity"], by_relevancy[0]["Max Intensity"]) == (0, 1)
    assert any(d.get("Color Transformer") == "RGB8" and d["Enabled"] for d in clouds)
    # latched topics need transient-local displays, or RViz started after a query shows nothing
    for d in _displays():
        if d.get("Topic", {}).get("Value") in ("/gags/map", "/gags/targets", "/gags/objects"):
            assert d["Topic"]["Durability Policy"] == "Transient Local", d["Name"]


def test_rviz_follows_the_image_topic_argument():
    from gags_ros.ros.launch_spec import nodes_from_launch_args

    nodes = {n.name: n for n in nodes_from_launch_args({"rviz": "true", "image_topic": "/cam/color/image_raw"})}
    rviz = nodes["rviz2"]
    assert ("camera/image_raw", "/cam/color/image_raw") in rviz.remappings
    assert rviz.remappings == nodes["gags_mapping"].remappings
    assert "-r" in rviz.ros_args() and "camera/image_raw:=/cam/color/image_raw" in rviz.ros_args()
