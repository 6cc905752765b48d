"""Write Seg-CQ500- and Hssayeni-shaped folders from phantom volumes, as real NIfTI files.

Volumes are given in store orientation (S, H, W): slices inferior -> superior, rows anterior ->
posterior, columns patient right -> left. `write_nifti` stores such an array under any voxel
axis layout (`axcodes`, nibabel RAS+ letters for the file's three axes) with the matching
affine, optionally with a gantry-tilt shear, so a correct reader must recover the same array
whatever the layout.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

from ichbench import SUBTYPES
from ichbench.datasets.phantom.generator import PhantomVolume, generate_volume

MARKER_HU = 1500.0
MARKER = (slice(2, 10), slice(2, 14))  # rows, cols: anterior (top) and patient-right (left) corner

# RAS+ unit vector of each axis letter
_DIRS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


def phantom(index: int, subtypes, *, slices: int = 6, size: int = 96, marker: bool = True) -> PhantomVolume:
    """A small phantom volume with an asymmetric bright marker in the anterior, patient-right
    corner (outside the head), so any flip or rotation of the slices is visible."""
    vol = generate_volume(100 + index, vol_id=f"V{index}", slices=slices, size=size, subtypes=subtypes)
    if marker:
        vol.hu[(slice(None), *MARKER)] = MARKER_HU
    return vol


def file_layout(store: np.ndarray, axcodes=("L", "A", "S")) -> tuple[np.ndarray, np.ndarray]:
    """(S, H, W) store array -> (file array, ornt of the file axes), for the given axis codes."""
    lps = store.transpose(2, 1, 0)                       # (x->L, y->P, z->S)
    to_file = ornt_transform(axcodes2ornt(("L", "P", "S")), axcodes2ornt(tuple(axcodes)))
    return apply_orientation(lps, to_file), axcodes2ornt(tuple(axcodes))


def affine_for(axcodes, spacing, tilt_deg: float = 0.0) -> np.ndarray:
    """Affine whose i-th column points along axcodes[i] with length spacing along that axis.

    spacing is (z, y, x) as in the store. A tilt adds a y component to the slice axis (the
    shear dicom2nifti writes for a tilted gantry): slice planes stay axial, but each slice is
    shifted anteriorly by dz * tan(tilt) relative to the one below it."""
    size_of = {"L": spacing[2], "R": spacing[2], "A": spacing[1], "P": spacing[1], "S": spacing[0], "I": spacing[0]}
    aff = np.eye(4)
    for i, code in enumerate(axcodes):
        aff[:3, i] = np.array(_DIRS[code], float) * size_of[code]
        if code in "SI" and tilt_deg:
            aff[1, i] = np.tan(np.radians(tilt_deg)) * spacing[0]
    aff[:3, 3] = (-60.0, 80.0, -40.0)
    return aff


def write_nifti(path: Path, store: np.ndarray, spacing, *, axcodes=("L", "A", "S"), tilt_deg: float = 0.0,
                dtype=np.int16) -> Path:
    data, _ = file_layout(store, axcodes)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine_for(axcodes, spacing, tilt_deg))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def file_slice_of(store_index: int, n: int, axcodes) -> int:
    """The file's slice index holding store slice `store_index` (the S/I axis may run either way)."""
    return store_index if "S" in axcodes else n - 1 - store_index


# -- Seg-CQ500 -----------------------------------------------------------------------------------

def write_segcq500(root: Path, volumes: dict[str, PhantomVolume], *, layouts: dict | None = None,
                   tilts: dict | None = None, brain: bool = True, info: bool = True) -> Path:
    """root/Seg-CQ500/data/volumes/<name>/{CT.nii, ICH_mask.nii.gz, brain.nii.gz} + info.csv."""
    layouts, tilts = layouts or {}, tilts or {}
    vdir = root / "Seg-CQ500" / "data" / "volumes"
    vdir.mkdir(parents=True, exist_ok=True)
    for name, vol in volumes.items():
        codes = layouts.get(name, ("L", "A", "S"))
        tilt = tilts.get(name, 0.0)
        write_nifti(vdir / name / "CT.nii", vol.hu, vol.spacing, axcodes=codes, tilt_deg=tilt)
        write_nifti(vdir / name / "ICH_mask.nii.gz", vol.mask, vol.spacing, axcodes=codes, tilt_deg=tilt,
                    dtype=np.uint8)
        if brain:
            write_nifti(vdir / name / "brain.nii.gz", vol.brain, vol.spacing, axcodes=codes, tilt_deg=tilt,
                        dtype=np.uint8)
    if info:
        # the columns the authors' conversion script writes (index, id, filename, n_slice) plus
        # CQ500 scores; the reader must only rely on `name`
        with open(vdir / "info.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["", "id", "filename", "n_slice", "name", "ICH", "IPH"])
            for i, (name, vol) in enumerate(volumes.items()):
                w.writerow([i, name.rsplit("-", 1)[-1], f"{name}.nii", vol.hu.shape[0], name, 0.9, 0.5])
    return root


def write_reads(path: Path, votes: dict[str, dict[str, tuple[int, int, int]]], extra_names=()) -> Path:
    """A CQ500-style reads.csv: votes[name][subtype] = (R1, R2, R3); absent subtypes get 0s.
    `extra_names` add rows for volumes not in the dataset, as the real file has 491 rows."""
    codes = ["ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "BleedLocation-Left", "Fracture"]
    header = ["name", "Category"] + [f"{r}:{c}" for r in ("R1", "R2", "R3") for c in codes]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for name in [*votes, *extra_names]:
            v = votes.get(name, {})
            row = [name, "B1"]
            for r in range(3):
                for c in codes:
                    sub = c.lower()
                    row.append(v[sub][r] if sub in v else (1 if c == "ICH" and v else 0))
            w.writerow(row)
    return path


# -- Hssayeni ------------------------------------------------------------------------------------

def slice_rows(number: int, vol: PhantomVolume, axcodes=("L", "A", "S")) -> list[list[int]]:
    """Diagnosis CSV rows for one volume, in file slice order (SliceNumber = file index + 1)."""
    n = vol.hu.shape[0]
    rows = []
    for k in range(n):
        s = file_slice_of(k, n, axcodes)  # file slice k holds store slice s (involution)
        flags = {sub: int(vol.subtype_masks[sub][s].any()) for sub in SUBTYPES}
        rows.append([number, k + 1] + [flags[sub] for sub in ("ivh", "iph", "sah", "edh", "sdh")]
                    + [int(not any(flags.values())), 0])
    return rows


def write_hssayeni(root: Path, volumes: dict[int, PhantomVolume], *, layouts: dict | None = None,
                   rows: list | None = None) -> Path:
    """root/{ct_scans,masks}/NNN.nii, hemorrhage_diagnosis_raw_ct.csv, Patient_demographics.csv.

    Files are stored LAS (the file's first axis patient left, second anterior): in that layout
    the authors' 90-degree rotation is what puts the head up. `rows` replaces the CSV body."""
    layouts = layouts or {}
    for number, vol in volumes.items():
        codes = layouts.get(number, ("L", "A", "S"))
        write_nifti(root / "ct_scans" / f"{number:03d}.nii", vol.hu, vol.spacing, axcodes=codes, dtype=np.float32)
        write_nifti(root / "masks" / f"{number:03d}.nii", vol.mask, vol.spacing, axcodes=codes, dtype=np.float32)
    if rows is None:
        rows = [r for number, vol in volumes.items()
                for r in slice_rows(number, vol, layouts.get(number, ("L", "A", "S")))]
    with open(root / "hemorrhage_diagnosis_raw_ct.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["PatientNumber", "SliceNumber", "Intraventricular", "Intraparenchymal", "Subarachnoid",
                    "Epidural", "Subdural", "No_Hemorrhage", "Fracture_Yes_No"])
        w.writerows(rows)
    with open(root / "Patient_demographics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Patient Number", "Age\n(years)", "Gender", "Hemorrhage type based on the radiologists diagnosis ",
                    "", "", "", "", "Fracture (yes 1/no 0)", "Note1"])
        w.writerow(["", "", "", "IVH", "IPH", "SAH", "EDH", "SDH", "", ""])
        for number, vol in volumes.items():
            flags = [1 if s in vol.subtypes else "" for s in ("ivh", "iph", "sah", "edh", "sdh")]
            w.writerow([number, 40, "Male", *flags, "", ""])
    return root
