"""Test isolation: every run gets its own ROS domain on loopback, strict message field checks, and
the Fast DDS large-message profile; GPU tests are skipped where CUDA is absent (CI deselects them
with -m "not gpu"; the device machine runs them with -m gpu)."""

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

# Set before anything imports rclpy; subprocesses inherit them.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Children started by tests must import this checkout first (it finds the generated interfaces in
# the venv through gags_ros.__path__).
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


# One torch thread per process: ROS tests run a node process beside the test process on 2 cores,
# and oversubscribed threads made small torch ops up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with -m gpu on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets (tests may read it; the package never does)."""
    p = SHARED / "datasets"
    assert p.is_dir(), f"expected the shared datasets at {p}"
    return p


@pytest.fixture(scope="session")
def ros_env() -> dict:
    """Environment for ROS child processes of this test run."""
    from gags_ros.ros.dds import ensure_profile_env

    env = ensure_profile_env(dict(os.environ))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return env


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context for one test, shut down afterwards."""
    import rclpy

    from gags_ros.ros.dds import ensure_profile_env

    ensure_profile_env()
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


PYTHON = sys.executable
