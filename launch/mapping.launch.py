"""ros2 launch gags_ros mapping.launch.py [params_file:=...] [image_topic:=...] [replay:=<dataset dir>]

Starts the gags_ros mapping node with config/mapping.yaml (and, with replay:=DIR, the replay node
streaming a dataset). The node list comes from gags_ros.ros.launch_spec, shared with `gags-launch`,
the equivalent command for machines without `ros2 launch`.
"""

import shlex

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from gags_ros.ros.launch_spec import PACKAGE, mapping_nodes

ARGS = {
    "params_file": ("", "Parameter file (default: the package's config/mapping.yaml)"),
    "image_topic": ("camera/image_raw", "Remap the colour image topic"),
    "camera_info_topic": ("camera/camera_info", "Remap the CameraInfo topic"),
    "depth_topic": ("", "Depth topic (sets ros.depth_topic; empty = none)"),
    "device": ("auto", "Torch device (auto, cpu, cuda, cuda:N)"),
    "replay": ("", "Also start the replay node with these arguments (e.g. a dataset folder)"),
}


def _nodes(context):
    get = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    overrides = {"device": get("device")}
    if get("depth_topic"):
        overrides["ros.depth_topic"] = get("depth_topic")
    remaps = [("camera/image_raw", get("image_topic")), ("camera/camera_info", get("camera_info_topic"))]
    specs = mapping_nodes(get("params_file") or None, overrides, remaps,
                          replay=shlex.split(get("replay")) or None)
    return [Node(package=PACKAGE, executable=s.executable, name=s.name, namespace=s.namespace or None,
                 parameters=s.parameters, remappings=s.remappings, arguments=s.arguments,
                 output="screen", emulate_tty=True) for s in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
