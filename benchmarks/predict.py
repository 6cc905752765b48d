"""`ichbench predict` on one 40-slice head CT series: seconds spent reading, in inference and
writing the outputs, with one fold model and with the five of a paper-profile run.

    .venv/bin/python benchmarks/predict.py [--size 512] [--slices 40] [--device cpu]

The series is a phantom head written as real DICOM files (512x512 like a scanner's, uint16 with a
rescale); the fold models are the paper profile's unet_mixed U-Net (5.4 M parameters, 256x256)
with random weights, which cost exactly what trained ones do. Reading = DICOM parse and HU;
inference = resampling to 256x256, the U-Net(s), the mean probability and the resampling back;
writing = mask.nii.gz, the DICOM SEG, report.json and overlay.png.
Goal (issue 11): reading and writing together <= inference time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def fold_models(folder: Path, n: int) -> list[Path]:
    from ichbench.resolve import resolve
    from ichbench.methods.base import get_method
    from ichbench.models.unet import unet_for
    from ichbench.train.engine import save_model
    cfg = resolve("unet_mixed", "segcq500", "paper", [])
    paths = []
    for fold in range(n):
        torch.manual_seed(fold)
        paths.append(save_model(folder / f"fold_{fold}" / "model.pt", unet_for(cfg.model),
                                get_method("unet_mixed"), cfg, fold, cfg.finetune.image_size))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from ichbench.datasets.phantom.files import write_series
    from ichbench.datasets.phantom.generator import generate_volume
    from ichbench.predict import load_ensemble, predict_scan, read_scan, write_outputs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_series(generate_volume(7, slices=args.slices, size=args.size), tmp / "series")
        models = fold_models(tmp / "models", 5)
        print(f"{args.slices} slices of {args.size}x{args.size}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}; best of {args.repeat}\n")
        print(f"{'fold models':<13}{'read':>9}{'inference':>12}{'write':>9}{'read+write / inference':>26}")
        for n in (1, 5):
            ens = load_ensemble(checkpoints=models[:n])
            best = {"read": 1e9, "inference": 1e9, "write": 1e9}
            for i in range(args.repeat):
                t0 = time.perf_counter()
                scan = read_scan(tmp / "series")
                t1 = time.perf_counter()
                pred = predict_scan(ens, scan, args.device)
                t2 = time.perf_counter()
                write_outputs(tmp / f"out_{n}_{i}", scan, pred, ens)
                t3 = time.perf_counter()
                for k, v in zip(best, (t1 - t0, t2 - t1, t3 - t2)):
                    best[k] = min(best[k], v)
            ratio = (best["read"] + best["write"]) / best["inference"]
            print(f"{n:<13}{best['read']:>8.2f}s{best['inference']:>11.2f}s{best['write']:>8.2f}s"
                  f"{ratio:>25.2f}x")


if __name__ == "__main__":
    main()
