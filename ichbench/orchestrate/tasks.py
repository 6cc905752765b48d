"""The work that runs on Ray workers. Workers load stores themselves, from the location string
(a path or a store URL) the driver passes in the task's arguments, never from their own
environment, and return plain results; they never write to MLflow (the driver does: SQLite does
not take many writers).

Fold tasks are retried by Ray when their worker dies; the engine's per-epoch checkpoints make a
retried fold resume where it stopped, with the same final result.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import ray

from ichbench.store.location import parse

FOLD_RETRIES = 3


def _where() -> dict:
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "hostname": socket.gethostname(), "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def _device() -> str | None:
    # Ray sets CUDA_VISIBLE_DEVICES for tasks that asked for a GPU; torch then sees only those.
    return "cuda" if ray.get_gpu_ids() else "cpu"


@ray.remote(max_retries=FOLD_RETRIES, retry_exceptions=False)
def pretrain_task(method, store_path: str, cfg, out_dir: str, board=None) -> dict:
    from ichbench.orchestrate.progress import epoch_reporter
    from ichbench.train.engine import pretrain
    t0 = time.time()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    where = _where()
    path = pretrain(method, parse(store_path), cfg, Path(out_dir), device=_device(), progress=False,
                    on_epoch=epoch_reporter(board, "pretraining", cfg.pretrain.epochs))
    return {"checkpoint": str(path), "seconds": time.time() - t0, **where}


@ray.remote(max_retries=FOLD_RETRIES, retry_exceptions=False)
def icm_task(store_path: str, icm_cfg, out_dir: str, board=None) -> dict:
    from ichbench.icm.train import train_icm
    from ichbench.orchestrate.progress import epoch_reporter
    t0 = time.time()
    where = _where()
    reporters = {w: epoch_reporter(board, f"{w} window", icm_cfg.epochs) for w in ("tissue", "bone")}
    on_epoch = (lambda win, epoch, history: reporters[win](epoch, history)) if board is not None else None
    path = train_icm(parse(store_path), icm_cfg, Path(out_dir), device=_device(), progress=False, on_epoch=on_epoch)
    return {"checkpoint": str(path), "seconds": time.time() - t0, **where}


@ray.remote(max_retries=FOLD_RETRIES, retry_exceptions=False)
def finetune_task(method, store_path: str, split: dict, fold: int, cfg, out_dir: str,
                  pretrained: str | None, icm_checkpoint: str | None = None, board=None) -> dict:
    from ichbench.orchestrate.progress import epoch_reporter
    from ichbench.train.engine import finetune
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    where = _where()
    # The PID lets an operator (and the fault test) find the process of a fold.
    (out / "worker.pid").write_text(str(where["pid"]))
    attempts = out / "attempts"
    attempts.write_text(str(int(attempts.read_text()) + 1 if attempts.exists() else 1))
    cavity = None
    if cfg.icm is not None:
        from ichbench.icm.sources import CavitySource
        cavity = CavitySource(cfg.icm, Path(icm_checkpoint) if icm_checkpoint else None, _device())
    result = finetune(method, parse(store_path), split, fold, cfg, out,
                      pretrained=Path(pretrained) if pretrained else None,
                      device=_device(), progress=False, cavity=cavity,
                      on_epoch=epoch_reporter(board, f"fold {fold}", cfg.finetune.epochs))
    result["worker"] = where
    result["attempts"] = int(attempts.read_text())
    result["wall_seconds"] = time.time() - t0
    return result
