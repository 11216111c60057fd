"""gags-launch: start the nodes of launch/mapping.launch.py without `ros2 launch`.

Same arguments (``name:=value``), same node specs (:mod:`gags_ros.ros.launch_spec`), same parameter
files; each node runs as ``python -m <module> --ros-args ...``. Ctrl-C stops them all.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .dds import ensure_profile_env
from .launch_spec import NodeSpec, mapping_nodes


def _load_launch_args() -> dict:
    """The ARGS table of launch/mapping.launch.py (without importing launch/launch_ros)."""
    return {
        "params_file": "", "image_topic": "camera/image_raw", "camera_info_topic": "camera/camera_info",
        "depth_topic": "", "device": "auto", "replay": "",
    }


def specs_from_args(argv: Sequence[str]) -> List[NodeSpec]:
    """Parse ``name:=value`` launch arguments into node specs, as mapping.launch.py does."""
    vals = _load_launch_args()
    for a in argv:
        if ":=" not in a:
            raise SystemExit(f"gags-launch: expected name:=value, got {a!r} (arguments: {', '.join(vals)})")
        k, v = a.split(":=", 1)
        if k not in vals:
            raise SystemExit(f"gags-launch: unknown argument {k!r} (arguments: {', '.join(vals)})")
        vals[k] = v
    overrides = {"device": vals["device"]}
    if vals["depth_topic"]:
        overrides["ros.depth_topic"] = vals["depth_topic"]
    remaps = [("camera/image_raw", vals["image_topic"]), ("camera/camera_info", vals["camera_info_topic"])]
    return mapping_nodes(vals["params_file"] or None, overrides, remaps,
                         replay=shlex.split(vals["replay"]) or None)


def start(specs: Sequence[NodeSpec], env: Optional[dict] = None) -> List[subprocess.Popen]:
    env = ensure_profile_env(dict(os.environ if env is None else env))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let each child set up its own library path
    procs = []
    for s in specs:
        cmd = [sys.executable, "-m", s.module] + s.ros_args()
        print("[gags-launch] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def main(argv: Optional[Sequence[str]] = None) -> int:
    procs = start(specs_from_args(sys.argv[1:] if argv is None else argv))
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
    return max((p.returncode or 0) for p in procs)


if __name__ == "__main__":
    raise SystemExit(main())
