"""Measure how far a re-run of the same smoke fold lands from the first run, per volume.

The leaderboard's `reproduce` compares per-volume Dice within a tolerance; this script measures the
run-to-run spread that tolerance has to cover. It ingests a phantom, then fine-tunes one fold of
`--method` in fresh processes under each numerics variant (intra-op threads, ATen's vector ISA via
ATEN_CPU_CAPABILITY), twice for the reference variant, and prints the per-volume Dice deltas
against the reference run as JSON.

    .venv/bin/python scripts/reproduce_spread.py --volumes 15 --k 5 --out spread-15.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {  # name -> (threads, ATEN_CPU_CAPABILITY or None)
    "1 thread, native ISA": (1, None),
    "1 thread, native ISA (again)": (1, None),
    "2 threads, native ISA": (2, None),
    "1 thread, avx2": (1, "avx2"),
    "1 thread, plain C": (1, "default"),
}


def one_run(home: str, method: str, k: int, fold: int, out: str) -> None:
    from ichbench.resolve import resolve
    from ichbench.splits import split_for_store
    from ichbench.store import open_store, store_path
    from ichbench.train.engine import finetune
    path = store_path(Path(home), "phantom", "segmentation")
    split = split_for_store(open_store(path), k)
    cfg = resolve(method, "phantom", "smoke", [])
    res = finetune(method, path, split, fold, cfg, Path(out), device="cpu", progress=False)
    numerics = {"cpu_threads": res["cpu_threads"], "cpu_capability": res["cpu_capability"]}
    print(json.dumps({"numerics": numerics,
                      "predictions_sha256": res["predictions_sha256"],
                      "dice": {v["volume_id"]: v["dice"] for v in res["volumes"]}}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=15)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--method", default="unet_mixed")
    ap.add_argument("--out", default=None)
    ap.add_argument("--variants", default=None,
                    help="comma list of variant numbers (0-based; default all)")
    ap.add_argument("--one", nargs=2, metavar=("HOME", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one_run(a.one[0], a.method, a.k, a.fold, a.one[1])
    from ichbench.datasets.base import SEGMENTATION, IngestOptions, get_dataset
    from ichbench.ingest import ingest
    tmp = Path(tempfile.mkdtemp(prefix="ichbench-spread-"))
    ingest(get_dataset("phantom"), tmp, roles=[SEGMENTATION], options=IngestOptions(
        size=64,
        extra={"volumes": a.volumes, "slices": 16, "native_size": 64, "pretrain_volumes": 1}))
    runs = {}
    chosen = {int(x) for x in a.variants.split(",")} if a.variants else set(range(len(VARIANTS)))
    for i, (name, (threads, isa)) in enumerate(VARIANTS.items()):
        if i not in chosen and i != 0:
            continue
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if isa:
            env["ATEN_CPU_CAPABILITY"] = isa
        cmd = [sys.executable, __file__, "--method", a.method, "--k", str(a.k),
               "--fold", str(a.fold),
               "--one", str(tmp), str(tmp / f"run{i}")]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        runs[name] = json.loads(out.strip().splitlines()[-1])
        print(f"{name}: {runs[name]['numerics']}", file=sys.stderr)
        if a.out:   # what is measured so far survives an interrupted run
            Path(a.out + ".partial").write_text(json.dumps(runs, indent=2) + "\n")
    ref = runs[next(iter(VARIANTS))]
    report = {"method": a.method, "volumes": a.volumes, "k": a.k, "fold": a.fold, "variants": {}}
    for name, r in runs.items():
        deltas = {v: r["dice"][v] - ref["dice"][v] for v in ref["dice"]}
        n = len(deltas)
        report["variants"][name] = {
            "numerics": r["numerics"],
            "identical_predictions": r["predictions_sha256"] == ref["predictions_sha256"],
            "max_abs_delta": max(abs(d) for d in deltas.values()),
            "mean_delta": sum(deltas.values()) / n,
            "mean_dice": sum(r["dice"].values()) / n,
            "deltas": {v: round(d, 4) for v, d in deltas.items()}}
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
