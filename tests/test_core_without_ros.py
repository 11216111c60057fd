"""The ROS-free layers (core, sim, eval) import with rclpy absent, from the source tree and from `pip install .`."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import sys, pkgutil, importlib
    for name in ("rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs"):
        sys.modules[name] = None  # any import of these now raises ImportError
    import gags_ros.core as core
    assert core.__file__.startswith(sys.argv[1]), core.__file__
    mods = []
    for name in ("gags_ros.core", "gags_ros.sim", "gags_ros.eval"):  # the ROS-free layers
        pkg = importlib.import_module(name)
        mods += [name] + [m.name for m in pkgutil.walk_packages(pkg.__path__, name + ".")]
    for m in mods:
        importlib.import_module(m)
    cfg = core.GagsConfig()
    core.validate(cfg)
    print("imported", len(mods), "core, sim and eval modules without rclpy")
""")


def _run(cwd, path_prefix, env_extra=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", PROBE, str(path_prefix)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_core_imports_without_rclpy_from_source():
    r = _run(ROOT, ROOT / "gags_ros")
    assert r.returncode == 0, r.stderr
    assert "without rclpy" in r.stdout


def test_pip_install_gives_core_without_rclpy(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "gags_ros" / "core" / "config.py").exists()
    # Run from an empty folder with only the pip target on the path: the checkout is not importable.
    r = _run(tmp_path, target / "gags_ros", {"PYTHONPATH": str(target)})
    assert r.returncode == 0, r.stderr
