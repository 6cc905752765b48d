"""End-to-end fine-tuning rate with the real data path beside the bare training step.

    PYTHONPATH=. python benchmarks/data_path.py --device cuda --json $OUT/data_path.json
    PYTHONPATH=. python benchmarks/data_path.py --device cpu --size 64 --base 8 --steps 4   # a dry run

"bare" is the step alone on a batch already on the device (what benchmarks/train_step.py times).
The data-path modes do what the fine-tuning loop does for every batch (`train.engine.finetune`):
draw indices with the Mixed pool and `EpochSampler`, `gather` the int16 HU slices and masks from
`SliceArrays`, apply the [-50, 150] HU window, the batched on-device affine augmentation, then the
same step. "device": the arrays were moved to the GPU by `place` (they fit); "host": they stay in
host memory and every batch is indexed there and copied over (stores too large for the GPU).
Issue 10's goal: the data path costs no more than 10 % of the bare step rate (ratio >= 0.9).

Imports only torch and ichbench's training modules, so it runs where the data stack (zarr, ray,
mlflow) is not installed; `--store PATH` reads a real slice store through `load_store` instead of
the synthetic arrays (that needs zarr).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ichbench.losses import dice_loss
from ichbench.models.unet import UNet
from ichbench.train.data import EpochSampler, SliceArrays, finetune_pool, place, windowed
from ichbench.train.device import autocast_for, batch_images, gather, prepare_model
from ichbench.transforms import augment_batch

MODES = ("bare", "device", "host")
# the paper's §2.3.2 augmentation (config.PAPER_AUGMENT; not imported: the config needs pydantic,
# which the device machines lack)
PAPER_AUGMENT = {"translate": 0.1, "rotate": 15.0, "scale": (0.9, 1.1), "hflip": 0.5}


def synthetic_arrays(n: int, size: int, seed: int = 0) -> SliceArrays:
    """n int16 HU slices in volumes of 32, a disc of blood (60 HU above tissue) on two in three."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, size, size, generator=g) * 60 + 20).to(torch.int16)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    masks = ((yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
             < (size * 0.08) ** 2).to(torch.uint8)
    masks[::3] = 0
    images[masks.bool()] += 60
    labels = torch.zeros(n, 7, dtype=torch.uint8)
    labels[:, 1] = masks.flatten(1).any(1)
    labels[:, 0] = 1 - labels[:, 1]
    volume = torch.arange(n) // 32
    volumes = [{"id": f"v{i}"} for i in range(int(volume[-1]) + 1)]
    return SliceArrays(images=images, labels=labels, volume=volume, masks=masks, brain=None, volumes=volumes,
                       fingerprint="synthetic", path=Path("synthetic"), rows=torch.arange(n))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(mode: str, arrays: SliceArrays, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = prepare_model(UNet(base=args.base), device, compile_=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    rows = torch.arange(len(arrays))
    sampler = EpochSampler(finetune_pool(arrays, rows, "mixed", 2.0), args.batch, None,
                           torch.Generator().manual_seed(0))
    aug_gen = torch.Generator(device=device).manual_seed(1)
    data = place(arrays, device, fraction=1.0) if mode == "device" else arrays
    fixed = next(iter(sampler.epoch()))

    def batch(idx):
        if mode == "bare":   # the same batch every step, already on the device and augmented once
            return bare_batch
        images = batch_images(data, idx, device)
        masks = gather(data.masks, idx, device)[:, None].float()
        return augment_batch(images, masks, PAPER_AUGMENT, aug_gen)

    bare_batch = None
    if mode == "bare":
        images = windowed(gather(arrays.images, fixed, device))
        bare_batch = augment_batch(images, gather(arrays.masks, fixed, device)[:, None].float(), PAPER_AUGMENT, aug_gen)

    def step(idx):
        images, masks = batch(idx)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with autocast_for(device):
            logits = model(images)
        loss = dice_loss(logits.float(), masks, empty_weight=0.2)
        loss.backward()
        opt.step()
        return loss

    def indices(count):
        out = []
        while len(out) < count:
            out += sampler.epoch()
        return out[:count]

    for idx in indices(args.warmup):
        step(idx)
    _sync(device)
    todo = indices(args.steps)
    t0 = time.perf_counter()
    for idx in todo:
        loss = step(idx)
    _sync(device)
    dt = time.perf_counter() - t0
    return {"mode": mode, "batch": args.batch, "steps": args.steps, "seconds": round(dt, 4),
            "images_per_s": args.batch * args.steps / dt, "loss": float(loss.detach()),
            "arrays_on": str(data.images.device) if mode != "bare" else str(device)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--batch", type=int, default=None, help="default 64 on CUDA, 4 on CPU")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--slices", type=int, default=None, help="synthetic slices (default 4096 CUDA, 256 CPU)")
    ap.add_argument("--store", default=None, help="read this slice store instead (needs zarr)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 40 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 CUDA, 1 CPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 4)
    args.steps = args.steps or (40 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.store:
        from ichbench.train.data import load_store
        arrays = load_store(Path(args.store), args.size, names=("images", "labels", "volume", "masks"))
    else:
        arrays = synthetic_arrays(args.slices or (4096 if cuda else 256), args.size)
    info = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
            "torch": torch.__version__, "size": args.size, "base": args.base, "slices": len(arrays),
            "source": args.store or "synthetic", "autocast": "bf16" if cuda else "none (fp32)"}
    print(json.dumps(info), flush=True)
    results, out = [], {"info": info, "results": []}
    for mode in MODES:
        r = bench(mode, arrays, args, device)
        results.append(r)
        print(json.dumps(r), flush=True)
        out["results"] = results
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    bare = results[0]["images_per_s"]
    print()
    for r in results[1:]:
        print(f"{r['mode']:>6} data path: {r['images_per_s']:,.1f} img/s = {r['images_per_s'] / bare:.2f}x "
              f"of the bare step ({bare:,.1f} img/s); goal >= 0.90x")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
