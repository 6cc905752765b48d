"""Ingest throughput: rsna ingest with 1 and 2 workers vs bare pydicom decode of the same files.

    .venv/bin/python benchmarks/ingest.py [--n 300] [--size 256] [--workers 1 2]

Writes N synthetic 512x512 head-like CT slices (uncompressed, RSNA layout: flat ID_*.dcm files,
the label CSV, 40 slices per series) to a temporary folder, then measures on the same files:
  bare     pydicom.dcmread(path).pixel_array, one process
  ingest   ichbench.ingest.ingest(RsnaDataset(), ..., selection="all", workers=W)
           (headers, decode, HU, resize, compress, hash, write, fingerprint)
workers=1 runs in this process, so its rate is the per-core rate; the goal is >= 0.8x bare, and
2 workers >= 1.7x 1 worker on a quiet 2-core machine. With W > 1 the workers read the headers,
then decode, resample and write whole image shards (`ichbench.ingest.planned`); the driver's CPU
time per slice (labels, volumes table, metadata; no pixels) is what is left unparallelised, and
the CPU of all processes shows what parallelism costs on top; unlike the rates, CPU times hardly
depend on what else the machine runs.
The worker pool's one-off start-up is timed apart from the ingest rates.
A per-stage breakdown (single process, per slice) shows where ingest time goes.
Files are read once beforehand so every measurement sees a warm page cache.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def head_slice(rng, k: int, size: int = 512) -> np.ndarray:
    """Stored values (HU + 1024) of a synthetic axial head slice: air, skull ring, brain, noise."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2) / 0.85, xx - size / 2)
    hu = np.full((size, size), -1000.0)
    outer = size * (0.42 - 0.002 * abs(k - 20))
    hu[r < outer] = 1200.0
    hu[r < outer - 12] = 32.0
    hu[np.hypot(yy - size / 2, xx - size / 2 - 30) < 25] = 8.0          # a ventricle
    hu += rng.normal(0, 6, hu.shape)
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)


def make_source(root: Path, n: int, seed: int = 0) -> list[Path]:
    from ichbench.testing.dicom import write_slice
    from ichbench.datasets.rsna import RSNA_COLUMNS

    rng = np.random.default_rng(seed)
    img_dir = root / "stage_2_train"
    rows, paths = [], []
    for i in range(n):
        series, k = divmod(i, 40)
        image = f"ID_{i:09x}"
        p = write_slice(img_dir / f"{image}.dcm", head_slice(rng, k),
                        series_uid=f"1.2.826.0.1.3680043.8.498.{series + 1}",
                        position=(-128.0, -128.0, 5.0 * k), spacing=(0.5, 0.5), thickness=None)
        paths.append(p)
        ich = (k % 7) == 3
        rows += [[f"{image}_{c}", int(ich and c in ("any", "subdural"))] for c in RSNA_COLUMNS]
    with open(root / "stage_2_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Label"])
        w.writerows(rows)
    return paths


def bare_decode(paths) -> float:
    import pydicom
    t = time.perf_counter()
    for p in paths:
        pydicom.dcmread(str(p)).pixel_array
    return time.perf_counter() - t


def _children_cpu() -> dict[int, float]:
    """CPU seconds so far of every process below this one (the pools' workers, the fork server)."""
    import psutil
    out = {}
    for c in psutil.Process().children(recursive=True):
        try:
            t = c.cpu_times()
            out[c.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def run_ingest(src: Path, home: Path, size: int, workers: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, CPU seconds of all processes) of one forced
    ingest. Workers exit with their pool, so their CPU is sampled while it runs (every 0.1 s)."""
    from ichbench.datasets.base import IngestOptions
    from ichbench.datasets.rsna import RsnaDataset
    from ichbench.ingest import ingest

    base, seen, done = _children_cpu(), {}, threading.Event()

    def sample():
        while not done.is_set():
            seen.update(_children_cpu())
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t, cpu = time.perf_counter(), time.process_time()
    try:
        ingest(RsnaDataset(), home, src, options=IngestOptions(size=size, selection="all", holdout=0,
                                                               workers=workers), force=True)
    finally:
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        done.set()
        sampler.join()
    return wall, cpu, cpu + sum(v - base.get(pid, 0.0) for pid, v in seen.items())


def breakdown(paths, size: int) -> dict[str, float]:
    """Seconds per slice of each ingest stage, run one after the other in this process."""
    from ichbench.datasets.dicom_io import read_slice
    from ichbench.preprocess.brain import ClassicalBrainMasker
    from ichbench.preprocess.resize import resize_slices

    out = {}
    t = time.perf_counter()
    for p in paths:
        read_slice(p, pixels=False)
    out["header pass (read_slice pixels=False)"] = time.perf_counter() - t
    t = time.perf_counter()
    hus = [read_slice(p).hu for p in paths[:64]]
    out["decode + HU (read_slice)"] = (time.perf_counter() - t) * len(paths) / len(hus)
    t = time.perf_counter()
    small = [resize_slices(h[None], size) for h in hus]
    out[f"resize 512->{size} (resize_slices)"] = (time.perf_counter() - t) * len(paths) / len(hus)
    masker = ClassicalBrainMasker()
    t = time.perf_counter()
    for s in small:
        masker(s.astype(np.float32))
    out["brain mask (ClassicalBrainMasker)"] = (time.perf_counter() - t) * len(paths) / len(small)
    return {k: v / len(paths) for k, v in out.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="synthetic 512x512 slices (default 300)")
    ap.add_argument("--size", type=int, default=256, help="store size (default 256)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads in this process (default: torch's own choice)")
    args = ap.parse_args(argv)
    import torch
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    tmp = Path(tempfile.mkdtemp(prefix="ichbench-ingest-bench-"))
    src = args.keep or tmp / "rsna"
    try:
        t = time.perf_counter()
        paths = make_source(src, args.n)
        print(f"wrote {args.n} slices of 512x512 in {time.perf_counter() - t:.1f} s "
              f"({sum(p.stat().st_size for p in paths) / 2**20:.0f} MiB) to {src}")
        for p in paths:                      # warm the page cache for every measurement alike
            p.read_bytes()
        bare = bare_decode(paths)
        bare_rate = args.n / bare
        print(f"cores: {os.cpu_count()}  python {sys.version.split()[0]}  torch threads: {torch.get_num_threads()}")
        print(f"bare pydicom decode        : {bare_rate:8.1f} slices/s (1 process)")
        if max(args.workers) > 1:
            # The fork server is started (and imports the reader's modules, torch included)
            # once per process; time it apart, so the rates below are the steady state that
            # a 752k-slice ingest sees.
            from ichbench.parallel import OrderedPool
            t = time.perf_counter()
            with OrderedPool(max(args.workers), preload=("ichbench.datasets.rsna", "ichbench.preprocess.resize",
                                                         "ichbench.store.writer", "ichbench.ingest.planned")) as pool:
                list(pool.map(abs, range(64)))
            print(f"worker pool start-up (once per process): {time.perf_counter() - t:.1f} s")
        rates = {}
        for w in args.workers:
            secs, cpu, total = run_ingest(src, tmp / f"home{w}", args.size, w)
            rates[w] = args.n / secs
            extra = "" if w == 1 else f"   speed-up vs workers=1: {rates[w] / rates.get(1, rates[w]):.2f}x"
            print(f"rsna ingest, workers={w:<2}   : {rates[w]:8.1f} slices/s"
                  f"   ({rates[w] / bare_rate:.2f}x bare){extra}")
            print(f"    CPU ms/slice: driver {cpu / args.n * 1e3:.2f}, all processes {total / args.n * 1e3:.2f}")
        if 1 in rates:
            print(f"per-core ratio (workers=1 ingest / bare decode): {rates[1] / bare_rate:.2f}x  (goal >= 0.8x)")
        if 1 in rates and 2 in rates:
            print(f"scaling (workers=2 / workers=1): {rates[2] / rates[1]:.2f}x  (goal >= 1.7x, quiet 2-core machine)")
        print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("stage breakdown, ms per slice (single process):")
        for k, v in breakdown(paths, args.size).items():
            print(f"  {k:42s} {v * 1e3:7.2f}")
        print(f"  {'bare pydicom decode':42s} {bare / args.n * 1e3:7.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
