"""Batched on-device augmentation vs per-sample CPU augmentation, on the same batch in one run.

    .venv/bin/python benchmarks/augment.py                      # batch 64 at 256x256, CPU
    .venv/bin/python benchmarks/augment.py --device cuda --batch 256 --json $OUT/augment.json

Both sides apply the paper's fine-tuning augmentation (§2.3.2) to images and their masks:
- batched: `ichbench.transforms.random_affine`, one affine_grid + grid_sample per batch on
  `--device` (tensors already there, as in the training loop);
- per-sample: `random_affine_per_sample_cpu`, scipy.ndimage one image at a time, what a
  DataLoader transform does (images bilinear, masks nearest).
Prints images/s of each and their ratio (goal ≥ 3× on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ichbench.testing.reference_augment import random_affine_per_sample_cpu
from ichbench.transforms import random_affine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(batched, per_sample, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best wall time of each side over `repeats` interleaved rounds, after one warm-up call each.

    Interleaved so both sides see the same load (the machine may be shared); best, not mean, for
    the same reason.
    """
    def once(fn):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    once(batched), once(per_sample)
    best_b = best_p = float("inf")
    for _ in range(repeats):
        best_b = min(best_b, once(batched))
        best_p = min(best_p, once(per_sample))
    return best_b, best_p


def make_batch(batch: int, size: int, channels: int, seed: int = 0):
    """Head-like test batch: a bright disc with a smaller 'hemorrhage' disc as the mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    images = np.empty((batch, channels, size, size), np.float32)
    masks = np.empty((batch, 1, size, size), bool)
    for i in range(batch):
        cy, cx = rng.uniform(-0.15, 0.15, 2)
        masks[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.01
        head = ((yy ** 2 + xx ** 2) < 0.16).astype(np.float32) * 0.5
        images[i] = np.clip(head + masks[i, 0] * 0.4 + rng.normal(0, 0.02, (size, size)), 0, 1)
    return images, masks


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=1, help="image channels (e.g. 2 with a brain mask stacked)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs both versions once)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))

    images_np, masks_np = make_batch(args.batch, args.size, args.channels)
    images = torch.from_numpy(images_np).to(device)
    masks = torch.from_numpy(masks_np).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)

    t_batched, t_cpu = time_pair(lambda: random_affine(images, masks, generator=gen),
                                 lambda: random_affine_per_sample_cpu(images_np, masks_np, rng=rng),
                                 args.repeats, device)

    res = {
        "batch": args.batch, "size": args.size, "channels": args.channels, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "batched_img_per_s": args.batch / t_batched,
        "per_sample_cpu_img_per_s": args.batch / t_cpu,
    }
    res["speedup"] = res["batched_img_per_s"] / res["per_sample_cpu_img_per_s"]
    print(f"augment  batch {args.batch}  {args.size}x{args.size}  channels {args.channels}  "
          f"torch threads {res['torch_threads']}")
    print(f"  batched on {res['device']:<6}  {res['batched_img_per_s']:10.1f} img/s  ({t_batched * 1e3:.1f} ms/batch)")
    print(f"  per-sample CPU    {res['per_sample_cpu_img_per_s']:10.1f} img/s  ({t_cpu * 1e3:.1f} ms/batch)")
    print(f"  speedup           {res['speedup']:10.2f}x  (goal >= 3x on CPU)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
