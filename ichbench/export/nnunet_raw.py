"""nnU-Net v2's raw dataset layout, shared by `ichbench data export-folds` and the nnU-Net plugin.

    Dataset<ID>_<name>/
        dataset.json                 channel CT, labels background 0 / hemorrhage 1, .nii.gz
                                     (subtypes: background 0 and each class k of the store, named)
        imagesTr/<id>_0000.nii.gz    int16 HU
        labelsTr/<id>.nii.gz         uint8 0/1 (subtypes: the store's class ids, 0..C)
        imagesTs/<id>_0000.nii.gz    (the plugin: a fold's test volumes, images only)

Files are written by `ichbench.export.nifti.write_nifti_volume` (the store's grid and spacing).
"""

from __future__ import annotations

import json
from pathlib import Path

from ichbench.export.nifti import NIFTI_ENDING

NNUNET_LABELS = {"background": 0, "hemorrhage": 1}


def nnunet_labels(class_names=None) -> dict[str, int]:
    """dataset.json's `labels`: the binary hemorrhage, or with `class_names` (a store's, ids
    1..C in that order) background 0 and each class by its id. nnU-Net trains one softmax output
    per label, so a label map is learned as it is (no region-based training)."""
    if not class_names:
        return dict(NNUNET_LABELS)
    return {"background": 0, **{str(name): k for k, name in enumerate(class_names, start=1)}}


def nnunet_dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def nnunet_image_path(folder: Path, case: str) -> Path:
    return Path(folder) / f"{case}_0000{NIFTI_ENDING}"


def nnunet_label_path(folder: Path, case: str) -> Path:
    return Path(folder) / f"{case}{NIFTI_ENDING}"


def write_nnunet_dataset_json(folder: Path, name: str, n_training: int, description: str,
                              labels: dict[str, int] | None = None) -> Path:
    """dataset.json with `labels` (default the binary `NNUNET_LABELS`; `nnunet_labels`)."""
    data = {"name": name, "channel_names": {"0": "CT"}, "labels": dict(labels or NNUNET_LABELS),
            "numTraining": int(n_training), "file_ending": NIFTI_ENDING, "description": description}
    path = Path(folder) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
