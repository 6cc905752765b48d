"""A fold of an ichbench split as an nnU-Net v2 raw dataset, with the fold as its only split.

Layout, under the fold's folder of the run (nothing goes to the user's own nnU-Net folders):

    nnunet/raw/Dataset501_ichbench/
        dataset.json                 channel CT, labels background 0 / hemorrhage 1, .nii.gz
        imagesTr/<id>_0000.nii.gz    the fold's training volumes, int16 HU
        labelsTr/<id>.nii.gz         their hemorrhage masks, uint8 0/1
        imagesTs/<id>_0000.nii.gz    the fold's test volumes (images only: no mask is exported)
    nnunet/preprocessed/Dataset501_ichbench/splits_final.json
        [{"train": the fold's training ids, "val": the same ids}]

Volumes are written as ichbench hands them over (`Fold.volumes`): on the grid ichbench scores on,
with that grid's spacing, axis 0 inferior to superior, by ichbench's one NIfTI writer
(`ichbench.api.write_nifti_volume`, shared with `ichbench data export-folds`): what nnU-Net's
SimpleITK reader reads back is the store's array (z, y, x) and spacing exactly.

In a subtypes fold (`finetune.task=subtypes`, `fold.classes`) the labels are the training
volumes' class maps (uint8, 0 background and k the store's class k) and dataset.json names them,
{"background": 0, "<class 1>": 1, ...} in the store's order (`nnunet_labels`): nnU-Net trains
one softmax output per label and predicts the label map.

Only the training volumes are in the dataset nnU-Net plans from, so its fingerprint, its
intensity normalisation and its plans never see a test volume. nnU-Net's split file needs a
validation list; it gets the training volumes again (nnU-Net then uses them for its per-epoch
pseudo-Dice only: the plugin predicts with the final checkpoint, never the "best" one, and skips
nnU-Net's own validation, since ichbench scores the test volumes itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the layout and the writer are ichbench's own, shared with `ichbench data export-folds`
from ichbench.api import (NIFTI_ENDING, NNUNET_LABELS, nnunet_dataset_name, nnunet_image_path,
                          nnunet_label_path, nnunet_labels, write_nifti_volume, write_nnunet_dataset_json)

FILE_ENDING, LABELS = NIFTI_ENDING, NNUNET_LABELS
image_path, label_path, write_volume = nnunet_image_path, nnunet_label_path, write_nifti_volume

__all__ = ["DATASET_ID", "DATASET_NAME", "FILE_ENDING", "LABELS", "NnUNetFolders", "export_fold",
           "image_path", "read_splits", "write_splits", "write_volume"]

DATASET_ID = 501
DATASET_NAME = nnunet_dataset_name(DATASET_ID, "ichbench")


@dataclass(frozen=True)
class NnUNetFolders:
    """The three nnU-Net folders of one fold (its nnUNet_raw, _preprocessed, _results)."""
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def dataset(self) -> Path:
        return self.raw / DATASET_NAME

    @property
    def splits(self) -> Path:
        return self.preprocessed / DATASET_NAME / "splits_final.json"

    def env(self) -> dict[str, str]:
        """The environment variables nnU-Net reads its folders from."""
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                "nnUNet_results": str(self.results)}


def export_fold(fold, folders: NnUNetFolders) -> dict:
    """Write the fold's raw dataset and split file; returns the manifest (also saved as
    `export.json` in the dataset folder): case lists, shapes and spacings (and the labels of a
    subtypes fold)."""
    ds = folders.dataset
    classes = fold.classes   # the subtypes task's class names; None: binary
    manifest = {"dataset": DATASET_NAME, "fold": fold.index, "k": fold.k,
                "split_hash": fold.split_hash, "store_fingerprint": fold.store_fingerprint,
                "image_size": fold.image_size,
                "train": list(fold.train_ids), "test": list(fold.test_ids), "volumes": {}}
    if classes:
        manifest["labels"] = nnunet_labels(classes)
    for vol in fold.volumes(list(fold.train_ids) + list(fold.test_ids)):
        is_train = vol.mask is not None
        write_volume(image_path(ds / ("imagesTr" if is_train else "imagesTs"), vol.id),
                     vol.hu.astype(np.int16), vol.spacing)
        if is_train:
            labels = vol.mask if not classes else vol.classes
            write_volume(label_path(ds / "labelsTr", vol.id), labels.astype(np.uint8), vol.spacing)
        manifest["volumes"][vol.id] = {"shape": list(vol.hu.shape), "spacing": list(vol.spacing),
                                       "role": "train" if is_train else "test"}
    write_nnunet_dataset_json(ds, DATASET_NAME, len(fold.train_ids),
                              f"ichbench {fold.cfg.dataset} fold {fold.index} of {fold.k} "
                              f"(split {str(fold.split_hash)[:12]}), training volumes only",
                              nnunet_labels(classes))
    (ds / "export.json").write_text(json.dumps(manifest, indent=2))
    write_splits(folders.splits, fold.train_ids)
    return manifest


def write_splits(path: Path, train_ids) -> Path:
    """nnU-Net's splits_final.json with one split, fold 0: the ichbench fold's training volumes.
    Written before planning, so nnU-Net never makes its own five-fold split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(train_ids)
    path.write_text(json.dumps([{"train": ids, "val": ids}], indent=2))
    return path


def read_splits(path: Path) -> list[dict]:
    try:
        splits = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable nnU-Net split file ({exc})") from None
    if not (isinstance(splits, list) and len(splits) == 1 and set(splits[0]) == {"train", "val"}):
        raise ValueError(f"{path}: expected exactly one split with 'train' and 'val' "
                         "(the ichbench fold)")
    return splits
