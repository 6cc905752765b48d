"""k folds in parallel on Ray vs one after another, same machine, same run; and Ray's overhead
per fold (scheduling + worker start) against the fold's own compute.

    .venv/bin/python benchmarks/folds.py [--folds 2] [--epochs 3] [--steps 6] [--gpus-per-fold F]

Uses a small phantom in a temporary ICHBENCH_HOME (smoke profile). On a GPU machine pass
--gpus-per-fold (e.g. 0.5) to measure k folds sharing one GPU vs sequential.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--gpus-per-fold", type=float, default=None)
    ap.add_argument("--home", type=Path, default=None)
    args = ap.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="ichbench-folds-"))
    os.environ["ICHBENCH_HOME"] = str(home)
    import ray
    import torch

    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.orchestrate.cluster import connect, default_gpus_per_fold
    from ichbench.orchestrate.plan import plan_method
    from ichbench.orchestrate.tasks import finetune_task
    from ichbench.ingest import ingest

    settings = {"volumes": 10, "slices": 12, "native_size": 64, "pretrain_volumes": 2}
    ingest(get_dataset("phantom"), home, options=IngestOptions(size=64, extra=settings))
    res = connect()
    gpf = args.gpus_per_fold if args.gpus_per_fold is not None else default_gpus_per_fold(res.get("GPU", 0), args.folds)
    folds = list(range(args.folds))
    overrides = [f"finetune.epochs={args.epochs}", f"finetune.steps_per_epoch={args.steps}"]

    def submit(plan, fold, tag):
        return finetune_task.options(num_gpus=gpf, num_cpus=1).remote(
            plan.method, str(plan.store.path), plan.split, fold, plan.cfg, str(home / tag / f"fold_{fold}"), None)

    plan = plan_method("unet_mixed", "phantom", "smoke", home, folds=folds, k=max(2, args.folds), overrides=overrides)
    ray.get(submit(plan, 0, "warmup"))  # start one worker and import torch once, outside the timing

    t0 = time.perf_counter()
    seq = [ray.get(submit(plan, f, "sequential")) for f in folds]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    par = ray.get([submit(plan, f, "parallel") for f in folds])
    t_par = time.perf_counter() - t0

    compute = [r["train_seconds"] for r in seq]
    overhead = [w - c for w, c in zip((r["wall_seconds"] for r in seq), compute)]
    per_task_rt = (t_seq - sum(r["wall_seconds"] for r in seq)) / len(seq)
    device = "cuda " + torch.cuda.get_device_name(0) if res.get("GPU") else f"cpu x{int(res.get('CPU', 0))}"
    print(f"device: {device}; gpus per fold: {gpf:g}; folds: {args.folds}; epochs {args.epochs} x {args.steps} steps")
    print(f"sequential: {t_seq:8.2f} s   parallel: {t_par:8.2f} s   speed-up: {t_seq / t_par:5.2f}x")
    print(f"per fold: training {sum(compute) / len(compute):.2f} s; in-task setup (store load, model, eval) "
          f"{sum(overhead) / len(overhead):.2f} s; Ray round trip (schedule + return) {per_task_rt:.3f} s")
    same = all(a["summary"] == b["summary"] for a, b in zip(seq, par))
    print(f"parallel results identical to sequential: {same}")


if __name__ == "__main__":
    main()
