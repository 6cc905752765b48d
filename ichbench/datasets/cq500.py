"""CQ500 (qure.ai, Chilamkurthy et al. 2018): 491 head CT studies read for ICH and its subtypes
by three radiologists at the scan level. Used as extra pretraining data: one volume per study,
slice labels unknown, the readers' majority as the volume's subtypes.

Layout (the qure.ai download, each study zip unpacked beside reads.csv; batch folders one level
deep are fine too):

    CQ500CT<N> CQ500CT<N>/Unknown Study/CT <description>/*.dcm    one folder per series
    reads.csv   name (CQ500-CT-<N>), Category, R1:ICH, R1:IPH, R1:IVH, R1:SDH, R1:EDH, R1:SAH,
                ..., the same for R2 and R3

Series choice, per study (one plain non-contrast axial series):
  1. Left out by name, without reading a file: bone or lung windows/kernels (BONE, LUNG, SHARP),
     scouts (SCOUT, LOCALIZER, TOPO, SURVIEW), reformats (SAG, COR, MPR, MIP, 3D, VRT,
     REFORMAT), and contrast series (C+, POST, CONTRAST, CTA, ANGIO, PERFUSION), unless the
     contrast word is negated (PRE CONTRAST, NON CONTRAST, W/O, C-).
  2. Headers are read; the same rules apply to SeriesDescription, ConvolutionKernel (BONE) and
     ImageType (LOCALIZER). A remaining folder must hold one axial series (no mixed
     SeriesInstanceUIDs, no duplicate positions, one size and spacing, at least 2 slices);
     folders that do not are reported by name.
  3. Among the rest: the thinnest slices (distance between slices along the normal, to 0.01
     mm), then one named PLAIN / NON CONTRAST / PRE CONTRAST / C-, then the most slices, then
     the folder name. So "CT PLAIN THIN" (0.625 mm) wins over "CT PLAIN" (5 mm), and "CT
     0.625mm" over "CT 5mm".
A study without such a series is reported with the folders it has.

Labels: volume id `CQ500-CT-<N>` (the reads.csv and Seg-CQ500 name); `subtypes` are those
marked by at least 2 of the 3 readers. Per-slice labels are unknown (255): the reads are about
the scan, not its slices. `options.selection` and `options.holdout` do not apply (no slice labels).
"""

from __future__ import annotations

import csv
import os
import re
from contextlib import closing
from pathlib import Path
from typing import Iterator

import numpy as np

from ichbench.datasets.base import PRETRAINING, Dataset, IngestOptions, IngestReport, Volume, open_csv
from ichbench.datasets.dicom_io import DicomSlice, header_or_problem, hu_or_problem, order_series
from ichbench.parallel import OrderedPool
from ichbench.errors import InputError, LayoutError
from ichbench.plugins import hookimpl

READS_CSV = "reads.csv"
STUDY_RE = re.compile(r"^CQ500[ -]?CT[ -]?(\d+)(?: CQ500[ -]?CT[ -]?\1)?$", re.IGNORECASE)
READERS = ("R1", "R2", "R3")
# reads.csv finding -> our name; ICH is "any"
FINDINGS = {"ICH": "any", "IPH": "iph", "IVH": "ivh", "SDH": "sdh", "EDH": "edh", "SAH": "sah"}
CHUNK = 32            # slices per yielded Volume: bounded memory for 0.625 mm series of 300+ slices
MIN_SLICES = 2

_BONE = re.compile(r"BONE|LUNG|SHARP")
_SCOUT = re.compile(r"SCOUT|LOCALI[SZ]ER|TOPO|SURVIEW")
_REFORMAT = re.compile(r"\b(SAG|SAGITTAL|COR|CORONAL|MPR|MIP|3D|VRT?|REFORMAT\w*)\b")
_CONTRAST = re.compile(r"C\+|\bPOST\b|CONTRAST|\bCTA\b|ANGIO|PERFUSION")
_NEGATED = re.compile(r"\bPRE[\s_-]*CONTRAST|\bNON[\s_-]*CONTRAST|\bW/?O\b|\bWITHOUT\b|\bC-")
_PLAIN = re.compile(r"PLAIN|\bNON[\s_-]*CONTRAST|\bPRE[\s_-]*CONTRAST|\bC-")


def study_id(n: int) -> str:
    return f"CQ500-CT-{n}"


def exclusion(text: str, slices: list[DicomSlice] = ()) -> str | None:
    """Why a series (its description text and, once read, its headers) is not a plain axial
    non-contrast candidate; None if it is one."""
    text = text.upper()
    if _SCOUT.search(text) or any("LOCALIZER" in s.image_type for s in slices):
        return "scout"
    if _BONE.search(text) or any("BONE" in s.kernel for s in slices):
        return "bone/lung window or kernel"
    if _REFORMAT.search(text):
        return "reformat"
    if _CONTRAST.search(text) and not _NEGATED.search(text):
        return "contrast"
    return None


# -- reads ----------------------------------------------------------------------------------------

def read_reads(path: Path, report: IngestReport) -> dict[str, dict]:
    """reads.csv -> {name: {"any": bool, "subtypes": [...], "readers": n}}, each finding decided
    by the majority of the readers who gave a 0/1 value (all three in the real file)."""
    path = Path(path)
    with open_csv(path) as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise InputError(path, "empty CSV: expected a header with name and R1:ICH ... R3:SAH columns")
        fields = [h.strip() for h in reader.fieldnames]
        need = ["name"] + [f"{r}:{k}" for r in READERS for k in FINDINGS]
        missing = [c for c in need if c not in fields]
        if missing:
            raise InputError(path, f"missing columns {', '.join(missing)}")
        reader.fieldnames = fields
        out: dict[str, dict] = {}
        for line, row in enumerate(reader, start=2):
            name = (row.get("name") or "").strip()
            if not name:
                report.skip(f"{path}:{line}", "row without a name")
                continue
            if name in out:
                report.skip(f"{path}:{line}", f"second row for {name}; the first is used")
                continue
            votes: dict[str, list[int]] = {k: [] for k in FINDINGS}
            bad = None
            for r in READERS:
                for k in FINDINGS:
                    v = (row.get(f"{r}:{k}") or "").strip()
                    if v in ("0", "1"):
                        votes[k].append(int(v))
                    elif v not in ("",):
                        bad = f"{r}:{k} is {v!r}, not 0 or 1"
            if bad:
                report.skip(f"{path}:{line}", f"{name}: {bad}")
                continue
            if not votes["ICH"]:
                report.skip(f"{path}:{line}", f"{name}: no reader gave a value")
                continue
            major = {k: 2 * sum(v) > len(v) for k, v in votes.items() if v}
            out[name] = {"any": major["ICH"],
                         "subtypes": sorted(FINDINGS[k] for k, yes in major.items() if yes and k != "ICH"),
                         "readers": len(votes["ICH"])}
    if not out:
        raise InputError(path, "no usable rows (expected one row per CQ500-CT-<N> study)")
    return out


# -- layout ---------------------------------------------------------------------------------------

def find_studies(source: Path) -> list[tuple[int, Path]]:
    """Study folders (CQ500CT<N> CQ500CT<N>, also CQ500-CT-<N>) in `source` or one level below."""
    found = []
    for d in sorted(Path(source).iterdir()):
        if not d.is_dir():
            continue
        m = STUDY_RE.match(d.name)
        if m:
            found.append((int(m.group(1)), d))
            continue
        for d2 in sorted(d.iterdir()):
            m = STUDY_RE.match(d2.name) if d2.is_dir() else None
            if m:
                found.append((int(m.group(1)), d2))
    return sorted(found)


def _series_folders(study: Path) -> list[Path]:
    folders = set()
    for root, _dirs, files in os.walk(study):
        if any(f.lower().endswith(".dcm") for f in files):
            folders.add(Path(root))
    return sorted(folders)


def _description(folder: Path) -> str:
    name = folder.name
    return name[3:] if name.upper().startswith("CT ") else name


class CQ500Dataset(Dataset):
    name = "cq500"
    description = ("CQ500 (qure.ai): 491 head CT studies with scan-level ICH and subtype reads by "
                   "three radiologists; one plain non-contrast axial series per study as extra "
                   "pretraining data (slice labels unknown, subtypes by reader majority)")
    roles = (PRETRAINING,)
    source_url = "http://headctstudy.qure.ai/dataset"
    licence = "CC BY-NC-SA 4.0 (qure.ai CQ500 dataset)"
    layout = ("CQ500CT<N> CQ500CT<N>/Unknown Study/CT <description>/*.dcm (one folder per series) "
              "and reads.csv (name, Category, R1:ICH ... R3:SAH)")

    def check_layout(self, source: Path) -> None:
        source = Path(source)
        if not source.is_dir():
            raise LayoutError(f"{source}: expected a folder with CQ500CT<N> CQ500CT<N>/ study folders "
                              f"and {READS_CSV}; the folder does not exist")
        studies = find_studies(source)
        if studies and (source / READS_CSV).is_file():
            return
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in source.iterdir())[:10]
        want = [] if studies else ["CQ500CT<N> CQ500CT<N>/Unknown Study/CT <description>/*.dcm study folders"]
        want += [] if (source / READS_CSV).is_file() else [READS_CSV]
        raise LayoutError(f"{source}: expected {' and '.join(want)} here; "
                          f"found: {', '.join(found) or 'an empty folder'}")

    def source_files(self, source: Path):
        source = Path(source)
        yield source / READS_CSV
        for _, study in find_studies(source):
            for root, dirs, files in os.walk(study):
                dirs.sort()
                for f in sorted(files):
                    yield Path(root) / f

    def read(self, source: Path, role: str, options: IngestOptions,
             report: IngestReport) -> Iterator[Volume]:
        source = Path(source)
        self.check_layout(source)
        reads = read_reads(source / READS_CSV, report)
        studies = find_studies(source)
        seen: dict[int, Path] = {}
        report.expect(volumes=len({n for n, _ in studies}))
        for n, folder in studies:
            if n in seen:
                report.skip(folder, f"second folder for {study_id(n)} (first: {seen[n].name}); skipped")
            seen.setdefault(n, folder)
        for name in sorted(set(reads) - {study_id(n) for n in seen}):
            report.skip(source / READS_CSV, f"reads name {name} but no study folder for it was found")
        with OrderedPool(options.workers, preload=(__name__,)) as pool:
            for n, folder in sorted(seen.items()):
                yield from self._study(study_id(n), folder, reads.get(study_id(n)), pool, report)

    def choose_series(self, folder: Path, pool: OrderedPool, report: IngestReport):
        """(series folder, ordered header slices, spacing) of the study's chosen series, or None
        (reported)."""
        seen = []
        candidates = []
        for sdir in _series_folders(folder):
            desc = _description(sdir)
            why = exclusion(desc)
            if why:
                seen.append(f"{sdir.name} ({why})")
                continue
            files = sorted(p for p in sdir.iterdir() if p.name.lower().endswith(".dcm"))
            slices, bad = [], []
            with closing(pool.map(header_or_problem, files, chunksize=32)) as heads:
                for path, (head, problem) in zip(files, heads):
                    (slices.append(head) if head is not None else bad.append((path, problem)))
            why = exclusion(f"{desc} {slices[0].description}" if slices else desc, slices)
            if why:
                seen.append(f"{sdir.name} ({why})")
                continue
            for path, problem in bad:
                report.skip(path, problem)
            if len(slices) < MIN_SLICES:
                seen.append(f"{sdir.name} ({len(slices)} readable slices)")
                continue
            try:
                ordered, spacing = order_series(slices, sdir)
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                seen.append(f"{sdir.name} (reported)")
                continue
            plain = 0 if _PLAIN.search(f"{desc} {slices[0].description}".upper()) else 1
            candidates.append(((round(spacing[0], 2), plain, -len(ordered), sdir.name), sdir, ordered, spacing))
        if not candidates:
            report.skip(folder, "no plain non-contrast axial series; series folders: "
                                + (", ".join(seen) or "none with .dcm files"))
            return None
        _, sdir, ordered, spacing = min(candidates, key=lambda c: c[0])
        return sdir, ordered, spacing

    def _study(self, vid: str, folder: Path, reads: dict | None, pool: OrderedPool,
               report: IngestReport) -> Iterator[Volume]:
        chosen = self.choose_series(folder, pool, report)
        if chosen is None:
            return
        sdir, ordered, spacing = chosen
        if reads is None:
            report.warn(f"{folder}: no row for {vid} in {READS_CSV}; its subtypes are unknown")
        subtypes = reads["subtypes"] if reads is not None else None
        shape = ordered[0].shape
        hus: list[np.ndarray] = []
        with closing(pool.map(hu_or_problem, [s.path for s in ordered], chunksize=8)) as decoded:
            for s, (hu, problem) in zip(ordered, decoded):
                if hu is None or hu.shape != shape:
                    report.skip(s.path, problem or f"pixel array {hu.shape} differs from Rows/Columns {shape}")
                    continue
                hus.append(hu)
                if len(hus) == CHUNK:
                    yield Volume(id=vid, hu=np.stack(hus), spacing=spacing, subtypes=subtypes, source=str(sdir))
                    hus = []
        if hus:
            yield Volume(id=vid, hu=np.stack(hus), spacing=spacing, subtypes=subtypes, source=str(sdir))


@hookimpl
def register_datasets(register):
    register(CQ500Dataset())
