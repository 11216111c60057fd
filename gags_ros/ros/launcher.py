"""gags-launch: start the nodes of launch/mapping.launch.py without `ros2 launch`.

Same arguments (``name:=value``), same node specs (:mod:`gags_ros.ros.launch_spec`), same parameter
files; each node runs as ``python -m <module> --ros-args ...``. Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from .dds import ensure_profile_env
from .launch_spec import LAUNCH_ARGS, NodeSpec, nodes_from_launch_args, not_installed_line


def specs_from_args(argv: Sequence[str]) -> List[NodeSpec]:
    """Parse ``name:=value`` launch arguments into node specs, exactly as mapping.launch.py does."""
    values = {}
    for a in argv:
        if ":=" not in a:
            raise SystemExit(f"gags-launch: expected name:=value, got {a!r} (arguments: {', '.join(LAUNCH_ARGS)})")
        k, v = a.split(":=", 1)
        values[k] = v
    try:
        return nodes_from_launch_args(values)
    except ValueError as e:
        raise SystemExit(f"gags-launch: {e}") from None


def start(specs: Sequence[NodeSpec], env: Optional[dict] = None) -> List[subprocess.Popen]:
    env = ensure_profile_env(dict(os.environ if env is None else env))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let each child set up its own library path
    procs = []
    for s in specs:
        if not s.module:  # a non-Python node (RViz): start its executable if installed
            exe = shutil.which(s.executable)
            if exe is None:
                print(f"[gags-launch] {not_installed_line(s)}", flush=True)
                continue
            cmd = [exe] + s.ros_args()
        else:
            cmd = [sys.executable, "-m", s.module] + s.ros_args()
        print("[gags-launch] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT (what Ctrl-C and launch send), then kill after ``timeout`` s; returns what the process
    printed when it had a pipe."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


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
