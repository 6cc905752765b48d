#!/usr/bin/env bash
# Installs ichbench into .venv and runs the test suite, two workers at a time (pytest-xdist: one
# process per core; a test file stays on one worker, and each worker has its own Ray cluster).
#   bash scripts/test.sh           the full tier: every test but the `long` ones (README, CI)
#   bash scripts/test.sh --fast    the edit-test loop: no `slow` (end-to-end) tests either
#   bash scripts/test.sh --long    everything, five nnU-Net folds included
# Other arguments go to pytest (a later -m replaces the tier's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh
tier=(-m "not long")
case "${1:-}" in
  --fast) tier=(-m "not slow and not long"); shift ;;
  --long) tier=(-m "long or not long"); shift ;;
esac
exec .venv/bin/python -m pytest -n "${ICHBENCH_TEST_WORKERS:-2}" --dist loadfile "${tier[@]}" "$@"
