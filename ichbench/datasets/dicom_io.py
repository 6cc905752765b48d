"""DICOM reading shared by the DICOM datasets (rsna, cq500, phantom).

Every failure becomes an InputError naming the file, so readers can skip-and-report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ichbench.errors import InputError
from ichbench.preprocess.hu import dicom_to_hu


@dataclass
class DicomSlice:
    path: Path
    hu: np.ndarray                    # (H, W) float32
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing_yx: tuple[float, float]
    thickness: float | None
    series_uid: str
    study_uid: str
    patient_id: str
    sop_uid: str
    description: str


def read_slice(path: Path, *, pixels: bool = True) -> DicomSlice:
    """One single-frame DICOM file, decoded to HU. Raises InputError on any problem."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise InputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    hu = np.zeros((0, 0), np.float32)
    if pixels:
        if "PixelData" not in ds:
            raise InputError(path, "DICOM file has no pixel data")
        try:
            hu = dicom_to_hu(ds)
        except Exception as exc:  # noqa: BLE001 - truncated data, missing decoder, ...
            raise InputError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
        if hu.ndim != 2:
            raise InputError(path, f"expected a single 2-D frame, got pixel array of shape {hu.shape}")
    ps = getattr(ds, "PixelSpacing", None)
    try:
        spacing = (float(ps[0]), float(ps[1])) if ps is not None else (float("nan"), float("nan"))
    except (TypeError, ValueError, IndexError):
        raise InputError(path, f"invalid PixelSpacing {ps!r}") from None
    ipp = getattr(ds, "ImagePositionPatient", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    thick = getattr(ds, "SliceThickness", None)
    return DicomSlice(
        path=path, hu=hu,
        position=tuple(float(v) for v in ipp) if ipp is not None else None,
        orientation=tuple(float(v) for v in iop) if iop is not None else None,
        spacing_yx=spacing,
        thickness=float(thick) if thick not in (None, "") else None,
        series_uid=str(getattr(ds, "SeriesInstanceUID", "")),
        study_uid=str(getattr(ds, "StudyInstanceUID", "")),
        patient_id=str(getattr(ds, "PatientID", "")),
        sop_uid=str(getattr(ds, "SOPInstanceUID", "")),
        description=str(getattr(ds, "SeriesDescription", "")),
    )


def is_axial(orientation) -> bool:
    """Row and column direction cosines lying (nearly) in the x-y plane."""
    if orientation is None:
        return True  # untagged: assume axial, as scanners export head CT
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    return abs(normal[2]) > 0.9


def stack_series(slices: list[DicomSlice], where: Path) -> tuple[np.ndarray, tuple[float, float, float], list[DicomSlice]]:
    """Sort one series' slices along the patient axis and stack them.

    Returns (hu (S,H,W), spacing (z,y,x), sorted slices). Raises InputError for a mixed, non-axial
    or inconsistent series."""
    if not slices:
        raise InputError(where, "series has no readable slices")
    uids = {s.series_uid for s in slices}
    if len(uids) > 1:
        raise InputError(where, f"folder mixes {len(uids)} series (SeriesInstanceUIDs differ)")
    if not all(is_axial(s.orientation) for s in slices):
        raise InputError(where, "series is not axial (ImageOrientationPatient)")
    shapes = {s.hu.shape for s in slices}
    if len(shapes) > 1:
        raise InputError(where, f"slices have different sizes {sorted(shapes)}")
    if all(s.position is not None for s in slices):
        ordered = sorted(slices, key=lambda s: s.position[2])
        z = np.array([s.position[2] for s in ordered])
        dz = np.diff(z)
        if len(dz) and (np.abs(dz) < 1e-6).any():
            raise InputError(where, "two slices share the same position (duplicate slices in the series)")
        dz_mm = float(np.median(dz)) if len(dz) else float(ordered[0].thickness or 1.0)
    else:
        ordered = sorted(slices, key=lambda s: s.path.name)
        dz_mm = float(ordered[0].thickness or 1.0)
    # slices are kept in increasing patient z (inferior to superior)
    hu = np.stack([s.hu for s in ordered])
    sy, sx = ordered[0].spacing_yx
    return hu, (abs(dz_mm), sy, sx), ordered
