#!/usr/bin/env bash
# Creates (or reuses) .venv and installs ichbench into it. Sourced by demo.sh and test.sh.
# torch is installed first, pinned to the CPU build this project is developed on; on a GPU box
# install the CUDA build of your choice into .venv first and this step leaves it alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${ICHBENCH_TORCH:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e '.[dev]'
# the example third-party method plugins: their tests and a smoke run are part of the suite
.venv/bin/python -m pip install -q -e plugins/ichbench-vicreg -e plugins/ichbench-mae
