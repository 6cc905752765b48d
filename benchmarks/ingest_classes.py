"""Ingest cost of the per-voxel class array, side by side with the binary mask on the same volumes.

    .venv/bin/python benchmarks/ingest_classes.py [--n 8] [--slices 32] [--native 512] [--size 256] [--repeat 2]

Writes N BHSD-shaped volumes (int16 CT with scl_slope/scl_inter, uint8 label maps holding one to
three of the five classes in blobs on a third of the slices) to a temporary folder, then ingests
the same files twice per repeat, alternating:
  binary   the bhsd reader with class_names=None: the store keeps the mask only (format 2)
  classes  the bhsd reader as shipped: mask + `classes` array (format 3)
Both read the same label files the same way, so the difference is what keeping the classes costs:
the per-class area resampling (`resize_classes`) and writing one more uint8 array. The goal
(issue 23): classes <= 1.2x binary. Reported: the best wall time of each over the repeats, and the
resampling alone per volume (resize_mask, then resize_classes given that mask, as ingest does).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ichbench.datasets.base import IngestOptions  # noqa: E402
from ichbench.datasets.bhsd import BhsdDataset  # noqa: E402
from ichbench.ingest import ingest  # noqa: E402
from ichbench.preprocess.resize import resize_classes, resize_mask  # noqa: E402


class BinaryBhsd(BhsdDataset):
    class_names = None


def volume(rng, slices: int, native: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:native, :native]
    r = np.hypot(yy - native / 2, xx - native / 2) / (native / 2)
    hu = np.where(r < 0.8, 35.0, np.where(r < 0.9, 1200.0, -1000.0))
    hu = np.repeat(hu[None], slices, 0) + rng.normal(0, 8, (slices, native, native))
    labels = np.zeros((slices, native, native), np.uint8)
    for c in rng.choice(np.arange(1, 6), size=rng.integers(1, 4), replace=False):
        z0 = rng.integers(0, slices - slices // 3)
        cy, cx = rng.integers(native // 4, 3 * native // 4, 2)
        blob = np.hypot(yy - cy, xx - cx) < rng.uniform(0.05, 0.15) * native
        labels[z0:z0 + slices // 3][:, blob] = c
    return np.rint(hu), labels


def write_corpus(root: Path, n: int, slices: int, native: int) -> None:
    rng = np.random.default_rng(0)
    aff = np.diag([-0.45, 0.45, 5.0, 1.0])
    for i in range(n):
        hu, labels = volume(rng, slices, native)
        img = nib.Nifti1Image((hu.transpose(2, 1, 0) + 1024).astype(np.int16), aff)
        img.header.set_slope_inter(1.0, -1024.0)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "ground truths").mkdir(parents=True, exist_ok=True)
        nib.save(img, str(root / "images" / f"ID_{i:03d}_ID_{i:03d}.nii.gz"))
        label_path = root / "ground truths" / f"ID_{i:03d}_ID_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(labels.transpose(2, 1, 0), aff), str(label_path))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--native", type=int, default=512)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ichbench-classes-"))
    try:
        write_corpus(tmp / "src", a.n, a.slices, a.native)
        best = {"binary": float("inf"), "classes": float("inf")}
        for r in range(a.repeat):
            for name, ds in (("binary", BinaryBhsd()), ("classes", BhsdDataset())):
                home = tmp / f"home-{name}-{r}"
                t0 = time.perf_counter()
                ingest(ds, home, tmp / "src", roles=["segmentation"], options=IngestOptions(size=a.size), force=True)
                best[name] = min(best[name], time.perf_counter() - t0)
                shutil.rmtree(home)
        rng = np.random.default_rng(1)
        _, labels = volume(rng, a.slices, a.native)
        t0 = time.perf_counter()
        mask = resize_mask(labels > 0, a.size)
        t_mask = time.perf_counter() - t0
        t0 = time.perf_counter()
        resize_classes(labels, a.size, mask)   # as ingest calls it: the resized mask given
        t_classes = time.perf_counter() - t0
        print(f"{a.n} volumes of {a.slices} x {a.native}^2 -> {a.size}^2, best of {a.repeat}")
        print(f"  ingest binary   {best['binary']:.2f} s")
        ratio = best["classes"] / best["binary"]
        print(f"  ingest classes  {best['classes']:.2f} s   ({ratio:.2f}x binary; goal <= 1.2x)")
        print(f"  resample one volume: mask {t_mask * 1e3:.0f} ms, then classes {t_classes * 1e3:.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
