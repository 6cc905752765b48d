#!/usr/bin/env bash
# The main job on the embedded default: generate the phantom dataset, ingest it, summarise it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh
export ICHBENCH_HOME=${ICHBENCH_HOME:-$PWD/.ichbench}
.venv/bin/ichbench data ingest phantom
.venv/bin/ichbench data splits phantom --k 5
