#!/usr/bin/env bash
# Installs ichbench into .venv and runs the default test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
