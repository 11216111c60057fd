"""Helpers for tests that start real ROS 2 processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent


def start_node(module: str, ros_args: List[str], env: dict, args: Optional[List[str]] = None,
               log: Optional[Path] = None) -> subprocess.Popen:
    """``python -m module [args] --ros-args ...`` with output to ``log`` (or a pipe)."""
    out = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", module] + (args or []) + ["--ros-args"] + ros_args,
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT, then kill; returns what the process printed when it had a pipe."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


def call(node, client, request, timeout: float = 30.0, executor=None):
    """Call a service from ``node`` and spin (``executor``, or a temporary one) until the answer
    arrives. The first call of a client is resent every 2 s until answered (Fast DDS drops a
    response sent before the service matched the client's response reader: see
    gags_ros.ros.client), so tests never depend on matching luck."""
    from gags_ros.ros.client import call as call_service, wait_until_served

    if not getattr(client, "_gags_served", False):
        res = wait_until_served(node, client, request, timeout=timeout, attempt=2.0, executor=executor)
        client._gags_served = True
        return res
    return call_service(node, client, request, timeout=timeout, attempts=1, executor=executor)


def random_weights_params(tmp_path: Path, **values) -> Path:
    """A ROS parameter file of the shipped configuration with random teacher weights allowed (none
    can be had here; the shipped defaults then map geometry only) and ``values`` (dotted
    names, e.g. ``**{"ros.request_queue": 4}``)."""
    from gags_ros.core import config as C

    cfg = C.GagsConfig()
    for k, v in {"teacher.allow_random_weights": True, "teacher.clip_pretrained": "", **values}.items():
        C.set_value(cfg, k, v)
    p = tmp_path / "params.yaml"
    p.write_text(C.ros_params_yaml(cfg))
    return p
