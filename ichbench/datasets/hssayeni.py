"""Hssayeni et al. 2020, PhysioNet ct-ich 1.3.x: 75 head CTs of TBI patients with ICH masks.

Layout (`--source` is the unpacked PhysioNet folder, or a folder above it):

    ct_scans/NNN.nii                     CT in HU, NNN = patient number (049-130 without 059-065)
    masks/NNN.nii                        hemorrhage mask on the CT's grid
    hemorrhage_diagnosis_raw_ct.csv      one row per slice: PatientNumber, SliceNumber (1-based,
                                         along the file's third axis), Intraventricular,
                                         Intraparenchymal, Subarachnoid, Epidural, Subdural,
                                         No_Hemorrhage, Fracture_Yes_No
    Patient_demographics.csv             two-row header; not read (labels come from the CSV above)

Orientation. The files are not laid out head-up: Spahr et al. (the paper this benchmark
reproduces) rotate every volume 90 degrees counter-clockwise in the plane of the first two axes
(`np.rot90(vol, axes=(0, 1))` in their generate_2DSegDataset.py, "for head pointing upward").
We apply the same rotation, independent of the affine: in store terms the rows are the file's
second axis reversed and the columns its first axis. For a file stored LAS (the usual DICOM to
NIfTI layout) that is exactly the store's anterior-up, patient-right-on-the-left convention
(`nifti_io`); a file whose affine says otherwise in-plane is reported once as a warning. The
slice order follows the affine's third axis so that z increases, and SliceNumber k is always
file slice k-1 wherever it ends up.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ichbench import LABEL_ORDER
from ichbench.datasets.base import (SEGMENTATION, UNKNOWN_LABEL, Dataset, IngestOptions, IngestReport, Volume,
                                    find_below, folder_listing, locate_root)
from ichbench.datasets.nifti_io import NiftiVolume, closest_ornt, file_to_store, load_ct, load_mask, open_image
from ichbench.errors import InputError, LayoutError
from ichbench.plugins import hookimpl

EXPECTED_VOLUMES = 75
EXPECTED_SLICES = 2814
DIAGNOSIS_CSV = "hemorrhage_diagnosis_raw_ct.csv"
# CSV column -> store subtype name
SUBTYPE_COLUMNS = {"Intraparenchymal": "iph", "Intraventricular": "ivh", "Subarachnoid": "sah",
                   "Subdural": "sdh", "Epidural": "edh"}
REQUIRED_COLUMNS = ("PatientNumber", "SliceNumber", *SUBTYPE_COLUMNS, "No_Hemorrhage")
NIFTI_RE = re.compile(r"^(\d+)\.nii(\.gz)?$")
_SUB_INDEX = {name: LABEL_ORDER.index(name) for name in SUBTYPE_COLUMNS.values()}


def find_root(source: Path) -> Path | None:
    """The folder holding ct_scans/: source itself or the one such folder up to 4 levels below
    (the PhysioNet download nests it as physionet.org/files/ct-ich/<version>/)."""
    return find_below(source, lambda p: (p / "ct_scans").is_dir(), "ct-ich folder", max_depth=4)


def authors_transform(affine) -> np.ndarray:
    """The authors' head-up rotation as a nibabel orientation transform to the store axes:
    columns <- file axis 0, rows <- file axis 1 reversed, slices <- file axis 2 (reversed when
    the affine says that axis runs superior -> inferior)."""
    ornt = closest_ornt(affine)
    z_flip = -1 if ornt is not None and ornt[2, 0] == 2 and ornt[2, 1] < 0 else 1
    return np.array([[0, 1], [1, -1], [2, z_flip]], dtype=float)


def _nifti_files(folder: Path) -> dict[int, Path]:
    out = {}
    for p in sorted(folder.iterdir()):
        m = NIFTI_RE.match(p.name)
        if m and p.is_file():
            out.setdefault(int(m.group(1)), p)
    return out


def parse_diagnosis(path: Path, report: IngestReport) -> dict[int, dict[int, np.ndarray]] | None:
    """{patient: {slice number (1-based): (7,) uint8 label row}} from the diagnosis CSV.

    Bad rows are reported and left out; None (reported) when the file is unusable as a whole."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.skip(path, f"diagnosis CSV cannot be read ({type(exc).__name__}: {exc}); slice subtypes unknown")
        return None
    if not rows or not any(c.strip() for c in rows[0]):
        report.skip(path, "diagnosis CSV is empty; slice subtypes unknown")
        return None
    header = [c.strip() for c in rows[0]]
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c not in col]
    if missing:
        report.skip(path, f"diagnosis CSV lacks columns {', '.join(missing)}; slice subtypes unknown")
        return None
    out: dict[int, dict[int, np.ndarray]] = {}
    first_line: dict[tuple[int, int], int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{line}"
        try:
            values = {c: int(float(row[col[c]])) for c in REQUIRED_COLUMNS}
        except (ValueError, IndexError):
            report.skip(where, "row has a missing or non-numeric value in "
                               + ", ".join(REQUIRED_COLUMNS) + "; ignored")
            continue
        patient, number = values["PatientNumber"], values["SliceNumber"]
        if number < 1:
            report.skip(where, f"SliceNumber {number} for patient {patient} (numbers start at 1); ignored")
            continue
        if (patient, number) in first_line:
            report.skip(where, f"duplicate row for patient {patient} slice {number} "
                               f"(first at line {first_line[patient, number]}); ignored")
            continue
        if any(values[c] not in (0, 1) for c in (*SUBTYPE_COLUMNS, "No_Hemorrhage")):
            report.skip(where, f"label values must be 0 or 1 for patient {patient} slice {number}; ignored")
            continue
        first_line[patient, number] = line
        label = np.zeros(len(LABEL_ORDER), np.uint8)
        label[0] = values["No_Hemorrhage"]
        label[1] = 1 - values["No_Hemorrhage"]
        for column, sub in SUBTYPE_COLUMNS.items():
            label[_SUB_INDEX[sub]] = values[column]
        out.setdefault(patient, {})[number] = label
    return out


class HssayeniDataset(Dataset):
    name = "hssayeni"
    description = ("Hssayeni et al. 2020 (PhysioNet ct-ich 1.3.x): 75 TBI head CTs, 36 with ICH, voxel masks "
                   "and per-slice subtype labels")
    roles = (SEGMENTATION,)
    source_url = "https://physionet.org/content/ct-ich/1.3.1/"
    licence = ("PhysioNet Restricted Health Data License 1.5.0 (register, sign the data use agreement); "
               "versions up to 1.2.0 were CC BY 4.0")
    layout = (
        "--source is the unpacked PhysioNet folder (or a folder up to 4 levels above it):\n"
        "  ct_scans/NNN.nii                  CT (HU), 75 volumes, NNN = 049-130 without 059-065\n"
        "  masks/NNN.nii                     hemorrhage mask, same grid as the CT\n"
        "  hemorrhage_diagnosis_raw_ct.csv   per slice: PatientNumber, SliceNumber (1-based), Intraventricular,\n"
        "                                    Intraparenchymal, Subarachnoid, Epidural, Subdural, No_Hemorrhage,\n"
        "                                    Fracture_Yes_No (2,814 slices)\n"
        "  Patient_demographics.csv          not read\n"
        "slices are rotated 90 degrees counter-clockwise so the head points up, as Spahr et al. did")

    def check_layout(self, source: Path) -> None:
        expected = f"expected ct_scans/NNN.nii, masks/NNN.nii and {DIAGNOSIS_CSV} under {source}"
        root = locate_root(source, find_root, expected)
        problems = []
        if not _nifti_files(root / "ct_scans"):
            problems.append(f"no NNN.nii files in {root / 'ct_scans'} (it holds: {folder_listing(root / 'ct_scans')})")
        if not (root / "masks").is_dir():
            problems.append(f"no masks/ folder in {root}")
        if not (root / DIAGNOSIS_CSV).is_file():
            problems.append(f"no {DIAGNOSIS_CSV} in {root}")
        if problems:
            raise LayoutError(f"{expected}; found: {'; '.join(problems)} (folder holds: {folder_listing(root)})")

    def read(self, source: Path, role: str, options: IngestOptions,
             report: IngestReport) -> Iterator[Volume]:
        source = Path(source)
        root = find_root(source)
        if root is None:  # check_layout ran first; this only guards direct calls
            self.check_layout(source)
        csv_path = root / DIAGNOSIS_CSV
        diagnosis = parse_diagnosis(csv_path, report)
        cts = _nifti_files(root / "ct_scans")
        masks = _nifti_files(root / "masks")

        for patient in sorted(set(masks) - set(cts)):
            report.skip(masks[patient], "mask without a CT scan in ct_scans/; ignored")
        if diagnosis is not None:
            for patient in sorted(set(diagnosis) - set(cts)):
                report.skip(csv_path, f"{len(diagnosis[patient])} rows for patient {patient}, but "
                                      f"ct_scans/{patient:03d}.nii does not exist; ignored")

        misoriented, n_volumes, n_slices = [], 0, 0
        report.expect(volumes=len(cts))
        for patient, ct_path in sorted(cts.items()):
            if patient not in masks:
                report.skip(root / "masks" / ct_path.name, "hemorrhage mask is missing; volume skipped")
                continue
            try:
                img = open_image(ct_path)
                transform = authors_transform(img.affine)
                ct = load_ct(ct_path, transform=transform)
                mask = load_mask(masks[patient], ct, "hemorrhage mask")
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                continue
            try:
                if not np.array_equal(file_to_store(img.affine, ct_path)[:2], transform[:2]):
                    misoriented.append(ct_path.name)
            except InputError:
                misoriented.append(ct_path.name)
            labels, subtypes = self._labels(patient, ct, mask, diagnosis, csv_path, report)
            n_volumes += 1
            n_slices += ct.data.shape[0]
            yield Volume(id=ct_path.name.split(".")[0], hu=ct.data, spacing=ct.spacing, mask=mask,
                         labels=labels, subtypes=subtypes, source=str(ct_path))

        if misoriented:
            report.warn(f"{len(misoriented)} CT file(s) have an affine whose in-plane axes disagree with the "
                        f"authors' head-up rotation, which was applied anyway: {', '.join(misoriented[:10])}")
        if (n_volumes, n_slices) != (EXPECTED_VOLUMES, EXPECTED_SLICES):
            report.warn(f"found {n_volumes} usable volumes with {n_slices} slices in {root}, "
                        f"expected {EXPECTED_VOLUMES} volumes with {EXPECTED_SLICES:,} slices")

    @staticmethod
    def _labels(patient: int, ct: NiftiVolume, mask: np.ndarray, diagnosis, csv_path: Path,
                report: IngestReport) -> tuple[np.ndarray | None, list[str] | None]:
        """Per-slice labels in store slice order, and the volume's subtypes (union over its slices).

        Subtype labels are made consistent with the mask, which the store's no_ich/any follow:
        a slice with an empty mask has no subtype; a slice with hemorrhage in the mask but none in
        the CSV has unknown subtypes. Disagreements are counted in a warning."""
        if diagnosis is None:
            return None, None
        rows = diagnosis.get(patient)
        name = ct.path.name
        if not rows:
            report.warn(f"{csv_path.name}: no rows for patient {patient} ({name}); its subtypes are unknown")
            return None, None
        n_file = ct.file_shape[2]
        beyond = sorted(k for k in rows if k > n_file)
        if beyond:
            report.skip(csv_path, f"rows for patient {patient} slices {', '.join(map(str, beyond[:10]))} but "
                                  f"{name} has {n_file} slices; ignored")
        labels = np.full((ct.data.shape[0], len(LABEL_ORDER)), UNKNOWN_LABEL, np.uint8)
        unlabeled = []
        for pos, file_index in enumerate(ct.slice_index):
            row = rows.get(int(file_index) + 1)
            if row is None:
                unlabeled.append(int(file_index) + 1)
            else:
                labels[pos] = row
        if unlabeled:
            report.warn(f"{csv_path.name}: no rows for patient {patient} slices "
                        f"{', '.join(map(str, unlabeled[:10]))}; their subtypes are unknown")

        has_ich = mask.reshape(len(mask), -1).any(axis=1)
        sub_cols = list(_SUB_INDEX.values())
        known = labels[:, 1] != UNKNOWN_LABEL
        csv_only = known & (labels[:, 1] == 1) & ~has_ich
        mask_only = known & (labels[:, 1] == 0) & has_ich
        labels[np.ix_(~has_ich, sub_cols)] = 0
        labels[np.ix_(mask_only, sub_cols)] = UNKNOWN_LABEL
        if csv_only.any() or mask_only.any():
            report.warn(f"{name}: {int(csv_only.sum())} slice(s) labelled hemorrhage in {csv_path.name} have an "
                        f"empty mask (subtypes set to 0), {int(mask_only.sum())} slice(s) with hemorrhage in the "
                        f"mask are labelled No_Hemorrhage (subtypes unknown)")
        # after reconciling, so a volume's subtypes never outrun its mask
        present = (labels[:, sub_cols] == 1).any(axis=0)
        return labels, [s for s, p in zip(_SUB_INDEX, present) if p]


@hookimpl
def register_datasets(register):
    register(HssayeniDataset())
