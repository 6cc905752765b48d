#!/usr/bin/env bash
# Creates (or reuses) .venv and installs ichbench into it. Run by demo.sh and test.sh.
# torch is installed first, pinned to the CPU build this project is developed on; on a GPU box
# install the CUDA build of your choice into .venv first and this step leaves it alone.
# The install is skipped when nothing it depends on changed since the last one (a stamp of the
# pyproject.toml files and the Python version), so a second run starts the work at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMP=.venv/.ichbench-install-stamp
want=$( (cat pyproject.toml plugins/*/pyproject.toml; "$PY" --version) | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "venv: creating .venv with $("$PY" --version)" >&2
  "$PY" -m venv .venv
fi
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "venv: installing torch ${ICHBENCH_TORCH:-2.13.0} (CPU build)" >&2
  .venv/bin/python -m pip install -q "torch==${ICHBENCH_TORCH:-2.13.0}"
fi
echo "venv: installing ichbench and its dependencies (Ray, MLflow, zarr, pydicom, ...);" \
     "the first time this takes a few minutes" >&2
.venv/bin/python -m pip install -q -e '.[dev]'
# the third-party method plugins in plugins/: their tests and smoke runs are part of the suite.
# ichbench-nnunet brings nnunetv2, which pulls torchvision through timm; left free, pip would
# take the newest torchvision and with it a newer (CUDA) torch in place of the one installed
# above. The installed torch is held as a constraint, so pip picks the torchvision made for it.
echo "venv: installing the plugins (ichbench-vicreg, ichbench-mae, ichbench-nnunet with nnU-Net)" >&2
.venv/bin/python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > .venv/torch-pin.txt
.venv/bin/python -m pip install -q -c .venv/torch-pin.txt \
  -e plugins/ichbench-vicreg -e plugins/ichbench-mae -e plugins/ichbench-nnunet
echo "$want" > "$STAMP"
echo "venv: ready" >&2
