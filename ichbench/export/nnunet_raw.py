"""nnU-Net v2's raw dataset layout, shared by `ichbench data export-folds` and the nnU-Net plugin.

    Dataset<ID>_<name>/
        dataset.json                 channel CT, labels background 0 / hemorrhage 1, .nii.gz
        imagesTr/<id>_0000.nii.gz    int16 HU
        labelsTr/<id>.nii.gz         uint8 0/1
        imagesTs/<id>_0000.nii.gz    (the plugin: a fold's test volumes, images only)

Files are written by `ichbench.export.nifti.write_nifti_volume` (the store's grid and spacing).
"""

from __future__ import annotations

import json
from pathlib import Path

from ichbench.export.nifti import NIFTI_ENDING

NNUNET_LABELS = {"background": 0, "hemorrhage": 1}


def nnunet_dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def nnunet_image_path(folder: Path, case: str) -> Path:
    return Path(folder) / f"{case}_0000{NIFTI_ENDING}"


def nnunet_label_path(folder: Path, case: str) -> Path:
    return Path(folder) / f"{case}{NIFTI_ENDING}"


def write_nnunet_dataset_json(folder: Path, name: str, n_training: int, description: str) -> Path:
    data = {"name": name, "channel_names": {"0": "CT"}, "labels": dict(NNUNET_LABELS),
            "numTraining": int(n_training), "file_ending": NIFTI_ENDING, "description": description}
    path = Path(folder) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
