"""k fold-like training runs sharing one device at once vs one after another — what Ray's
fractional GPUs (`--gpus-per-fold 1/k`) buy on one card. Torch only (no Ray, zarr or MLflow), so
it runs on the lent accelerator as is; each run is a separate process, as a Ray fold worker is.

    python benchmarks/gpu_share.py [--device cuda] [--folds 5] [--steps 60] [--batch 32] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.multiprocessing as mp


def train(rank: int, args, out) -> None:
    from ichbench.models.unet import UNet
    from ichbench.losses import dice_loss
    torch.manual_seed(rank)
    dev = torch.device(args.device)
    model = UNet(base=args.base).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(args.batch, 1, args.size, args.size, device=dev)
    y = (torch.rand(args.batch, 1, args.size, args.size, device=dev) > 0.9).float()
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    for step in range(args.steps + 5):
        if step == 5:  # warm-up (cuDNN autotuning, allocator) excluded
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with ctx:
            loss = dice_loss(model(x).float(), y)
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out.put((rank, time.perf_counter() - t0))


def run(args, parallel: bool) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    t0 = time.perf_counter()
    if parallel:
        procs = [ctx.Process(target=train, args=(r, args, q)) for r in range(args.folds)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    else:
        for r in range(args.folds):
            p = ctx.Process(target=train, args=(r, args, q))
            p.start()
            p.join()
    per = [q.get()[1] for _ in range(args.folds)]
    return time.perf_counter() - t0, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    seq_wall, seq = run(args, parallel=False)
    par_wall, par = run(args, parallel=True)
    imgs = args.folds * args.steps * args.batch
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    res = {"device": name, "folds": args.folds, "steps": args.steps, "batch": args.batch, "size": args.size,
           "sequential_train_s": sum(seq), "parallel_train_s": max(par),
           "sequential_img_per_s": imgs / sum(seq), "parallel_img_per_s": imgs / max(par),
           "speedup_train": sum(seq) / max(par), "sequential_wall_s": seq_wall, "parallel_wall_s": par_wall}
    print(f"{name}: {args.folds} runs x {args.steps} steps x batch {args.batch} at {args.size}²")
    print(f"sequential: {res['sequential_img_per_s']:8.1f} img/s   sharing one device: "
          f"{res['parallel_img_per_s']:8.1f} img/s   speed-up {res['speedup_train']:.2f}x "
          f"(wall incl. process start: {seq_wall:.1f} s vs {par_wall:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
