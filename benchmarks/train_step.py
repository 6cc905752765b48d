"""Training-step throughput of the paper's full U-Net at 256x256 (base 32): eager vs channels_last
vs torch.compile, at several batch sizes.

    PYTHONPATH=. python benchmarks/train_step.py                       # CPU: small batches, few steps
    PYTHONPATH=. python benchmarks/train_step.py --device cuda --json $OUT/train_step.json

One step is what the fine-tuning loop does: forward, the Dice loss of eq. 4-5, backward, Adam.
On CUDA the forward runs under bf16 autocast (as in training). Each cell reports images/s over
the timed steps, after warm-up steps (which include compilation). Also reports the measured
FLOPs of one training image (forward + backward, torch's FLOP counter), so images/s converts to
achieved TFLOP/s. Imports only torch and ichbench.models / ichbench.losses: it runs where
the data stack (zarr, pydicom, ray, mlflow) is not installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from ichbench.models.unet import UNet
from ichbench.losses import dice_loss

MODES = ("eager", "channels_last", "compile")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(batch, 2, generator=g) * size * 0.5 + size * 0.25
    r2 = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
    masks = (r2 < (size * 0.08) ** 2).float()[:, None]
    masks[::3] = 0  # some empty slices, as in the Mixed recipe
    return images.to(device), masks.to(device)


def flops_per_image(size: int, base: int) -> float:
    """FLOPs of forward + backward for one image (FlopCounterMode counts a multiply-add as 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = UNet(base=base)
    x = torch.rand(1, 1, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return float(counter.get_total_flops())


def bench(mode: str, batch: int, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = UNet(base=args.base).to(device)
    images, masks = make_batch(batch, args.size, device)
    if mode in ("channels_last", "compile"):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model, dynamic=False) if mode == "compile" else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = step_model(images)
        loss = dice_loss(logits.float(), masks, empty_weight=0.2)
        loss.backward()
        opt.step()
        return loss

    try:
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        _sync(device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        _sync(device)
        dt = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        return {"mode": mode, "batch": batch, "error": "out of memory"}
    finally:
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
    out = {"mode": mode, "batch": batch, "steps": args.steps, "seconds": dt, "warmup_seconds": warm,
           "images_per_s": batch * args.steps / dt, "loss": float(loss.detach())}
    if device.type == "cuda":
        out["peak_gib"] = round(peak, 2)
    return out


def table(results: list[dict], gflop: float) -> str:
    batches = sorted({r["batch"] for r in results})
    modes = [m for m in MODES if any(r["mode"] == m for r in results)]
    cell = {(r["mode"], r["batch"]): r for r in results}
    others = [m for m in modes if m != "eager"] if "eager" in modes else []
    rows = [["batch"] + [f"{m} img/s" for m in modes] + [f"{m}/eager" for m in others] + ["best TFLOP/s"]]
    for b in batches:
        speed = {m: cell.get((m, b), {}).get("images_per_s") for m in modes}
        row = [str(b)] + [f"{speed[m]:,.1f}" if speed[m] else cell.get((m, b), {}).get("error", "-") for m in modes]
        row += [f"{speed[m] / speed['eager']:.2f}x" if speed[m] and speed["eager"] else "-" for m in others]
        row.append(f"{max((v or 0.0) for v in speed.values()) * gflop / 1e3:.2f}")
        rows.append(row)
    return "\n".join(" | ".join(r) for r in rows)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--batches", default=None, help="comma list (default: 16,64,256 on CUDA, 2,4 on CPU)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)} (default: all; "
                                                             "compiling takes ~1 min on 2 CPU cores)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 CUDA, 1 CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in (args.batches or ("16,64,256" if cuda else "2,4")).split(",")]
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        ap.error(f"unknown modes {sorted(set(modes) - set(MODES))}; known: {', '.join(MODES)}")
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    gflop = flops_per_image(args.size, args.base) / 1e9
    info = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size, "base": args.base,
            "gflop_per_training_image": round(gflop, 2), "autocast": "bf16" if cuda else "none (fp32)"}
    print(json.dumps(info), flush=True)
    results = []
    out = {"info": info, "results": results}
    # Mode by mode, the slow compilations last, with the JSON rewritten after every cell: a run
    # cut short by a time limit still leaves every finished measurement.
    for m in modes:
        for b in batches:
            r = bench(m, b, args, device)
            if cuda:
                torch.cuda.empty_cache()  # the cell's model and activations are garbage now
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=2)
    print()
    print(table(results, gflop))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
