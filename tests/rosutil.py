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
    """Call a service from ``node`` and spin until the answer arrives."""
    from rclpy.executors import SingleThreadedExecutor

    assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} did not appear"
    fut = client.call_async(request)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin_until_future_complete(fut, timeout_sec=timeout)
    finally:
        executor.remove_node(node)
    assert fut.done(), f"no answer from {client.srv_name} within {timeout} s"
    return fut.result()
