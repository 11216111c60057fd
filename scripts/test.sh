#!/usr/bin/env bash
# README command 2: set up (idempotent) and run the CPU test suite. GPU tests are deselected here;
# run them on a GPU machine with: .venv/bin/python -m pytest -m gpu
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
exec "${GAGS_VENV:-$ROOT/.venv}/bin/python" -m pytest -m "not gpu" "$@"
