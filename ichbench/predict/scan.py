"""Reading the scan to predict on: a DICOM series folder or a NIfTI volume, to HU in the store's
orientation (slices inferior to superior, anterior at the top rows, patient right on the left),
with what is needed to write results back on the input's own grid.

The same readers and HU rules as ingest: `dicom_io` (12-bit fix, rescale, one axial series ordered
along the slice normal, so a gantry tilt is handled as the datasets do) and `nifti_io` (the
affine's orientation). Every problem is one `InputError` naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ichbench.datasets.dicom_io import read_slice, stack_series
from ichbench.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Scan:
    path: Path
    kind: str                                   # "dicom" | "nifti"
    hu: np.ndarray                              # (S, H, W) float32 HU, store orientation
    spacing: tuple[float, float, float]         # (z, y, x) mm of `hu`'s voxels
    series_uid: str = ""
    slices: list = field(default_factory=list)  # DICOM: DicomSlice per row of `hu`, in its order
    flips: tuple[bool, bool] = (False, False)   # DICOM: (rows, columns) flipped into the store view
    nifti: object = None                        # NIfTI: the NiftiVolume (orientation transform, file shape)
    affine: np.ndarray | None = None            # NIfTI: the input's affine, kept for the output

    @property
    def voxel_ml(self) -> float:
        z, y, x = self.spacing
        return z * y * x / 1000.0

    def input_slice_numbers(self) -> list[int]:
        """For each row of `hu`, the slice's number in the input: InstanceNumber-free DICOM order
        (position along the normal, 0 = most inferior), or the NIfTI file's slice index."""
        if self.kind == "nifti":
            return [int(i) for i in self.nifti.slice_index]
        return list(range(len(self.hu)))


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def read_scan(path: Path, series: str | None = None) -> Scan:
    path = Path(path)
    if _is_nifti(path):
        return _read_nifti(path)
    if path.is_dir():
        return _read_dicom(path, series)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    raise InputError(path, "expected a DICOM series folder or a .nii / .nii.gz volume")


def _read_nifti(path: Path) -> Scan:
    from ichbench.datasets.nifti_io import load_ct
    vol = load_ct(path)
    _check_spacing(path, vol.spacing)
    return Scan(path=path, kind="nifti", hu=vol.data.astype(np.float32), spacing=tuple(vol.spacing),
                nifti=vol, affine=vol.affine)


def _modality(p: Path) -> str:
    import pydicom
    try:
        return str(pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise InputError(p, f"not a readable DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read_dicom(folder: Path, series: str | None) -> Scan:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(folder, "folder holds no files (expected one DICOM series)")
    with warnings.catch_warnings():      # pydicom's per-value warnings (long UIDs, odd VRs) are
        warnings.simplefilter("ignore")  # not ours to print; what we cannot use is an error below
        headers = [read_slice(p, pixels=False) for p in files]
    by_series: dict[str, list] = {}
    for h in headers:
        by_series.setdefault(h.series_uid, []).append(h)
    if series is not None:
        if series not in by_series:
            raise InputError(folder, f"no series {series} here; series: {_series_list(by_series)}")
        chosen = by_series[series]
    elif len(by_series) > 1:
        raise InputError(folder, f"holds {len(by_series)} series, pick one with --series UID: "
                                 f"{_series_list(by_series)}")
    else:
        chosen = next(iter(by_series.values()))
    modality = _modality(chosen[0].path)
    if modality and modality != "CT":
        raise InputError(chosen[0].path, f"modality is {modality}, not CT: hemorrhage models read CT only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slices = [read_slice(h.path) for h in chosen]
    hu, spacing, ordered = stack_series(slices, folder)
    _check_spacing(folder, spacing)
    orient = ordered[0].orientation
    flips = (bool(orient and abs(orient[4]) > 0.5 and orient[4] < 0),
             bool(orient and abs(orient[0]) > 0.5 and orient[0] < 0))
    return Scan(path=folder, kind="dicom", hu=hu.astype(np.float32), spacing=tuple(spacing),
                series_uid=ordered[0].series_uid, slices=ordered, flips=flips)


def _series_list(by_series: dict) -> str:
    return "; ".join(f"{uid} ({len(s)} files, {s[0].description or 'no description'})" for uid, s in by_series.items())


def _check_spacing(where: Path, spacing) -> None:
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or not np.isfinite(sp).all() or (sp <= 0).any():
        raise InputError(where, f"invalid voxel spacing {tuple(float(v) for v in sp)} mm: volumes in mL "
                                "need the slice distance and the pixel spacing")
