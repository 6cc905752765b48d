"""Volumes on the store's grid as NIfTI, and masks read back onto it.

The one NIfTI writer of ichbench's exports: `ichbench data export-folds` and the nnU-Net plugin's
per-fold datasets both write with `write_nifti_volume`. A store volume is (S, H, W) = (z, y, x) with
(z, y, x) spacing, its axes inferior -> superior, anterior -> posterior, right -> left
(`ichbench.datasets.nifti_io`, STORE_AXCODES "LPS"). The file holds the array transposed to
(x, y, z) with the affine diag(-x, -y, z) (RAS+ world, origin 0): what SimpleITK writes for an
image with identity direction, so SimpleITK (nnU-Net's reader) reads back the store's array
(z, y, x) and its spacing exactly, and ichbench's own NIfTI reading gives the store's array too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NIFTI_ENDING = ".nii.gz"
SPACING_ATOL_MM = 1e-3   # headers store spacing as float32: equal grids differ by ~1e-6 mm


def grid_affine(spacing_zyx) -> np.ndarray:
    """The affine of a store volume's file (see the module docstring)."""
    z, y, x = (float(s) for s in spacing_zyx)
    return np.diag([-x, -y, z, 1.0])


def write_nifti_volume(path: Path, array: np.ndarray, spacing_zyx) -> None:
    """(S, H, W) array with (z, y, x) spacing in mm as NIfTI, written beside and renamed (an
    interrupted write leaves no half file under the final name)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, grid_affine(spacing_zyx))
    img.header.set_data_dtype(data.dtype)
    img.set_qform(img.affine, code=1)   # "scanner": readers that trust only one form agree
    img.set_sform(img.affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{NIFTI_ENDING}")
    try:
        nib.save(img, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_mask_on_grid(path: Path, shape_zyx, spacing_zyx, labels: dict[str, int] | None = None) -> np.ndarray:
    """A binary mask file as (S, H, W) bool in store order, on the grid `shape_zyx` with
    `spacing_zyx`; InputError naming the file when it is unreadable or truncated, not 0/1 (the
    checks of `ichbench score`), or on another grid. Axis flips and permutations (a file a tool
    reoriented) are undone as ichbench reads any NIfTI; nothing is resampled. With `labels`
    ({class name: id}) a label map as int instead, values 0 and those ids only (`ichbench score
    --labels`' reading)."""
    from ichbench.export.mask_files import read_mask
    from ichbench.datasets.nifti_io import file_spacing, file_to_store, store_spacing, to_store
    from ichbench.errors import InputError

    try:
        raw, img = read_mask(Path(path), labels)
    except InputError as exc:   # `ichbench score`'s advice about --labels does not apply here
        classes = ", ".join(f"{n}={i}" for n, i in (labels or {}).items())
        raise InputError(exc.path, exc.problem.replace(", or score a label image with --labels", "").replace(
            "not a label image of --labels", f"not a label map of the store's classes (0 background, {classes})"
        )) from None
    transform = file_to_store(img.affine, path)
    mask = to_store(raw, transform)
    spacing = store_spacing(file_spacing(img, path), transform)
    want = tuple(int(n) for n in shape_zyx)
    if mask.shape != want:
        raise InputError(path, f"shape {_dims(mask.shape)} (slices x rows x columns) differs from the store's "
                               f"grid {_dims(want)}: predict on the exported image's grid, not resampled")
    if not np.allclose(spacing, [float(s) for s in spacing_zyx], rtol=0, atol=SPACING_ATOL_MM):
        raise InputError(path, f"spacing {_mm(spacing)} mm differs from the store's grid {_mm(spacing_zyx)} mm: "
                               "predict on the exported image's grid, not resampled")
    return mask


def _dims(shape) -> str:
    return " x ".join(str(int(n)) for n in shape)


def _mm(spacing) -> str:
    return " x ".join(f"{float(s):.4g}" for s in spacing)
