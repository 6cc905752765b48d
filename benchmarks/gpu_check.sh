#!/usr/bin/env bash
# The GPU checks of issue 3 in one go, for a lent accelerator: training-step throughput (eager /
# channels_last / compile at batch 16, 64, 256, bf16 autocast), batched augmentation vs per-sample
# CPU augmentation, the fine-tuning data path (sampler, gather, window, on-device augmentation)
# beside the bare step (issue 10: it may cost at most 10 %), k fold-like runs sharing the GPU vs
# sequential, and any tests marked `gpu`. Each stage has its own time limit so the whole script
# ends within 9 minutes; a stage that fails or times out is recorded and the next one runs.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # run from the repository root
#
# Needs only torch, numpy, scipy, pluggy, typer and rich: it runs from the source tree
# (PYTHONPATH=.) without installing ichbench, and imports nothing of the data stack
# (zarr, pydicom, nibabel, ray, mlflow). Results: $OUT/*.json, $OUT/*.txt, $OUT/summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}                  # DEVICE=cpu TRAIN_STEP_ARGS="--batches 2 --size 64" tries it on a CPU
TRAIN_STEP_ARGS=${TRAIN_STEP_ARGS:-}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
start=$(date +%s)

stage() {  # stage NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    local status=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out after ${limit}s"
    [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
    echo "$name: $status in $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY"
    tail -n 8 "$OUT/$name.txt"
}

{
    nvidia-smi || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# ~20 s of eager/channels_last runs, then three compilations of the U-Net (one per batch size);
# the JSON is rewritten after each measurement, so a timeout keeps what finished.
# shellcheck disable=SC2086
stage train_step 240 "$PY" benchmarks/train_step.py --device "$DEVICE" --json "$OUT/train_step.json" $TRAIN_STEP_ARGS
stage augment 60 "$PY" benchmarks/augment.py --device "$DEVICE" --batch 256 --json "$OUT/augment.json"
stage augment_cpu 30 "$PY" benchmarks/augment.py --device cpu --batch 64 --json "$OUT/augment_cpu.json"
# the real data path (arrays placed on the GPU, and kept on the host) vs the bare step, batch 64
stage data_path 75 "$PY" benchmarks/data_path.py --device "$DEVICE" --json "$OUT/data_path.json"
# 2.5D inputs (issue 24): a 3-slice, 3-window batch beside the 1x1 one through the same data path
# (no network), at the paper's 256² and batch 64; goal >= 0.8x of the 1x1 images/s
stage input_channels 60 "$PY" benchmarks/input_channels.py --device "$DEVICE" --size 256 --batch 64 --slices 2048 \
    --json "$OUT/input_channels.json"
# k fold-like runs sharing the one GPU (what --gpus-per-fold 1/k does) vs one after another
stage gpu_share 60 "$PY" benchmarks/gpu_share.py --device "$DEVICE" --folds 5 --steps 40 --json "$OUT/gpu_share.json"

# GPU tests: only the files that carry the marker are collected, so test modules that need the
# data stack are never imported here.
gpu_tests=$(grep -l "pytest.mark.gpu" tests/test_*.py 2>/dev/null || true)
if [ -z "$gpu_tests" ]; then
    echo "gpu tests: none marked" | tee -a "$SUMMARY"
elif ! "$PY" -c "import pytest" 2>/dev/null; then
    echo "gpu tests: skipped (pytest not installed)" | tee -a "$SUMMARY"
else
    # shellcheck disable=SC2086
    stage gpu_tests 60 "$PY" -m pytest -m gpu -q -p no:cacheprovider $gpu_tests
fi
echo "total: $(( $(date +%s) - start ))s; results in $OUT" | tee -a "$SUMMARY"
# The device tool returns at most 8 files: keep the JSONs and the summary, pack the logs.
(cd "$OUT" && tar czf logs.tar.gz --exclude=./summary.txt ./*.txt && find . -maxdepth 1 -name "*.txt" ! -name summary.txt -delete)
