"""The nnU-Net side of one fold, run as `python -m ichbench_nnunet.runner JOB.json` in a fresh
process whose environment names the fold's nnU-Net folders (nnU-Net reads nnUNet_raw,
nnUNet_preprocessed and nnUNet_results from the environment; a fresh process per fold keeps one
fold's folders out of another's, and nnU-Net's multiprocessing needs a `__main__` guard).

Steps, all through nnunetv2's Python API: fingerprint, plan (ExperimentPlanner, nnU-Net's
default) and preprocess the exported dataset; train `nnUNetTrainerIchbench` on split 0 of the
split file the plugin wrote (the ichbench fold); predict every test volume with the final
checkpoint; write `predictions.npz` (id -> uint8 mask, or for a subtypes job the uint8 label
map of class ids nnU-Net's argmax gives) and `outcome.json` (history, versions,
plan) into the job's `out` folder. A finished training is reused when the job runs again.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def _plan_and_preprocess(dataset_id: int, configuration: str, processes: int) -> None:
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset,
                                                                      preprocess_dataset)
    extract_fingerprint_dataset(dataset_id, num_processes=processes, check_dataset_integrity=True,
                                clean=True, verbose=False, show_progress_bar=False)
    plan_experiment_dataset(dataset_id, ExperimentPlanner)
    preprocess_dataset(dataset_id, "nnUNetPlans", (configuration,), (processes,), verbose=False,
                       show_progress_bar=False)


def _trainer(dataset: str, configuration: str, device, job: dict):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from ichbench_nnunet.trainer import nnUNetTrainerIchbench

    base = Path(os.environ["nnUNet_preprocessed"]) / dataset
    plans = load_json(str(base / "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(base / "dataset.json"))
    trainer = nnUNetTrainerIchbench(plans=plans, configuration=configuration, fold=0,
                                    dataset_json=dataset_json, device=device)
    trainer.schedule(**job["schedule"])
    return trainer


def _train(trainer) -> str:
    """Train, or reuse a finished training, or continue an interrupted one. Returns the final
    checkpoint's path."""
    out = Path(trainer.output_folder)
    final, latest = out / "checkpoint_final.pth", out / "checkpoint_latest.pth"
    if final.exists():
        trainer.load_checkpoint(str(final))
        return str(final)
    if latest.exists():
        trainer.load_checkpoint(str(latest))
    trainer.run_training()
    return str(final)


def _predict(trainer, test_ids: list[str], images: Path, job: dict) -> dict:
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=float(job["tile_step_size"]), use_gaussian=True,
                                use_mirroring=bool(job["mirroring"]),
                                perform_everything_on_device=trainer.device.type == "cuda",
                                device=trainer.device, verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
    weights = {k: v.detach().cpu() for k, v in trainer.network.state_dict().items()}
    predictor.manual_initialization(trainer.network, trainer.plans_manager,
                                    trainer.configuration_manager, [weights], trainer.dataset_json,
                                    type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    reader = SimpleITKIO()
    masks = {}
    with torch.no_grad():
        for case in test_ids:
            data, props = reader.read_images([str(images / f"{case}_0000.nii.gz")])
            seg = predictor.predict_single_npy_array(data, {"spacing": props["spacing"]}, None,
                                                     None, False)
            masks[case] = saved_prediction(seg, job["classes"])
    return masks


def saved_prediction(seg, classes):
    """What predictions.npz keeps of nnU-Net's segmentation (z, y, x): the hemorrhage (label 1) as
    0/1, or for a subtypes job (`classes`) the label map of class ids 0..C itself; uint8 both."""
    import numpy as np
    seg = np.asarray(seg)
    return (seg if classes else seg == 1).astype(np.uint8)


def run(job_path: Path) -> None:
    import numpy as np
    import torch

    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    # the threads the fold's worker was given (Ray: its CPUs); more only fight on a shared box
    torch.set_num_threads(int(job["threads"]))
    seed = int(job["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.time()
    _plan_and_preprocess(job["dataset_id"], job["configuration"], int(job["processes"]))
    t_plan = time.time()
    # Set after planning, which must not see it. 0: batches are augmented in this process (the
    # smoke profile, on a CPU); -1: nnU-Net's own number of background workers (for a GPU).
    workers = int(job["augmentation_workers"])
    if workers >= 0:
        os.environ["nnUNet_n_proc_DA"] = str(workers)
    splits = Path(os.environ["nnUNet_preprocessed"]) / job["dataset"] / "splits_final.json"
    if json.loads(splits.read_text()) != job["splits"]:
        raise RuntimeError(f"{splits}: changed after the export; it must be the ichbench fold")
    trainer = _trainer(job["dataset"], job["configuration"], torch.device(job["device"]), job)
    checkpoint = _train(trainer)
    t_train = time.time()
    masks = _predict(trainer, job["test"], Path(job["images_ts"]), job)
    np.savez_compressed(out / "predictions.npz", **masks)
    from importlib.metadata import version
    outcome = {"history": trainer.history(), "checkpoint": checkpoint,
               "batch_size": int(trainer.batch_size),
               "patch_size": [int(p) for p in trainer.configuration_manager.patch_size],
               "spacing": [float(s) for s in trainer.configuration_manager.spacing],
               "network": trainer.configuration_manager.network_arch_class_name,
               "nnunetv2_version": version("nnunetv2"), "torch_version": torch.__version__,
               "seconds": {"plan_preprocess": round(t_plan - t0, 1),
                           "train": round(t_train - t_plan, 1),
                           "predict": round(time.time() - t_train, 1)}}
    (out / "outcome.json").write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ichbench_nnunet.runner JOB.json")
    run(Path(sys.argv[1]))
