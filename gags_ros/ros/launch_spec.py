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


def mapping_nodes(params_file: Optional[str] = None, overrides: Optional[Dict[str, object]] = None,
                  remappings: Sequence[Tuple[str, str]] = (), replay: Optional[Sequence[str]] = None,
                  namespace: str = "") -> List[NodeSpec]:
    """The nodes of ``mapping.launch.py``: the mapping node, and a replay node when ``replay`` args
    are given (e.g. ``["/data/scene", "--rate", "10"]``)."""
    params: List[object] = [str(params_file or default_params_file())]
    if overrides:
        params.append(dict(overrides))
    nodes = [NodeSpec("mapping_node", "gags_ros.ros.mapping_node", "gags_mapping", params,
                      list(remappings), namespace=namespace)]
    if replay:
        nodes.append(NodeSpec("replay_node", "gags_ros.ros.replay_node", "gags_replay", [],
                              list(remappings), arguments=list(replay), namespace=namespace))
    return nodes
