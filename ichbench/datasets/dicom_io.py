"""DICOM reading shared by the DICOM datasets (rsna, cq500, phantom).

Every failure becomes an InputError naming the file (or the series folder), so readers can
skip-and-report. `read_slice(path, pixels=False)` reads only the header, which is how readers
choose and order series before paying for pixel decoding. (The tests write their synthetic CT
slices with `ichbench/testing/dicom.py`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichbench.errors import InputError
from ichbench.preprocess.hu import dicom_to_hu

DUPLICATE_MM = 1e-3   # two slices closer than this along the slice normal are the same slice


@dataclass
class DicomSlice:
    path: Path
    hu: np.ndarray                    # (H, W) float32; (0, 0) when read without pixels
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing_yx: tuple[float, float]
    thickness: float | None
    series_uid: str
    study_uid: str
    patient_id: str
    sop_uid: str
    description: str
    shape: tuple[int, int] = (0, 0)   # (Rows, Columns) from the header
    image_type: tuple[str, ...] = ()  # ImageType values, upper case (LOCALIZER marks scouts)
    kernel: str = ""                  # ConvolutionKernel, upper case (BONE marks bone series)


def _strings(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        value = [value]
    return tuple(str(v).strip().upper() for v in value)


def _canonical_view(hu: np.ndarray, orientation) -> np.ndarray:
    """Flip an axial slice whose rows or columns run against the usual LPS display, so the head
    points up (anterior at the top rows) and patient right is on the left, as the store expects."""
    if orientation is None:
        return hu
    row, col = orientation[:3], orientation[3:]
    if abs(row[0]) > 0.5 and row[0] < 0:
        hu = hu[:, ::-1]
    if abs(col[1]) > 0.5 and col[1] < 0:
        hu = hu[::-1, :]
    return np.ascontiguousarray(hu)


HEADER_TAGS = ["PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness", "Rows",
               "Columns", "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "SOPInstanceUID",
               "SeriesDescription", "ImageType", "ConvolutionKernel"]


def _dcmread(path: Path, **kwargs):
    try:
        import pydicom  # here, not at import: listing datasets must not pay for it
        return pydicom.dcmread(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise InputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _pixels_hu(ds, path: Path, orientation) -> np.ndarray:
    if "PixelData" not in ds:
        raise InputError(path, "DICOM file has no pixel data")
    try:
        hu = dicom_to_hu(ds)
    except Exception as exc:  # noqa: BLE001 - truncated data, missing decoder, ...
        raise InputError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if hu.ndim != 2:
        raise InputError(path, f"expected a single 2-D frame, got pixel array of shape {hu.shape}")
    return _canonical_view(hu, orientation)


def decode_hu(path: Path) -> np.ndarray:
    """Only the pixels of one file, in HU and the canonical view: what a decoding worker needs
    once a header pass has the geometry (reading every tag again cost as much as the decode)."""
    path = Path(path)
    ds = _dcmread(path)
    try:
        iop = ds.get("ImageOrientationPatient")
        orientation = tuple(float(v) for v in iop) if iop is not None else None
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"invalid geometry tags ({type(exc).__name__}: {exc})") from None
    return _pixels_hu(ds, path, orientation)


def read_slice(path: Path, *, pixels: bool = True) -> DicomSlice:
    """One single-frame DICOM file, decoded to HU. Raises InputError on any problem."""
    path = Path(path)
    # Without pixels only the tags used below are converted: the header pass over 752k RSNA
    # files spent most of its time turning tags nobody reads into Python values.
    ds = _dcmread(path, stop_before_pixels=not pixels, specific_tags=None if pixels else HEADER_TAGS)
    try:
        ps = ds.get("PixelSpacing")
        spacing = (float(ps[0]), float(ps[1])) if ps is not None else (float("nan"), float("nan"))
        ipp = ds.get("ImagePositionPatient")
        iop = ds.get("ImageOrientationPatient")
        position = tuple(float(v) for v in ipp) if ipp is not None else None
        orientation = tuple(float(v) for v in iop) if iop is not None else None
        if position is not None and len(position) != 3:
            raise ValueError(f"ImagePositionPatient has {len(position)} values")
        if orientation is not None and len(orientation) != 6:
            raise ValueError(f"ImageOrientationPatient has {len(orientation)} values")
        thick = ds.get("SliceThickness")
        thickness = float(thick) if thick not in (None, "") else None
        shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    except Exception as exc:  # noqa: BLE001 - malformed numeric tags
        raise InputError(path, f"invalid geometry tags ({type(exc).__name__}: {exc})") from None
    hu = np.zeros((0, 0), np.float32)
    if pixels:
        hu = _pixels_hu(ds, path, orientation)
        shape = hu.shape
    return DicomSlice(
        path=path, hu=hu, position=position, orientation=orientation, spacing_yx=spacing,
        thickness=thickness,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "")),
        shape=shape,
        image_type=_strings(ds.get("ImageType")),
        kernel=" ".join(_strings(ds.get("ConvolutionKernel"))),
    )


# Top-level wrappers for worker processes: a failure comes back as a value, because an exception
# raised in a worker would stop the whole parallel map (and InputError does not pickle).

def header_or_problem(path) -> tuple[DicomSlice | None, str | None]:
    """(header-only DicomSlice, None) or (None, problem)."""
    try:
        return read_slice(Path(path), pixels=False), None
    except InputError as exc:
        return None, exc.problem


def hu_or_problem(path) -> tuple[np.ndarray | None, str | None]:
    """(HU (H, W) float32, None) or (None, problem)."""
    try:
        return read_slice(Path(path)).hu, None
    except InputError as exc:
        return None, exc.problem


def hu_at_size(path, size: int) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    """(int16 HU resampled to size x size, native (H, W), None) or (None, None, problem).

    For decoding workers: resampling there keeps the main process (the store writer) from
    becoming the bottleneck, and sends a quarter of the bytes back at 512 -> 256."""
    try:
        hu = decode_hu(path)
    except InputError as exc:
        return None, None, exc.problem
    import torch

    from ichbench.preprocess.resize import resize_slices
    torch.set_num_threads(1)  # one worker per core: torch's own threads would only contend
    return resize_slices(hu[None], size)[0], hu.shape, None  # int16, as stored: half the bytes to send


def slice_normal(orientation) -> np.ndarray:
    """Unit normal of the slice plane (row cosine x column cosine)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def is_axial(orientation) -> bool:
    """Row and column direction cosines lying (nearly) in the x-y plane; a gantry tilt up to
    about 25 degrees still counts as axial."""
    if orientation is None:
        return True  # untagged: assume axial, as scanners export head CT
    return abs(slice_normal(orientation)[2]) > 0.9


def order_series(slices: list[DicomSlice], where: Path) -> tuple[list[DicomSlice], tuple[float, float, float]]:
    """Check that the slices form one axial series and sort them along the slice normal.

    Works on header-only slices (read with pixels=False). Returns (sorted slices, (z, y, x)
    spacing in mm) with z the median distance between neighbouring slices (SliceThickness for a
    single slice). Raises InputError naming `where` for a mixed, non-axial or inconsistent series."""
    if not slices:
        raise InputError(where, "series has no readable slices")
    uids = {s.series_uid for s in slices}
    if len(uids) > 1:
        raise InputError(where, f"folder mixes {len(uids)} series (SeriesInstanceUIDs differ)")
    if not all(is_axial(s.orientation) for s in slices):
        raise InputError(where, "series is not axial (ImageOrientationPatient)")
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise InputError(where, f"slices have different sizes {sorted(shapes)}")
    spacings = {s.spacing_yx for s in slices}
    if len(spacings) > 1:
        raise InputError(where, f"slices have different PixelSpacing {sorted(spacings)}")
    if all(s.position is not None for s in slices):
        orients = np.array([s.orientation for s in slices if s.orientation is not None])
        if len(orients) and np.abs(orients - orients[0]).max() > 1e-3:
            raise InputError(where, "slices have different ImageOrientationPatient")
        normal = slice_normal(slices[0].orientation) if slices[0].orientation else np.array([0.0, 0.0, 1.0])
        # distance along the normal, not position[2]: a tilted gantry shifts y as well
        depth = {id(s): float(np.dot(s.position, normal)) for s in slices}
        ordered = sorted(slices, key=lambda s: depth[id(s)])
        dz = np.diff([depth[id(s)] for s in ordered])
        if len(dz) and (np.abs(dz) < DUPLICATE_MM).any():
            k = int(np.argmax(np.abs(dz) < DUPLICATE_MM))
            raise InputError(where, f"two slices share the same position ({ordered[k].path.name} and "
                                    f"{ordered[k + 1].path.name}: duplicate slices in the series)")
        dz_mm = float(np.median(dz)) if len(dz) else float(ordered[0].thickness or float("nan"))
    else:
        ordered = sorted(slices, key=lambda s: s.path.name)
        dz_mm = float(ordered[0].thickness or float("nan"))
    sy, sx = ordered[0].spacing_yx
    return ordered, (abs(dz_mm), sy, sx)


def stack_series(slices: list[DicomSlice], where: Path
                 ) -> tuple[np.ndarray, tuple[float, float, float], list[DicomSlice]]:
    """Sort one series' decoded slices along the patient axis and stack them.

    Returns (hu (S,H,W), spacing (z,y,x), sorted slices), slices in increasing distance along the
    slice normal (inferior to superior for axial head CT). Raises InputError for a mixed,
    non-axial or inconsistent series."""
    ordered, spacing = order_series(slices, where)
    shapes = {s.hu.shape for s in ordered}
    if len(shapes) > 1:
        raise InputError(where, f"slices have different sizes {sorted(shapes)}")
    return np.stack([s.hu for s in ordered]), spacing, ordered
