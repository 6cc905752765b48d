"""Writing phantom volumes as the real files the other datasets ship: DICOM series, NIfTI masks and
RSNA-style label CSVs, so the phantom is ingested through the same readers as real data.

Source layout (default `$ICHBENCH_HOME/raw/phantom`):

    phantom.json                              generation options (prepare() compares these)
    segmentation/<VOLID>/dicom/IM0000.dcm ... one file per slice, z increasing with the number
    segmentation/<VOLID>/ICH_mask.nii.gz      hemorrhage mask (uint8 0/1)
    segmentation/<VOLID>/ICH_classes.nii.gz   subtype class map (uint8, 0 none, k = SUBTYPES[k-1])
    segmentation/<VOLID>/brain.nii.gz         intracranial cavity (uint8 0/1)
    segmentation/labels.csv                   per-slice subtype labels (see LABELS_HEADER)
    pretraining/stage_2_train/ID_<id>.dcm     RSNA 2019 layout, read by the rsna reader
    pretraining/stage_2_train.csv             `ID_<id>_<subtype>,Label`

Orientation. A volume array is (S, H, W) = (slice, row, column); DICOM pixel_array[r, c] of slice s
is hu[s, r, c], with ImageOrientationPatient [1,0,0,0,1,0] (columns run to patient left +x, rows
to posterior +y, LPS) and ImagePositionPatient z increasing with s. The NIfTI array is the same
data transposed to (W, H, S) = (i, j, k), i.e. nifti[i, j, k] = mask[k, j, i], with an affine that
maps (i, j, k) to the same patient points in RAS (x and y negated from LPS). Axis codes are
therefore ('L', 'P', 'S'). `read_nifti_mask` reorients whatever it gets to those codes and
transposes back, so a mask always lines up with its DICOM series pixel for pixel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from ichbench import SUBTYPES
from ichbench.errors import InputError

if TYPE_CHECKING:   # pydicom, nibabel and the generator (scipy) load when files are written or read
    from pydicom.dataset import Dataset as DicomDataset

    from ichbench.datasets.phantom.generator import PhantomVolume

MANIFEST = "phantom.json"
SEG_DIR, PRE_DIR = "segmentation", "pretraining"
LABELS_NAME = "labels.csv"
MASK_NAME, BRAIN_NAME, CLASSES_NAME = "ICH_mask.nii.gz", "brain.nii.gz", "ICH_classes.nii.gz"
LABELS_HEADER = ["volume", "slice", "sop_instance_uid", "any", *SUBTYPES]
RSNA_SUBTYPES = {"epidural": "edh", "intraparenchymal": "iph", "intraventricular": "ivh",
                 "subarachnoid": "sah", "subdural": "sdh"}       # RSNA column -> our subtype
RSNA_ORDER = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]
RESCALE_INTERCEPT = -1024.0
NIFTI_AXCODES = ("L", "P", "S")


def _uid(vol: PhantomVolume, *parts) -> str:
    from pydicom.uid import generate_uid
    # deterministic UIDs: reruns with the same seed write byte-identical headers
    return generate_uid(entropy_srcs=["ichbench-phantom", str(vol.seed), vol.id, *map(str, parts)])


def origin(vol: PhantomVolume) -> tuple[float, float, float]:
    """Patient (LPS) position of voxel [0, 0, 0]: the volume is centred on the origin."""
    S, H, W = vol.hu.shape
    dz, dy, dx = vol.spacing
    return (-(W - 1) / 2 * dx, -(H - 1) / 2 * dy, -(S - 1) / 2 * dz)


def dicom_slice(vol: PhantomVolume, k: int, *, sop_uid: str, series_uid: str, study_uid: str,
                frame_uid: str) -> DicomDataset:
    """Slice k of a volume as a CT Image Storage dataset (explicit VR little endian, uint16,
    raw = HU + 1024)."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    S, H, W = vol.hu.shape
    dz, dy, dx = vol.spacing
    x0, y0, z0 = origin(vol)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientID = vol.id
    ds.PatientName = f"Phantom^{vol.id}"
    ds.StudyDate = ds.SeriesDate = "20000101"    # fixed: files do not change between reruns
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.Manufacturer = "ichbench phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "Phantom head non-contrast"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.KVP = 120
    ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), round(z0 + k * dz, 4)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(z0 + k * dz, 4)
    ds.SliceThickness = dz
    ds.PixelSpacing = [round(dy, 6), round(dx, 6)]   # row spacing, column spacing
    ds.Rows, ds.Columns = H, W
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, 80]                       # brain and subdural windows, MultiValue as
    ds.WindowWidth = [80, 200]                       # many scanners (and RSNA) write them
    raw = np.rint(vol.hu[k] - RESCALE_INTERCEPT)
    if raw.min() < 0 or raw.max() > 65535:
        raise ValueError(f"{vol.id} slice {k}: HU outside the uint16 storage range")
    ds.PixelData = raw.astype("<u2").tobytes()
    return ds


def write_series(vol: PhantomVolume, folder: Path, names=None) -> list[tuple[Path, str]]:
    """One DICOM file per slice. `names(k, sop_uid)` gives the file name (default IM%04d.dcm).
    Returns (path, SOPInstanceUID) per slice, in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = _uid(vol, "study"), _uid(vol, "series"), _uid(vol, "frame")
    out = []
    for k in range(vol.hu.shape[0]):
        sop = _uid(vol, "sop", k)
        ds = dicom_slice(vol, k, sop_uid=sop, series_uid=series, study_uid=study, frame_uid=frame)
        path = folder / (names(k, sop) if names else f"IM{k:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        out.append((path, sop))
    return out


def nifti_affine(vol: PhantomVolume) -> np.ndarray:
    """(i, j, k) = (column, row, slice) -> RAS mm, matching the DICOM geometry."""
    dz, dy, dx = vol.spacing
    x0, y0, z0 = origin(vol)
    return np.array([[-dx, 0, 0, -x0],
                     [0, -dy, 0, -y0],
                     [0, 0, dz, z0],
                     [0, 0, 0, 1]], dtype=np.float64)


def write_nifti_mask(mask: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib
    img = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def read_nifti_mask(path: Path) -> np.ndarray:
    """A NIfTI mask as an (S, H, W) bool array in the DICOM series' orientation (see above)."""
    return _read_oriented(path) > 0.5


def read_nifti_classes(path: Path, n_classes: int) -> np.ndarray:
    """A NIfTI class map as (S, H, W) uint8 ids 0..n_classes, oriented as `read_nifti_mask`."""
    data = _read_oriented(path)
    if (data != np.rint(data)).any() or data.min(initial=0) < 0 or data.max(initial=0) > n_classes:
        raise InputError(path, f"class ids must be whole numbers 0..{n_classes}, found {np.unique(data)[:8].tolist()}")
    return data.astype(np.uint8)


def _read_oriented(path: Path) -> np.ndarray:
    """A NIfTI image's voxels, reoriented to NIFTI_AXCODES and transposed to (S, H, W)."""
    import nibabel as nib
    from nibabel import orientations as nio
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on bad files
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D mask, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(path, "mask contains NaN or infinite values")
    ornt = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(NIFTI_AXCODES))
    data = nio.apply_orientation(data, ornt)
    return np.ascontiguousarray(data.transpose(2, 1, 0))


# -- the two layouts -------------------------------------------------------------------------------

def _summary(vol: PhantomVolume) -> dict:
    return {"id": vol.id, "seed": vol.seed, "slices": int(vol.hu.shape[0]), "subtypes": vol.subtypes}


def write_segmentation(vols, root: Path) -> list[dict]:
    """Per volume: its DICOM series, ICH mask and brain mask; one labels.csv for all slices.
    `vols` may be a generator: volumes are written one at a time, so memory stays flat."""
    from ichbench.datasets.phantom.generator import class_map
    root.mkdir(parents=True, exist_ok=True)
    rows, summary = [], []
    for vol in vols:
        summary.append(_summary(vol))
        vdir = root / vol.id
        written = write_series(vol, vdir / "dicom")
        affine = nifti_affine(vol)
        write_nifti_mask(vol.mask, affine, vdir / MASK_NAME)
        write_nifti_mask(vol.brain, affine, vdir / BRAIN_NAME)
        write_nifti_mask(class_map(vol.subtype_masks), affine, vdir / CLASSES_NAME)
        anyich = vol.mask.reshape(len(vol.mask), -1).any(axis=1)
        for k, (_, sop) in enumerate(written):
            rows.append([vol.id, k, sop, int(anyich[k]), *map(int, vol.slice_labels[k])])
    with open(root / LABELS_NAME, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LABELS_HEADER)
        w.writerows(rows)
    return summary


def rsna_id(sop_uid: str) -> str:
    """RSNA-style image id: 'ID_' and 9 hex digits (derived from the SOPInstanceUID)."""
    return "ID_" + hashlib.sha256(sop_uid.encode()).hexdigest()[:9]


def write_rsna(vols, root: Path) -> list[dict]:
    """The RSNA 2019 layout: flat stage_2_train/ID_*.dcm plus the long-format label CSV."""
    img_dir = root / "stage_2_train"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows, seen, summary = [], set(), []
    for vol in vols:
        summary.append(_summary(vol))
        ids = {}

        def name(k, sop, ids=ids):
            ids[k] = rsna_id(sop)
            if ids[k] in seen:
                raise RuntimeError(f"RSNA id collision for {vol.id} slice {k}")  # 36 bits: never
            seen.add(ids[k])
            return ids[k] + ".dcm"

        write_series(vol, img_dir, names=name)
        anyich = vol.mask.reshape(len(vol.mask), -1).any(axis=1)
        for k in range(len(vol.hu)):
            lab = dict(zip(SUBTYPES, vol.slice_labels[k]))
            for col in RSNA_ORDER:
                value = anyich[k] if col == "any" else lab[RSNA_SUBTYPES[col]]
                rows.append([f"{ids[k]}_{col}", int(value)])
    with open(root / "stage_2_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Label"])
        w.writerows(rows)
    return summary


# -- the whole source folder -----------------------------------------------------------------------

def read_manifest(source: Path) -> dict | None:
    try:
        return json.loads((Path(source) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def build_source(source: Path, settings: dict, seg_vols, pre_vols) -> None:
    """Write everything into a temporary sibling folder, then swap it into place, so an
    interrupted generation never leaves a half-written source that looks complete.
    seg_vols/pre_vols are iterables of PhantomVolume, consumed one volume at a time."""
    source = Path(source)
    if source.exists() and any(source.iterdir()) and read_manifest(source) is None:
        raise InputError(source, f"exists and is not a phantom folder (no readable {MANIFEST}); "
                                 "refusing to overwrite it — pass another --source")
    source.parent.mkdir(parents=True, exist_ok=True)
    tmp = source.parent / f".{source.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        seg_summary = write_segmentation(seg_vols, tmp / SEG_DIR)
        pre_summary = write_rsna(pre_vols, tmp / PRE_DIR)
        # written last: its presence marks a complete folder
        (tmp / MANIFEST).write_text(json.dumps({"options": settings, "segmentation": seg_summary,
                                                "pretraining": pre_summary}, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = source.parent / f".{source.name}.old-{os.getpid()}"
    if source.exists():
        source.rename(old)
    tmp.rename(source)
    shutil.rmtree(old, ignore_errors=True)

