"""ros2 launch gags_ros mapping.launch.py [params_file:=...] [image_topic:=...] [replay:=<dataset dir or bag>] [rviz:=true]
    [autostart:=true] [use_sim_time:=false]

Starts the gags_ros mapping node with config/mapping.yaml (and, with replay:=DIR, the replay node
streaming a dataset or a bag). The mapping node is a lifecycle node that configures and activates
itself when autostart:=true (the default; ros.autostart), so no lifecycle tools or events are
needed here; autostart:=false leaves it unconfigured for `ros2 lifecycle set` or a lifecycle manager. The node list comes from gags_ros.ros.launch_spec, shared with `gags-launch`,
the equivalent command for machines without `ros2 launch`. rviz:=true where rviz2 is not installed
logs one line (launch_spec.not_installed_line: which package to install) and starts the rest (launch_ros would stop with an exception and orphan the nodes it
had started).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from gags_ros.ros.launch_spec import LAUNCH_ARGS, installed, nodes_from_launch_args, not_installed_line


def _nodes(context):
    values = {k: LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGS}
    actions = []
    for s in nodes_from_launch_args(values):
        if not installed(s):
            actions.append(LogInfo(msg=not_installed_line(s)))
            continue
        actions.append(Node(package=s.package, executable=s.executable, name=s.name,
                            namespace=s.namespace or None, parameters=s.parameters, remappings=s.remappings,
                            arguments=s.arguments, output="screen", emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in LAUNCH_ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
