"""Tiny INSTANCE 2022 and BHSD corpora in their real layouts, written as the releases write them:
int16 CTs with scl_slope / scl_inter and float32 CTs, labels as integers or as float 0.0 / 1.0,
the space in BHSD's `ground truths`, nnU-Net's `_0000` names and dataset.json. Volumes are given in
store orientation (S, H, W) and written with `nifti_fixtures.file_layout` (axis codes L, A, S by
default), so a reader must recover them exactly at the native size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.nifti_fixtures import affine_for, file_layout

SPACING = (5.0, 0.42, 0.42)
SHAPE = (4, 32, 32)
# the BHSD release's label values -> the store's class ids (SUBTYPES order: iph ivh sah sdh edh)
BHSD_TO_STORE = {0: 0, 1: 5, 2: 1, 3: 2, 4: 3, 5: 4}


@dataclass
class Case:
    name: str
    hu: np.ndarray        # (S, H, W) whole-number HU, store orientation
    labels: np.ndarray    # (S, H, W) the file's label values (BHSD ids, or 0/1)


def case(name: str, seed: int, values=(1,), shape=SHAPE) -> Case:
    """A volume with one rectangle per label value (value v on slice v % S), HU -1000..100."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 100, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        labels[v % shape[0], 4 + 5 * i:8 + 5 * i, 6:14] = v
    return Case(name, hu, labels)


def write(path: Path, store: np.ndarray, *, kind: str = "int16", axcodes=("L", "A", "S")) -> Path:
    """One NIfTI file. kind: "int16" (raw = HU + 1024 with scl_slope 1, scl_inter -1024), "float32"
    (HU as is), "label" (uint8), "float_label" (float32 0.0 / 1.0 ...)."""
    data, _ = file_layout(store, axcodes)
    affine = affine_for(axcodes, SPACING)
    if kind == "int16":
        img = nib.Nifti1Image((data + 1024).astype(np.int16), affine)
        img.header.set_slope_inter(1.0, -1024.0)
    else:
        dtype = {"float32": np.float32, "label": np.uint8, "float_label": np.float32}[kind]
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
        img.header.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_instance(root: Path, cases: list[Case]) -> Path:
    """root/data/NNN.nii.gz + root/label/NNN.nii.gz; even cases int16 + integer labels, odd ones
    float32 + float labels."""
    for i, c in enumerate(cases):
        write(root / "data" / f"{c.name}.nii.gz", c.hu, kind="int16" if i % 2 == 0 else "float32")
        write(root / "label" / f"{c.name}.nii.gz", c.labels, kind="label" if i % 2 == 0 else "float_label")
    return root


def write_bhsd_release(root: Path, cases: list[Case]) -> Path:
    """root/images/<name>.nii.gz + root/ground truths/<name>.nii.gz (label_192.zip's layout)."""
    for i, c in enumerate(cases):
        write(root / "images" / f"{c.name}.nii.gz", c.hu, kind="int16" if i % 2 == 0 else "float32")
        write(root / "ground truths" / f"{c.name}.nii.gz", c.labels, kind="label" if i % 2 == 0 else "float_label")
    return root


def write_bhsd_nnunet(root: Path, cases: list[Case], labels: dict | None = None) -> Path:
    """root/imagesTr/<name>_0000.nii.gz, root/labelsTr/<name>.nii.gz and dataset.json (nnU-Net v2)."""
    for c in cases:
        write(root / "imagesTr" / f"{c.name}_0000.nii.gz", c.hu)
        write(root / "labelsTr" / f"{c.name}.nii.gz", c.labels, kind="label")
    labels = labels or {"background": 0, "EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels,
                                                   "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root
