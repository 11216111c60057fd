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
    """:func:`gags_ros.ros.launcher.stop` (imported when used: rclpy only in ROS tests)."""
    from gags_ros.ros.launcher import stop as stop_process

    return stop_process(proc, timeout)


def call(node, client, request, timeout: float = 30.0, executor=None):
    """:func:`gags_ros.ros.client.call_served`: a client's first call resent until answered."""
    from gags_ros.ros.client import call_served

    return call_served(node, client, request, timeout=timeout, executor=executor)


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
