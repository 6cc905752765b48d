"""The training loop every model of ichbench shares (pretexts, fine-tuning, the ICM U-Nets).

Adam with L2 as weight decay, the learning rate decayed by ExponentialLR once per epoch, a
checkpoint of the whole training state after every epoch (so a killed run resumes where it
stopped and ends with the same weights), and a rich progress bar. Each epoch's record names the
process that trained it (`pid`), so a resumed run shows which epochs it took over and which it
did not redo.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ichbench.console import progress_bar
from ichbench.errors import IchbenchError
from ichbench.train import checkpoint as ckpt
from ichbench.train.data import EpochSampler


def fit(*, model: torch.nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], sampler: EpochSampler,
        epochs: int, lr: float, lr_decay: float, weight_decay: float, state_path: Path, identity: str,
        generators: dict[str, torch.Generator], device: torch.device, desc: str, progress: bool,
        validate: Callable[[], float] | None = None, on_epoch: Callable[[int, list], None] | None = None,
        ) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
    start, history = 0, []
    if state_path.exists():
        state = ckpt.load(state_path)
        if state.get("identity") != identity:
            raise IchbenchError(f"{state_path}: checkpoint of a different configuration; "
                                "remove it or use another output folder")
        start, history = ckpt.restore_training_state(state, model, optimizer, scheduler, generators)
    with progress_bar(progress) as bar:
        task = bar.add_task(desc, total=None, info="")
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            model.train()
            batches = sampler.epoch()
            bar.update(task, total=len(batches), completed=0, info=f"epoch {epoch + 1}/{epochs}")
            total = torch.zeros((), device=device)
            for idx in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(idx)
                if device.type == "cpu" and not torch.isfinite(loss):
                    raise IchbenchError(f"{desc}: loss became {loss.item()} in epoch {epoch + 1}")
                loss.backward()
                optimizer.step()
                total += loss.detach().float()
                bar.advance(task)
            record = {"epoch": epoch + 1, "loss": float(total) / len(batches),
                      "lr": optimizer.param_groups[0]["lr"], "steps": len(batches)}
            scheduler.step()
            if not math.isfinite(record["loss"]):
                raise IchbenchError(f"{desc}: mean loss is {record['loss']} in epoch {epoch + 1}")
            if validate is not None:
                record["val_loss"] = validate()
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["pid"] = os.getpid()
            history.append(record)
            bar.update(task, info=f"epoch {epoch + 1}/{epochs} loss {record['loss']:.4f}")
            ckpt.save_atomic(ckpt.training_state(model, optimizer, scheduler, generators, epoch + 1,
                                                 history, identity), state_path)
            if on_epoch is not None:
                on_epoch(epoch + 1, history)
    return history


def generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """Sampling draws on the host, augmentation and pretext randomness on the training device."""
    return {"sampler": torch.Generator().manual_seed(seed),
            "device": torch.Generator(device=device).manual_seed(seed + 1)}
