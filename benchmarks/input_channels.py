"""2.5D inputs through the fine-tuning data path (issue 24): a 3-slice, 3-window batch beside
today's 1-slice, 1-window batch, in one process, the network left out.

    PYTHONPATH=. python benchmarks/input_channels.py                      # CPU, 64² batches of 16
    PYTHONPATH=. python benchmarks/input_channels.py --device cuda --size 256 --batch 64 --json out.json

Each step does what `train.engine.finetune` does for a batch before the network: draw indices
with the Mixed pool and `EpochSampler`, gather the rows (with their neighbours, by one index, for
2.5D) and masks from `SliceArrays` where they live, window them (every window in one op), and
apply the on-device affine augmentation. "gather+window" stops before the augmentation, whose
bilinear resampling costs per channel. The modes alternate batch by batch and every batch is
timed: the figure is the batch size over the median batch time, which a burst of load on a shared
machine moves little. Issue 24's goal: 3x3 >= 0.8x of 1x1's images/s. "1x1 before" is the call the
engine made before 2.5D inputs existed (`windowed(gather(...))`), beside today's 1x1 (`batch_images`).

Imports only torch and ichbench's training modules (no pydantic, zarr or ray).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_path import PAPER_AUGMENT, synthetic_arrays  # noqa: E402

from ichbench.train.data import EpochSampler, finetune_pool, place, windowed, with_channels  # noqa: E402
from ichbench.train.device import batch_images, gather  # noqa: E402
from ichbench.transforms import augment_batch  # noqa: E402

INPUTS = {"1x1": (0, [(-50.0, 150.0)]),
          "3x3": (1, [(-50.0, 150.0), (0.0, 80.0), (-800.0, 2000.0)])}   # the paper's; brain L40/W80; bone L600/W2800


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_fn(arrays, device, augment: bool, gen, before: bool = False):
    def step(idx):
        # before: the call the engine made before 2.5D inputs existed (the 1x1 path must not slow down)
        images = windowed(gather(arrays.images, idx, device)) if before else batch_images(arrays, idx, device)
        masks = gather(arrays.masks, idx, device)[:, None].float()
        if augment:
            images, masks = augment_batch(images, masks, PAPER_AUGMENT, gen)
        return images
    return step


def run(args) -> dict:
    device = torch.device(args.device)
    base = synthetic_arrays(args.slices, args.size)
    sampler = EpochSampler(finetune_pool(base, torch.arange(len(base)), "mixed", 2.0), args.batch, None,
                           torch.Generator().manual_seed(0))
    batches = []
    while len(batches) < args.steps:
        batches += sampler.epoch()
    batches = batches[:args.steps]
    modes = {}
    for name, (context, windows) in INPUTS.items():
        arrays = synthetic_arrays(args.slices, args.size)
        with_channels(arrays, context, windows)
        arrays = place(arrays, device, fraction=1.0)
        modes[name] = arrays
    out = {"info": {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "size": args.size, "batch": args.batch,
                    "steps": args.steps, "rounds": args.rounds}, "results": []}
    for augment in (False, True):
        steps = {name: step_fn(arrays, device, augment, torch.Generator(device=device).manual_seed(1))
                 for name, arrays in modes.items()}
        steps["1x1_before"] = step_fn(modes["1x1"], device, augment, torch.Generator(device=device).manual_seed(1),
                                      before=True)
        seconds = {name: [] for name in steps}
        for name, step in steps.items():
            step(batches[0])   # warm-up
        for _ in range(args.rounds):
            for idx in batches:   # the modes alternate batch by batch: a burst of load hits both
                for name, step in steps.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    got = step(idx)
                    _sync(device)
                    seconds[name].append(time.perf_counter() - t0)
            assert got.shape[1] == 1 and steps["3x3"](batches[0]).shape[1] == 9
        row = {"path": "gather+window+augment" if augment else "gather+window",
               **{f"{name}_images_per_s": round(args.batch / statistics.median(t), 1) for name, t in seconds.items()}}
        row["ratio"] = round(row["3x3_images_per_s"] / row["1x1_images_per_s"], 3)
        out["results"].append(row)
        row["1x1_vs_before"] = round(row["1x1_images_per_s"] / row["1x1_before_images_per_s"], 3)
        print(f"{row['path']:>22}: 1x1 {row['1x1_images_per_s']:,.0f} img/s, 3 slices x 3 windows "
              f"{row['3x3_images_per_s']:,.0f} img/s = {row['ratio']:.2f}x (goal >= 0.80x); 1x1 before 2.5D "
              f"{row['1x1_before_images_per_s']:,.0f} img/s (now {row['1x1_vs_before']:.2f}x of it)", flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--slices", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50, help="batches per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = run(args)
    print(json.dumps(out["info"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
