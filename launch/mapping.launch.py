"""ros2 launch gags_ros mapping.launch.py [params_file:=...] [image_topic:=...] [replay:=<dataset dir>] [rviz:=true]

Starts the gags_ros mapping node with config/mapping.yaml (and, with replay:=DIR, the replay node
streaming a dataset). The node list comes from gags_ros.ros.launch_spec, shared with `gags-launch`,
the equivalent command for machines without `ros2 launch`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from gags_ros.ros.launch_spec import LAUNCH_ARGS, nodes_from_launch_args


def _nodes(context):
    values = {k: LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGS}
    return [Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace or None,
                 parameters=s.parameters, remappings=s.remappings, arguments=s.arguments,
                 output="screen", emulate_tty=True) for s in nodes_from_launch_args(values)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in LAUNCH_ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
