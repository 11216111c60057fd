"""The layers hold: import-linter's contracts (.importlinter) pass on the package, and they would
catch a violation, including an import written inside a function."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / ".importlinter"
LINT = Path(sys.executable).parent / "lint-imports"   # PyPI import-linter (requirements.txt)


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # lint-imports puts its working directory first on sys.path: the package under cwd is checked,
    # not an installed copy; no cache, so nothing is written into the tree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(CONTRACTS)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_contracts_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "4 kept" in r.stdout, r.stdout


def test_contracts_name_the_layers():
    cfg = configparser.ConfigParser()
    cfg.read(CONTRACTS)
    layers = cfg["importlinter:contract:layers"]["layers"].split()
    assert layers == ["gags_ros.demo", "gags_ros.ros", "|", "gags_ros.eval", "gags_ros.sim", "gags_ros.core"]
    forbidden = cfg["importlinter:contract:core-production-only"]["forbidden_modules"].split()
    assert {"gags_ros.ros", "gags_ros.sim", "gags_ros.eval"} <= set(forbidden)
    assert cfg["importlinter:contract:core-layers"]["containers"].split() == ["gags_ros.core"]


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "gags_ros", tmp_path / "gags_ros",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "assets"))
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    # the core reaching the simulation from inside a function (the old teachers/pipeline.py way)
    ("core/teachers/factory.py", "def _probe():\n    from gags_ros.sim import teacher\n",
     "gags_ros.core is not allowed to import gags_ros.sim"),
    # a cycle among core packages: the renderers importing the hub
    ("core/render/factory.py", "def _probe():\n    from .. import pipeline\n",
     "gags_ros.core.render is not allowed to import gags_ros.core.pipeline"),
    # the simulation importing the evaluation at module level
    ("sim/scene.py", "from gags_ros.eval import metrics\n",
     "gags_ros.sim is not allowed to import gags_ros.eval"),
])
def test_a_violation_is_caught(tmp_path, module, line, broken):
    tree = _copy(tmp_path)
    path = tree / "gags_ros" / module
    path.write_text(path.read_text() + "\n\n" + line)
    r = _lint(tree)
    assert r.returncode != 0, r.stdout
    assert broken in r.stdout, r.stdout
