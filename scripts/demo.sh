#!/usr/bin/env bash
# The main job on the embedded default: generate and ingest the phantom dataset (summary printed),
# then a full smoke benchmark of multilabel_dl on it (Ray + MLflow), ending with the results table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh
export ICHBENCH_HOME=${ICHBENCH_HOME:-$PWD/.ichbench}
.venv/bin/ichbench data ingest phantom
.venv/bin/ichbench run --method multilabel_dl --dataset phantom --profile smoke
