"""One launch description for both ways of starting gags_ros.

``launch/mapping.launch.py`` (``ros2 launch gags_ros mapping.launch.py``) turns these specs into
launch_ros ``Node`` actions; ``gags-launch`` (:mod:`gags_ros.ros.launcher`) starts the same specs as
processes where ``ros2 launch`` is not installed. Both therefore run the same executables with the
same parameter files, overrides and remappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PACKAGE = "gags_ros"


@dataclass
class NodeSpec:
    executable: str                   # installed under lib/gags_ros (ros2 run gags_ros <executable>)
    module: str                       # python -m <module> starts the same node
    name: str
    parameters: List[object] = field(default_factory=list)  # parameter-file paths and {name: value}
    remappings: List[Tuple[str, str]] = field(default_factory=list)
    arguments: List[str] = field(default_factory=list)
    namespace: str = ""
    package: str = PACKAGE

    def ros_args(self) -> List[str]:
        """``--ros-args`` command-line form of name, parameters and remappings."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for p in self.parameters:
            if isinstance(p, dict):
                for k, v in p.items():
                    args += ["-p", f"{k}:={_param_text(v)}"]
            else:
                args += ["--params-file", str(p)]
        for a, b in self.remappings:
            args += ["-r", f"{a}:={b}"]
        return list(self.arguments) + args


def _param_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_param_text(x) for x in v) + "]"
    return str(v)


def default_params_file() -> Path:
    """config/mapping.yaml of the installed package; generated from the config defaults otherwise."""
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory(PACKAGE)) / "config" / "mapping.yaml"
        if p.exists():
            return p
    except Exception:  # not installed through colcon / ament index absent: use generated defaults
        pass
    import tempfile

    from ..core.config import ros_params_yaml

    p = Path(tempfile.gettempdir()) / "gags_ros_default_mapping.yaml"
    p.write_text(ros_params_yaml())
    return p


def rviz_config() -> Path:
    """config/gags.rviz of the installed package (or of this checkout)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory(PACKAGE)) / "config" / "gags.rviz"
        if p.exists():
            return p
    except Exception:  # not installed through colcon: fall back to the checkout
        pass
    return Path(__file__).resolve().parents[2] / "config" / "gags.rviz"


def mapping_nodes(params_file: Optional[str] = None, overrides: Optional[Dict[str, object]] = None,
                  remappings: Sequence[Tuple[str, str]] = (), replay: Optional[Sequence[str]] = None,
                  namespace: str = "", rviz: bool = False) -> List[NodeSpec]:
    """The nodes of ``mapping.launch.py``: the mapping node, a replay node when ``replay`` args are
    given (e.g. ``["/data/scene", "--rate", "10"]``) and RViz with config/gags.rviz when ``rviz``."""
    params: List[object] = [str(params_file or default_params_file())]
    if overrides:
        params.append(dict(overrides))
    nodes = [NodeSpec("mapping_node", "gags_ros.ros.mapping_node", "gags_mapping", params,
                      list(remappings), namespace=namespace)]
    if replay:
        nodes.append(NodeSpec("replay_node", "gags_ros.ros.replay_node", "gags_replay", [],
                              list(remappings), arguments=list(replay), namespace=namespace))
    if rviz:  # the remaps too: config/gags.rviz shows camera/image_raw, which then follows image_topic:=
        nodes.append(NodeSpec("rviz2", "", "rviz2", [], list(remappings), arguments=["-d", str(rviz_config())],
                              package="rviz2", namespace=namespace))
    return nodes


def installed(spec: NodeSpec) -> bool:
    """Whether ``ros2 launch`` can start ``spec``: its package is in the ament index (or, for a
    non-Python node, its executable is on PATH)."""
    import shutil

    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # no ament index: only executables on PATH can be found
        return bool(spec.module) or shutil.which(spec.executable) is not None
    try:
        get_package_prefix(spec.package)
        return True
    except PackageNotFoundError:
        return False


def not_installed_line(spec: NodeSpec) -> str:
    """The one line both launchers print for a node that is not installed (RViz with ``rviz:=true``):
    which package to install; the other nodes start as they would without it."""
    import os

    distro = os.environ.get("ROS_DISTRO") or "<distro>"
    return (f"{spec.executable} is not installed, so it is not started (install the ROS 2 package {spec.package}, "
            f"e.g. apt install ros-{distro}-{spec.package.replace('_', '-')}); the other nodes start as usual")


# Arguments of mapping.launch.py (name: (default, description)); gags-launch takes the same.
LAUNCH_ARGS: Dict[str, Tuple[str, str]] = {
    "params_file": ("", "Parameter file (default: the package's config/mapping.yaml)"),
    "image_topic": ("camera/image_raw", "Remap the colour image topic"),
    "camera_info_topic": ("camera/camera_info", "Remap the CameraInfo topic"),
    "depth_topic": ("", "Depth topic (sets ros.depth_topic; empty = none): depth registered to the colour camera"),
    "depth_camera_info_topic": ("", "CameraInfo of unregistered depth: the node registers it to colour (sets "
                                "ros.depth_camera_info_topic; empty = depth must be registered)"),
    "world_frame": ("", "Fixed frame of the map (sets ros.world_frame; empty = the parameter file's, map)"),
    "pose_source": ("", "tf, pose or odometry (sets ros.pose_source; empty = the parameter file's, tf)"),
    "pose_topic": ("", "PoseStamped / Odometry topic (sets ros.pose_topic; empty = the parameter file's)"),
    "camera_model": ("", "auto, raw or rectified (sets ros.camera_model; empty = the parameter file's, auto)"),
    "device": ("auto", "Torch device (auto, cpu, cuda, cuda:N)"),
    "autostart": ("true", "Configure and activate the mapping node (a lifecycle node) at start; false: it "
                  "starts unconfigured for `ros2 lifecycle set` or a lifecycle manager (sets ros.autostart)"),
    "use_sim_time": ("false", "The mapping node uses /clock (e.g. a bag replayed with --clock) for TF waits "
                     "and stamps"),
    "replay": ("", "Also start the replay node with these arguments (e.g. a dataset folder)"),
    "rviz": ("false", "Start RViz with config/gags.rviz"),
}


def _flag(text: str, name: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {text!r}")
    return text.lower() == "true"


def nodes_from_launch_args(values: Dict[str, str]) -> List[NodeSpec]:
    """Node specs for launch-argument values (missing names take LAUNCH_ARGS defaults)."""
    import shlex

    unknown = set(values) - set(LAUNCH_ARGS)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {', '.join(LAUNCH_ARGS)}")
    v = {k: values.get(k, d) for k, (d, _) in LAUNCH_ARGS.items()}
    overrides = {"device": v["device"], "ros.autostart": _flag(v["autostart"], "autostart")}
    if _flag(v["use_sim_time"], "use_sim_time"):
        overrides["use_sim_time"] = True
    for arg in ("depth_topic", "depth_camera_info_topic", "world_frame", "pose_source", "pose_topic", "camera_model"):
        if v[arg]:
            overrides[f"ros.{arg}"] = v[arg]
    remaps = [("camera/image_raw", v["image_topic"]), ("camera/camera_info", v["camera_info_topic"])]
    return mapping_nodes(v["params_file"] or None, overrides, remaps, replay=shlex.split(v["replay"]) or None,
                         rviz=v["rviz"].lower() == "true")
