"""One copy of a store per node (issue 10 §2): memory of k fold workers loading one store.

    PYTHONPATH=. .venv/bin/python benchmarks/shared_store.py [--slices 4096] [--k 5]

Writes a synthetic store (256x256 images and masks, StoreWriter directly, no DICOMs), then starts
k plain worker processes twice: once reading the store the old way (ICHBENCH_NODE_CACHE=off,
every worker its own copy) and once through an empty node cache (the first worker builds it, all
map it). Plain processes, not Ray tasks: Ray's raylet, object store and worker pool have memory of
their own that would blur the figure, and a fold task calls the same `load_store`.

Each worker imports torch and ichbench, waits until all are idle (their PSS then is the baseline),
calls `load_store` (images, labels, volume, masks; as a fold does), touches every byte, and waits
until all have loaded; then every worker's PSS is read at once. Memory attributable to the store
= sum of PSS loaded - sum of PSS idle, shown as a multiple of the store's in-memory size. PSS,
not RSS: a page mapped by k processes counts 1/k in each one's PSS but fully in each one's RSS, so
summed RSS would count the one shared copy k times (shown too, as the sum of peak RSS, VmHWM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("images", "labels", "volume", "masks")


def build_store(path: Path, n: int, size: int, per_volume: int = 32) -> None:
    from ichbench.store.writer import StoreWriter
    rng = np.random.default_rng(0)
    w = StoreWriter(path, size=size, with_masks=True, with_brain=False)
    for v in range(0, n, per_volume):
        m = min(per_volume, n - v)
        images = rng.normal(30, 20, (m, size, size)).astype(np.int16)
        masks = (images > 60).astype(np.uint8)
        labels = np.zeros((m, 7), np.uint8)
        labels[:, 1] = masks.reshape(m, -1).any(1)
        labels[:, 0] = 1 - labels[:, 1]
        w.add({"id": f"V{v // per_volume:04d}", "spacing": [5.0, 1.0, 1.0], "has_ich": True}, images, labels, masks)
    w.close({"dataset": "bench"}, {"size": size})


def worker(store: str, image_size: int) -> None:
    """Child: idle -> load -> hold, stepping on 'go' lines from the parent."""
    import torch  # noqa: F401 - torch and zarr are part of an idle fold worker's baseline
    import ichbench.store.reader  # noqa: F401
    from ichbench.train.data import load_store
    print("idle", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    arrays = load_store(Path(store), image_size, names=NAMES)
    # every page resident; summed in blocks, as a whole-tensor sum would allocate an int64 copy
    touched = sum(int(t[i:i + 64].sum()) for t in (arrays.images, arrays.masks) for i in range(0, len(t), 64))
    print(f"loaded {time.perf_counter() - t:.2f} {arrays.nbytes()} {touched}", flush=True)
    sys.stdin.readline()


def pss(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_full_info().pss


def hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run(mode: str, store: Path, k: int, image_size: int, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "ICHBENCH_NODE_CACHE": "off" if mode == "own copy" else str(cache)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(store), str(image_size)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "idle"
        idle = [pss(p.pid) for p in procs]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        done = [p.stdout.readline().split() for p in procs]
        loaded = [pss(p.pid) for p in procs]
        peaks = [hwm(p.pid) for p in procs]
        for p in procs:
            p.stdin.write("exit\n")
            p.stdin.flush()
    finally:
        for p in procs:
            p.wait(timeout=120)
    nbytes = int(done[0][2])
    assert len({d[3] for d in done}) == 1, "workers saw different data"
    return {"mode": mode, "store": nbytes, "idle": sum(idle), "loaded": sum(loaded),
            "attributable": sum(loaded) - sum(idle), "peak_rss": sum(peaks),
            "load_s": [float(d[1]) for d in done]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=4096, help="slices in the store (default 4096: ~0.8 GB)")
    ap.add_argument("--size", type=int, default=256, help="store and training image size (default 256)")
    ap.add_argument("--k", type=int, default=5, help="parallel fold workers (default 5)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]))
    tmp = Path(tempfile.mkdtemp(prefix="ichbench-shared-"))
    try:
        t = time.perf_counter()
        build_store(tmp / "store.zarr", args.slices, args.size)
        print(f"store: {args.slices} slices at {args.size}², written in {time.perf_counter() - t:.0f} s")
        rows = [run(mode, tmp / "store.zarr", args.k, args.size, tmp / "cache")
                for mode in ("own copy", "node cache")]
        gib = 2 ** 30
        print(f"k = {args.k} workers; store in memory {rows[0]['store'] / gib:.2f} GiB; load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{'mode':<11} {'Σ PSS idle':>11} {'Σ PSS loaded':>13} {'attributable':>13} {'× store':>8} "
              f"{'Σ peak RSS':>11}  load s (per worker)")
        for r in rows:
            print(f"{r['mode']:<11} {r['idle'] / gib:>9.2f} G {r['loaded'] / gib:>11.2f} G "
                  f"{r['attributable'] / gib:>11.2f} G {r['attributable'] / r['store']:>8.2f} "
                  f"{r['peak_rss'] / gib:>9.2f} G  {' '.join(f'{s:.1f}' for s in r['load_s'])}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
