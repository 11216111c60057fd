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


def call(node, client, request, timeout: float = 30.0):
    """Call a service from ``node`` and spin until the answer arrives. The first call of a client is
    resent every 2 s until answered (Fast DDS drops a response sent before the service matched the
    client's response reader: see gags_ros.ros.client), so tests never depend on matching luck."""
    from gags_ros.ros.client import call as call_service, wait_until_served

    if not getattr(client, "_gags_served", False):
        res = wait_until_served(node, client, request, timeout=timeout, attempt=2.0)
        client._gags_served = True
        return res
    return call_service(node, client, request, timeout=timeout, attempts=1)
