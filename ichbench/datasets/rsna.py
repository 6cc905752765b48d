"""RSNA 2019 Intracranial Hemorrhage Detection: 752,803 slices with slice-level subtype labels,
the paper's pretraining data (§2.2.3, §2.6).

Layout (the Kaggle download, unpacked):

    stage_2_train/ID_<image>.dcm      one axial slice per file, flat
    stage_2_train.csv                 ID,Label with ID = ID_<image>_<subtype>, subtype one of
                                      epidural, intraparenchymal, intraventricular,
                                      subarachnoid, subdural, any

How it is read:
  1. The CSV is parsed once, streaming. Exact duplicate rows (the real file has them) are
     dropped with a warning; rows that contradict each other, images with missing subtypes, and
     a subtype positive while `any` is 0 are reported and the image left out.
  2. CSV images without a file, and files without CSV rows, are reported.
  3. A header pass (no pixels, in `options.workers` processes) finds each slice's series and its
     position along the slice normal. The anonymised RSNA files lack SliceThickness, so the z
     spacing of a series is the median distance between its slices (SliceThickness only for a
     lone slice); unreadable headers and non-axial slices are reported here.
  4. Selection. "paper" (§2.6): every ICH slice plus an equal number of non-ICH slices drawn
     with `options.seed`; "all": every slice. Then `options.holdout` of the selected slices
     (at most half of them) are drawn, with the same generator, for validation.
  5. Steps 1-4 make a `SlicePlan`: the ingest's workers decode and resample the planned slices
     and write them, a whole store shard each (`ichbench.ingest.planned`), so no pixel passes
     through one process. A file whose pixels cannot be decoded (e.g. the truncated
     ID_6431af929.dcm) is reported and skipped, so a selection can end a few slices short of
     its target.

Store convention (how to recover the validation slices): volumes are series. A training slice
belongs to the volume whose id is its SeriesInstanceUID; a validation slice to the volume
`val/<SeriesInstanceUID>`. Training volumes come first in the store, then validation volumes,
each contiguous and in slice order. `validation_mask(store)` turns this into a per-slice boolean.
Slice labels: [no_ich, any, iph, ivh, sah, sdh, edh], no_ich = 1 - any; a volume's `subtypes` are
those present on its stored slices.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np

from ichbench import LABEL_ORDER, SUBTYPES
from ichbench.datasets.base import PRETRAINING, Dataset, IngestOptions, IngestReport, SlicePlan, open_csv
from ichbench.datasets.dicom_io import hu_at_size
from ichbench.parallel import OrderedPool
from ichbench.datasets.rsna_series import Files, Series, scan_series
from ichbench.errors import IchbenchError, InputError, LayoutError
from ichbench.plugins import hookimpl
from ichbench.store.layout import VALIDATION_PREFIX

IMAGE_DIR = "stage_2_train"
LABELS_CSV = "stage_2_train.csv"
RSNA_COLUMNS = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
# RSNA column -> position in LABEL_ORDER ([no_ich, any, iph, ivh, sah, sdh, edh])
_TO_LABEL = {"any": 1, "intraparenchymal": 2, "intraventricular": 3, "subarachnoid": 4,
             "subdural": 5, "epidural": 6}
_COLUMN = {name: i for i, name in enumerate(RSNA_COLUMNS)}
_UNSET = 255


# -- labels ---------------------------------------------------------------------------------------

def read_labels(path: Path, report: IngestReport) -> tuple[list[str], np.ndarray, set[str]]:
    """Parse stage_2_train.csv. Returns (image ids, labels (N, 7) uint8 in LABEL_ORDER) for the
    images whose six labels are present, unique and consistent, and the set of images left out
    (those are reported here)."""
    path = Path(path)
    index: dict[str, int] = {}
    ids: list[str] = []
    table = bytearray()           # 6 bytes per image, RSNA_COLUMNS order; compact for 752k ids
    conflicts: dict[str, str] = {}
    duplicates = 0
    with open_csv(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError(path, "empty CSV: expected the header 'ID,Label' and one row per image and subtype")
        if [h.strip() for h in header] != ["ID", "Label"]:
            raise InputError(path, f"expected the header 'ID,Label', found {','.join(header)!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                report.skip(f"{path}:{line}", f"expected 2 fields (ID,Label), found {len(row)}")
                continue
            image, _, column = row[0].strip().rpartition("_")
            c = _COLUMN.get(column)
            if c is None or not image.startswith("ID_") or len(image) <= 3:
                report.skip(f"{path}:{line}", f"ID {row[0]!r} is not ID_<image>_<subtype> with subtype "
                                              f"one of {', '.join(RSNA_COLUMNS)}")
                continue
            label = row[1].strip()
            if label not in ("0", "1"):
                report.skip(f"{path}:{line}", f"label {row[1]!r} for {row[0]} is not 0 or 1")
                continue
            i = index.get(image)
            if i is None:
                i = index[image] = len(ids)
                ids.append(image)
                table.extend(b"\xff" * 6)
            old, new = table[6 * i + c], int(label)
            if old == _UNSET:
                table[6 * i + c] = new
            elif old == new:
                duplicates += 1
            elif image not in conflicts:
                conflicts[image] = f"conflicting duplicate rows for {image}_{column} (0 and 1; line {line})"
    if not ids:
        raise InputError(path, "no label rows (expected rows ID_<image>_<subtype>,Label)")
    if duplicates:
        report.warn(f"{path}: dropped {duplicates} duplicated rows")
    raw = np.frombuffer(bytes(table), np.uint8).reshape(-1, 6)
    keep = np.ones(len(ids), bool)
    for image, problem in conflicts.items():
        report.skip(path, f"{problem}; image left out")
        keep[index[image]] = False
    for i in np.flatnonzero((raw == _UNSET).any(axis=1) & keep):
        missing = [RSNA_COLUMNS[c] for c in np.flatnonzero(raw[i] == _UNSET)]
        report.skip(path, f"{ids[i]} has no row for {', '.join(missing)}; image left out")
        keep[i] = False
    bad = keep & (raw[:, _COLUMN["any"]] == 0) & (raw[:, :5] == 1).any(axis=1)
    for i in np.flatnonzero(bad):
        report.skip(path, f"{ids[i]} has a subtype labelled 1 but 'any' 0; image left out")
        keep[i] = False
    labels = np.zeros((len(ids), len(LABEL_ORDER)), np.uint8)
    for name, j in _TO_LABEL.items():
        labels[:, j] = raw[:, _COLUMN[name]]
    labels[:, 0] = 1 - labels[:, 1]
    kept = np.flatnonzero(keep)
    return [ids[i] for i in kept], labels[kept], {ids[i] for i in np.flatnonzero(~keep)}


# -- selection ------------------------------------------------------------------------------------

def select_slices(any_ich: np.ndarray, selection: str, holdout: int, seed: int,
                  report: IngestReport | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the selected slices (sorted) and, aligned with them, which are validation.

    "paper": all ICH slices plus as many non-ICH slices drawn at random; "all": every slice.
    `holdout` selected slices (at most half) are drawn for validation. Deterministic in `seed`."""
    any_ich = np.asarray(any_ich).astype(bool)
    rng = np.random.default_rng(seed)
    if selection == "paper":
        ich, non = np.flatnonzero(any_ich), np.flatnonzero(~any_ich)
        if len(non) < len(ich) and report is not None:
            report.warn(f"paper selection: only {len(non)} non-ICH slices for {len(ich)} ICH slices; all kept")
        picked = rng.choice(non, size=min(len(ich), len(non)), replace=False)
        selected = np.sort(np.concatenate([ich, picked]))
    elif selection == "all":
        selected = np.arange(len(any_ich))
    else:
        raise IchbenchError(f"unknown selection {selection!r}; expected 'paper' or 'all'")
    n_val = min(max(int(holdout), 0), len(selected) // 2)
    if n_val < holdout and report is not None:
        report.warn(f"holdout {holdout} exceeds half of the {len(selected)} selected slices; "
                    f"{n_val} held out for validation")
    is_val = np.zeros(len(selected), bool)
    is_val[rng.choice(len(selected), size=n_val, replace=False)] = True
    return selected, is_val


def validation_mask(store) -> np.ndarray:
    """(N,) bool: True for slices in `val/...` volumes of a pretraining store (see module doc)."""
    return store.validation_mask()


# -- the dataset ----------------------------------------------------------------------------------

class RsnaDataset(Dataset):
    name = "rsna"
    description = ("RSNA 2019 Intracranial Hemorrhage Detection: 752,803 head CT slices with "
                   "slice-level ICH subtype labels; the paper's pretraining data (ICH slices plus "
                   "as many non-ICH slices, 5,000 held out for validation)")
    roles = (PRETRAINING,)
    source_url = "https://www.kaggle.com/competitions/rsna-intracranial-hemorrhage-detection/data"
    licence = ("RSNA 2019 challenge data: non-commercial research and education use under the "
               "competition rules (accept them on Kaggle to download)")
    layout = ("stage_2_train/ID_<image>.dcm (one slice per file) and stage_2_train.csv "
              "(ID,Label rows, ID = ID_<image>_<subtype>)")

    def check_layout(self, source: Path) -> None:
        source = Path(source)
        images, labels = source / IMAGE_DIR, source / LABELS_CSV
        if images.is_dir() and labels.is_file():
            return
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in source.iterdir())[:10] if source.is_dir() else []
        raise LayoutError(
            f"{source}: expected {IMAGE_DIR}/ (ID_<image>.dcm files) and {LABELS_CSV} here; "
            + (f"found: {', '.join(found) or 'an empty folder'}" if source.is_dir() else "the folder does not exist"))

    def source_files(self, source: Path):
        # a sorted stream rather than rglob: 752k Path objects at once are ~150 MB
        source = Path(source)
        yield source / LABELS_CSV
        with os.scandir(source / IMAGE_DIR) as it:
            names = sorted(e.name for e in it if e.name.endswith(".dcm"))
        for n in names:
            yield source / IMAGE_DIR / n

    def plan(self, source: Path, role: str, options: IngestOptions, report: IngestReport,
             pool: OrderedPool) -> SlicePlan:
        """Steps 1-4; the ingest decodes the planned rows in its workers, a shard at a time (step 5)."""
        source = Path(source)
        self.check_layout(source)
        image_dir = source / IMAGE_DIR
        ids, labels, rejected = read_labels(source / LABELS_CSV, report)             # step 1
        names = _image_names(image_dir, report)
        row = _label_rows(names, ids, rejected, image_dir, source / LABELS_CSV, report)  # step 2
        del ids, rejected
        files = Files(image_dir, names)
        series = scan_series(files, row, pool, report)                              # step 3
        ok = (series.code >= 0) & (row >= 0)
        ok &= series.spacing_known(ok, files, report)
        usable = np.flatnonzero(ok)                                                  # step 4
        selected, is_val = select_slices(labels[row[usable], 1], options.selection, options.holdout,
                                         options.seed, report)
        chosen = usable[selected]
        report.expect(slices=len(chosen))
        del usable, selected
        chosen, group = series.store_order(chosen, is_val)
        return _plan(files, series, labels[row[chosen]], chosen, group, options.size)


def _image_names(image_dir: Path, report: IngestReport) -> list[str]:
    """Sorted image ids of the ID_<image>.dcm files; anything else is reported."""
    names: list[str] = []
    with os.scandir(image_dir) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.name.startswith("ID_") and e.name.endswith(".dcm") and e.is_file():
                names.append(e.name[:-4])
            else:
                report.skip(image_dir / e.name, "unexpected entry: images are files named ID_<image>.dcm")
    return sorted(names)


def _label_rows(names: list[str], ids: list[str], rejected: set[str], image_dir: Path, csv_path: Path,
                report: IngestReport) -> np.ndarray:
    """row[i]: image i's row in the label table, -1 without usable labels (reported, as are
    labelled images without a file)."""
    row_of = {image: r for r, image in enumerate(ids)}
    row = np.array([row_of.get(n, -1) for n in names], np.int64)
    present = set(names)
    for image in ids:
        if image not in present:
            report.skip(csv_path, f"labels name {image} but {IMAGE_DIR}/{image}.dcm does not exist")
    for i in np.flatnonzero(row < 0):
        if names[i] not in rejected:
            report.skip(image_dir / f"{names[i]}.dcm", f"image has no usable labels in {LABELS_CSV}")
    return row


class _Paths:
    """The file of each planned row, derived on demand (not a list of 752k strings)."""

    def __init__(self, files: Files, chosen: np.ndarray):
        self.files, self.chosen = files, chosen

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, r: int) -> str:
        return self.files.path(int(self.chosen[r]))


def _plan(files: Files, series: Series, labels: np.ndarray, chosen: np.ndarray, group: np.ndarray,
          size: int) -> SlicePlan:
    """The chosen slices in store order; a volume's subtypes are those present on its chosen slices."""
    present = np.zeros((2 * len(series.uids), len(SUBTYPES)), bool)
    np.logical_or.at(present, group, labels[:, 2:] == 1)

    def volume(r: int) -> dict:
        i, g = int(chosen[r]), int(group[r])
        c = int(series.code[i])
        sy, sx = series.spacing_yx[i]
        return {"id": (VALIDATION_PREFIX if g % 2 else "") + series.uids[c],
                "spacing": (float(series.dz[c]), float(sy), float(sx)),
                "subtypes": [n for n, p in zip(SUBTYPES, present[g]) if p]}

    return SlicePlan(_Paths(files, chosen), functools.partial(hu_at_size, size=size), labels, group, volume)


@hookimpl
def register_datasets(register):
    register(RsnaDataset())
