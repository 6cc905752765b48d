"""Peak memory of an rsna ingest as the number of slices grows: it should stay flat.

    .venv/bin/python benchmarks/ingest_memory.py [--ns 2000 5000 10000 20000] [--pixels 64]

Writes max(ns) small synthetic CT slices (pixels x pixels, RSNA layout, 40 per series) once;
for each N a folder of hard links to the first N files and their CSV rows is ingested
(selection "all", store size = pixels, workers=1 so everything runs in one process) in a fresh
subprocess, which reports its peak RSS (getrusage ru_maxrss) and its RSS after the imports. The
growth that remains with N is the reader's per-slice metadata (label table, series index: tens
of bytes per slice) and the volumes table; pixels are streamed (at most a shard of 64 slices
plus a decode chunk are held at once).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from ichbench.datasets.base import IngestOptions
from ichbench.datasets.rsna import RsnaDataset
from ichbench.ingest import ingest
from ichbench.store.reader import SliceStore
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
if __name__ == "__main__":
    src, home, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    base = rss_mb()
    t = time.perf_counter()
    [res] = ingest(RsnaDataset(), home, src, options=IngestOptions(size=size, selection="all", holdout=0))
    secs = time.perf_counter() - t
    print(json.dumps({"baseline_mb": base, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "slices": SliceStore(res.path).n_slices, "seconds": secs}))
"""


def write_all(root: Path, n: int, pixels: int) -> list[list]:
    """n slices in root/stage_2_train; returns the CSV rows of each slice."""
    from ichbench.testing.dicom import write_slice
    from ichbench.datasets.rsna import RSNA_COLUMNS

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:pixels, :pixels]
    r = np.hypot(yy - pixels / 2, xx - pixels / 2)
    base = np.full((pixels, pixels), 24.0)                                # air: -1000 HU
    base[r < pixels * 0.42] = 2224.0                                      # skull: 1200 HU
    base[r < pixels * 0.38] = 1056.0                                      # brain: 32 HU
    rows = []
    for i in range(n):
        series, k = divmod(i, 40)
        image = f"ID_{i:09x}"
        raw = np.clip(base + rng.normal(0, 6, base.shape), 0, 4095).astype(np.uint16)
        write_slice(root / "stage_2_train" / f"{image}.dcm", raw, series_uid=f"1.2.826.0.1.3680043.8.498.{series + 1}",
                    position=(0.0, 0.0, 5.0 * k), thickness=None)
        rows.append([[f"{image}_{c}", int((k % 7 == 3) and c in ("any", "subdural"))] for c in RSNA_COLUMNS])
    return rows


def subset(all_dir: Path, rows: list[list], n: int, dest: Path) -> None:
    (dest / "stage_2_train").mkdir(parents=True)
    for i in range(n):
        name = f"ID_{i:09x}.dcm"
        os.link(all_dir / "stage_2_train" / name, dest / "stage_2_train" / name)
    with open(dest / "stage_2_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Label"])
        for r in rows[:n]:
            w.writerows(r)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--pixels", type=int, default=64, help="slice size in pixels (default 64)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="ichbench-mem-bench-"))
    try:
        t = time.perf_counter()
        rows = write_all(tmp / "all", max(args.ns), args.pixels)
        print(f"wrote {max(args.ns)} slices of {args.pixels}x{args.pixels} in {time.perf_counter() - t:.0f} s")
        print(f"{'N':>7} {'peak RSS MB':>12} {'after imports':>14} {'growth MB':>10} {'ingest s':>9}")
        for n in args.ns:
            src = tmp / f"n{n}"
            subset(tmp / "all", rows, n, src)
            out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(tmp / f"home{n}"), str(args.pixels)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            assert m["slices"] == n, m
            print(f"{n:7d} {m['peak_mb']:12.1f} {m['baseline_mb']:14.1f} {m['peak_mb'] - m['baseline_mb']:10.1f}"
                  f" {m['seconds']:9.1f}")
            shutil.rmtree(src)
            shutil.rmtree(tmp / f"home{n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
