"""One fold of nnunet_2d, as the fold's Ray worker runs it: export the fold, run nnU-Net in a
subprocess with the fold's own nnU-Net folders in its environment, read the predictions back.

The environment variables nnU-Net needs (nnUNet_raw, nnUNet_preprocessed, nnUNet_results) are
set here, for the subprocess only, to folders under the fold's folder of the run: a user never
sets them, and folds that run side by side never share them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ichbench.api import FoldOutput, IchbenchError
from ichbench_nnunet.export import DATASET_ID, DATASET_NAME, NnUNetFolders, export_fold, read_splits

LOG_NAME = "nnunet.log"


def job_for(fold, configuration: str, folders: NnUNetFolders, out: Path) -> dict:
    """What the runner needs, from the fold and its resolved config."""
    fc = fold.cfg.finetune
    p = fc.params
    return {"dataset_id": DATASET_ID, "dataset": DATASET_NAME, "configuration": configuration,
            "device": fold.device, "seed": int(fc.seed), "processes": int(p.get("processes", 1)),
            "threads": torch_threads(),
            "schedule": {"epochs": int(fc.epochs), "iterations": int(fc.steps_per_epoch or 250),
                         "val_iterations": int(p.get("val_iterations", 50)), "lr": float(fc.lr),
                         "weight_decay": float(fc.weight_decay),
                         "batch_size": int(p.get("batch_size", 0))},
            "augmentation_workers": int(p.get("augmentation_workers", -1)),
            "mirroring": bool(p.get("mirroring", True)),
            "tile_step_size": float(p.get("tile_step_size", 0.5)),
            "classes": list(fold.classes or []),   # the subtypes task's, ids 1..C; empty: binary
            "test": list(fold.test_ids), "images_ts": str(folders.dataset / "imagesTs"),
            "splits": read_splits(folders.splits), "out": str(out)}


def torch_threads() -> int:
    """The fold worker's torch threads (Ray sets them to the CPUs the task was given)."""
    import torch
    return max(1, torch.get_num_threads())


def nnunet_env(folders: NnUNetFolders, processes: int) -> dict[str, str]:
    """This process's environment with the fold's nnU-Net folders, and nnU-Net's own knobs set
    here rather than taken from the user's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(folders.env())
    env["nnUNet_def_n_proc"] = str(processes)   # nnU-Net's default is 8 processes
    env["nnUNet_compile"] = "false"
    return env


def _last_lines(path: Path, n: int = 3) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def read_predictions(path: Path, classes) -> dict:
    """The runner's predictions.npz as FoldOutput.predictions: id -> bool mask, or for a subtypes
    fold (`classes`) id -> uint8 label map (ids 0..C), which ichbench scores per class."""
    with np.load(path) as npz:
        return {case: npz[case].astype(np.uint8 if classes else bool) for case in npz.files}


def run_fold(fold, configuration: str = "2d") -> FoldOutput:
    folders = NnUNetFolders(Path(fold.work_dir) / "nnunet")
    for d in (folders.raw, folders.preprocessed, folders.results):
        d.mkdir(parents=True, exist_ok=True)
    manifest = export_fold(fold, folders)
    out = folders.root / "output"
    out.mkdir(exist_ok=True)
    job = job_for(fold, configuration, folders, out)
    job_path = folders.root / "job.json"
    job_path.write_text(json.dumps(job, indent=2))
    log = Path(fold.work_dir) / LOG_NAME
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "ichbench_nnunet.runner", str(job_path)],
                              env=nnunet_env(folders, job["processes"]), stdout=fh,
                              stderr=subprocess.STDOUT, cwd=str(folders.root))
    if proc.returncode != 0:
        raise IchbenchError(f"{log}: nnU-Net failed on fold {fold.index} (exit {proc.returncode}): "
                            f"{_last_lines(log)}")
    outcome = json.loads((out / "outcome.json").read_text())
    predictions = read_predictions(out / "predictions.npz", fold.classes)
    history = outcome.pop("history")
    if history:
        fold.report_epoch(history[-1]["epoch"], history)
    info = {**outcome, "configuration": configuration, "dataset": DATASET_NAME,
            "nnunet_folder": str(folders.root), "exported": {"train": len(manifest["train"]),
                                                             "test": len(manifest["test"])}}
    return FoldOutput(predictions=predictions, history=history, model=Path(outcome["checkpoint"]),
                      info=info)
