"""Seg-CQ500 (Spahr et al. 2023): 51 CQ500 head CTs with voxel hemorrhage masks, Zenodo 8063221.

Layout (the Zenodo archive unpacked; `--source` is the folder holding `Seg-CQ500/`, or
`Seg-CQ500/` itself):

    Seg-CQ500/data/volumes/CQ500-CT-<N>/CT.nii           CT in HU (some with a gantry-tilt shear)
    Seg-CQ500/data/volumes/CQ500-CT-<N>/ICH_mask.nii.gz  hemorrhage mask on the CT's grid
    Seg-CQ500/data/volumes/CQ500-CT-<N>/brain.nii.gz     intracranial mask (optional)
    Seg-CQ500/data/volumes/info.csv                      one row per volume (`name` = CQ500-CT-N)

info.csv was written by the authors' conversion script (qureAI_extract_as_nifti.py): the CQ500
id, file name, slice count and the CQ500 per-volume ICH/subtype scores. Its exact columns are
not documented, so it is read tolerantly and used only to cross-check the volume list (the
brief places it at `data/info.csv`; both places are accepted). Subtypes come from CQ500's own
`reads.csv` (three readers, majority vote) when given, and are unknown otherwise: the masks do
not separate subtypes.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterator

from ichbench import SUBTYPES
from ichbench.datasets.base import (SEGMENTATION, Dataset, IngestOptions, IngestReport, Volume, folder_listing,
                                   locate_root)
from ichbench.datasets.cq500 import read_reads
from ichbench.datasets.nifti_io import load_ct, load_mask
from ichbench.errors import InputError, LayoutError
from ichbench.plugins import hookimpl

EXPECTED_VOLUMES = 51
VOLUME_RE = re.compile(r"^CQ500-CT-(\d+)$", re.IGNORECASE)
CT_NAMES = ("CT.nii", "CT.nii.gz")
MASK_NAMES = ("ICH_mask.nii.gz", "ICH_mask.nii")
BRAIN_NAMES = ("brain.nii.gz", "brain.nii")


def find_data_dir(source: Path) -> Path | None:
    """`Seg-CQ500/data` under source, or source's own `data` when source is `Seg-CQ500/`."""
    for cand in (source / "Seg-CQ500" / "data", source / "data"):
        if (cand / "volumes").is_dir():
            return cand
    return None


def _first(folder: Path, names) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _volume_sort_key(p: Path):
    m = VOLUME_RE.match(p.name)
    return (0, int(m.group(1)), "") if m else (1, 0, p.name)


def parse_reads(path: Path, report: IngestReport) -> dict[str, list[str]] | None:
    """CQ500 reads.csv -> {volume name (upper case): subtypes present by majority of the readers}.

    The same file and the same parser as the `cq500` dataset. Returns None (after reporting)
    when the file cannot be used at all: the volumes then have unknown subtypes."""
    try:
        reads = read_reads(path, report)
    except InputError as exc:
        report.skip(path, f"{exc.problem}; subtypes unknown")
        return None
    return {name.upper(): [s for s in SUBTYPES if s in r["subtypes"]] for name, r in reads.items()}


def parse_info(path: Path, report: IngestReport) -> set[str] | None:
    """Volume names listed in info.csv: the `name` column, else any column whose values look
    like CQ500-CT-N. None if no such column is found (reported as a warning)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.warn(f"{path}: cannot be read ({type(exc).__name__}: {exc}); volume list not cross-checked")
        return None
    if not rows:
        report.warn(f"{path}: empty; volume list not cross-checked")
        return None
    columns = [c for c in rows[0].keys() if c is not None]
    ordered = sorted(columns, key=lambda c: (c.strip().lower() != "name"))
    for c in ordered:
        values = [(r.get(c) or "").strip() for r in rows]
        if values and all(VOLUME_RE.match(v) for v in values if v) and any(values):
            return {v.upper() for v in values if v}
    report.warn(f"{path}: no column of CQ500-CT-N names (columns: {', '.join(columns)}); "
                f"volume list not cross-checked")
    return None


class SegCQ500Dataset(Dataset):
    name = "segcq500"
    description = ("Seg-CQ500: 51 CQ500 non-contrast head CTs with voxel ICH masks drawn by a radiology "
                   "resident and a neuroradiologist (Spahr et al. 2023); subtypes from CQ500 reads.csv")
    roles = (SEGMENTATION,)
    ships_brain_masks = True   # brain.nii.gz per scan
    source_url = "https://zenodo.org/records/8063221"
    licence = ("CC BY-NC-SA 4.0, inherited from CQ500 (qure.ai), whose licence makes derivatives share "
               "alike; non-commercial use. Check the Zenodo record before redistributing.")
    layout = (
        "--source is the folder that holds Seg-CQ500/ (or Seg-CQ500/ itself):\n"
        "  Seg-CQ500/data/volumes/CQ500-CT-<N>/CT.nii            CT (HU), 51 volumes\n"
        "  Seg-CQ500/data/volumes/CQ500-CT-<N>/ICH_mask.nii.gz   hemorrhage mask, same grid\n"
        "  Seg-CQ500/data/volumes/CQ500-CT-<N>/brain.nii.gz      intracranial mask (optional)\n"
        "  Seg-CQ500/data/volumes/info.csv (or data/info.csv)    volume list, cross-checked\n"
        "optional: CQ500 reads.csv at <source>/reads.csv or -o reads=PATH: per-volume subtypes by\n"
        "majority of readers R1-R3 (columns name, R<i>:IPH/IVH/SAH/SDH/EDH); without it subtypes are unknown")

    def check_layout(self, source: Path) -> None:
        expected = f"expected Seg-CQ500/data/volumes/<CQ500-CT-N>/CT.nii under {source}"
        data = locate_root(source, find_data_dir, expected)
        volumes = data / "volumes"
        if not any(_first(d, CT_NAMES) for d in volumes.iterdir() if d.is_dir()):
            raise LayoutError(f"{expected}; found no CT.nii in {volumes}, which holds: {folder_listing(volumes)}")

    def _reads_path(self, source: Path, options: IngestOptions) -> Path | None:
        given = options.extra.get("reads")
        if given:
            return Path(given).expanduser()
        for cand in (source / "reads.csv", source / "Seg-CQ500" / "reads.csv"):
            if cand.is_file():
                return cand
        return None

    def read(self, source: Path, role: str, options: IngestOptions,
             report: IngestReport) -> Iterator[Volume]:
        source = Path(source)
        data = find_data_dir(source)
        if data is None:  # check_layout ran first; this only guards direct calls
            self.check_layout(source)
        volumes_dir = data / "volumes"

        reads = None
        reads_path = self._reads_path(source, options)
        if reads_path is None:
            report.warn(f"no CQ500 reads.csv at {source / 'reads.csv'} (or -o reads=PATH); subtypes unknown")
        elif reads_path.is_file():
            reads = parse_reads(reads_path, report)
        else:
            report.skip(reads_path, "reads CSV not found; subtypes unknown")

        info = None
        info_path = _first(volumes_dir, ("info.csv",)) or _first(data, ("info.csv",))
        if info_path is None:
            report.warn(f"info.csv not found in {volumes_dir} or {data}; volume list not cross-checked")
        else:
            info = parse_info(info_path, report)

        folders = sorted((d for d in volumes_dir.iterdir() if d.is_dir()), key=_volume_sort_key)
        if info is not None:
            names = {d.name.upper() for d in folders}
            absent = sorted(info - names, key=lambda n: _volume_sort_key(Path(n)))
            unlisted = sorted(names - info, key=lambda n: _volume_sort_key(Path(n)))
            if absent:
                report.warn(f"{info_path}: lists {len(absent)} volume(s) with no folder: {', '.join(absent[:10])}")
            if unlisted:
                report.warn(f"{info_path}: does not list {len(unlisted)} volume folder(s): {', '.join(unlisted[:10])}")

        found = 0
        report.expect(volumes=len(folders))
        for folder in folders:
            ct_path = _first(folder, CT_NAMES)
            mask_path = _first(folder, MASK_NAMES)
            if ct_path is None:
                report.skip(folder / CT_NAMES[0], "CT file is missing; volume skipped")
                continue
            if mask_path is None:
                report.skip(folder / MASK_NAMES[0], "hemorrhage mask is missing; volume skipped")
                continue
            try:
                ct = load_ct(ct_path)
                mask = load_mask(mask_path, ct, "hemorrhage mask")
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                continue
            brain = None
            brain_path = _first(folder, BRAIN_NAMES)
            if brain_path is not None:
                try:
                    brain = load_mask(brain_path, ct, "brain mask")
                except InputError as exc:
                    report.skip(exc.path, f"{exc.problem}; the computed brain mask is used instead")
            subtypes = None
            if reads is not None:
                subtypes = reads.get(folder.name.upper())
                if subtypes is None:
                    report.warn(f"{reads_path}: no row for {folder.name}; its subtypes are unknown")
            found += 1
            yield Volume(id=folder.name, hu=ct.data, spacing=ct.spacing, mask=mask, brain=brain,
                         subtypes=subtypes, source=str(ct_path))
        if found != EXPECTED_VOLUMES:
            report.warn(f"found {found} usable Seg-CQ500 volumes in {volumes_dir}, expected {EXPECTED_VOLUMES}")


@hookimpl
def register_datasets(register):
    register(SegCQ500Dataset())
