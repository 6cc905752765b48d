"""`ichbench score` speed (issue 22 §3): one 512 x 512 x 40 volume pair on INSTANCE's 0.42 x 0.42 x 5 mm
grid, on one core.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_speed.py [--repeat 3]

Cases, each timed for the metrics alone (`case_metrics`: Dice/precision/recall, HD, HD95, NSD, mL) and
for the whole command on two NIfTI files (reading, checks, metrics, JSON), median of --repeat:
- bleed: a 60 mL ellipsoid against a prediction shifted 3 voxels, with a far false positive
  (the bounding box spans most of the volume);
- salt 0.2 %: the bleed plus 21 k scattered false-positive voxels (170 k surface corners);
- salt 2 %: 210 k scattered voxels (1.7 M corners; distance transforms of the whole box).
Goal: a volume pair in under 2 s on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (512, 512, 40)                     # file order (x, y, z), as NIfTI stores a CT
AFFINE = np.diag([0.42, 0.42, 5.0, 1.0])


def cases() -> dict:
    x, y, z = np.ogrid[:512, :512, :40]
    bleed = ((x - 200) / 45) ** 2 + ((y - 250) / 60) ** 2 + ((z - 20) / 6) ** 2 < 1
    pred = np.roll(bleed, 3, axis=0)
    pred[450:470, 450:460, 30:33] = True
    rng = np.random.default_rng(0)
    return {"bleed": (pred, bleed),
            "salt 0.2 %": (bleed | (rng.random(SHAPE) < 0.002), bleed),
            "salt 2 %": (bleed | (rng.random(SHAPE) < 0.02), bleed)}


def median_time(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from ichbench.evaluate.surface import case_metrics
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print(f"{'case':<12} {'metrics s':>10} {'command s':>10}   HD95 mm   NSD(1 mm)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pred, truth) in cases().items():
            spacing = (0.42, 0.42, 5.0)
            t_metrics = median_time(lambda: case_metrics(pred, truth, spacing), args.repeat)
            m = case_metrics(pred, truth, spacing)
            folder = Path(tmp) / name.replace(" ", "_").replace("%", "pc")
            for side, mask in (("pred", pred), ("truth", truth)):
                (folder / side).mkdir(parents=True)
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), str(folder / side / "case.nii.gz"))
            cmd = [sys.executable, "-m", "ichbench.cli.main", "score", "--pred", str(folder / "pred"),
                   "--truth", str(folder / "truth"), "--json"]
            t_cmd = median_time(lambda: subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True),
                                args.repeat)
            print(f"{name:<12} {t_metrics:>10.2f} {t_cmd:>10.2f}   {m['hd95_mm']:7.2f}   {m['nsd']:.4f}")


if __name__ == "__main__":
    main()
