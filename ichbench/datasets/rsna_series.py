"""Grouping RSNA's flat folder of slice files into series: a header pass (no pixels, in worker
processes) gives each file's series, position along the slice normal and pixel spacing; a series'
z spacing is the median distance between its slices (the anonymised files lack SliceThickness,
which is used only for a lone slice)."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichbench.datasets.base import IngestReport
from ichbench.datasets.dicom_io import DUPLICATE_MM, is_axial, read_slice, slice_normal
from ichbench.parallel import OrderedPool
from ichbench.errors import InputError


class Files:
    """The image files by index: not a list of 752k paths, derived on demand."""

    def __init__(self, image_dir: Path, names: list[str]):
        self.image_dir, self.names = image_dir, names

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i) -> str:
        return str(self.image_dir / f"{self.names[i]}.dcm")


def read_header(path: str):  # top level: runs in worker processes
    """(series uid, depth along the normal, thickness, (sy, sx), axial) or ('error', problem)."""
    try:
        s = read_slice(Path(path), pixels=False)
    except InputError as exc:
        return ("error", exc.problem)
    if not is_axial(s.orientation):
        return ("error", "slice is not axial (ImageOrientationPatient)")
    sy, sx = s.spacing_yx
    if not (np.isfinite([sy, sx]).all() and sy > 0 and sx > 0):
        return ("error", f"invalid or missing PixelSpacing {s.spacing_yx}")
    if s.position is None:
        depth = float("nan")
    else:
        normal = slice_normal(s.orientation) if s.orientation else np.array([0.0, 0.0, 1.0])
        depth = float(np.dot(s.position, normal))
    return (s.series_uid, depth, s.thickness, (sy, sx))


def _series_spacing(depths: np.ndarray, thickness: float | None) -> float:
    """Median gap between distinct slice positions of a series; SliceThickness as a fallback."""
    d = np.unique(depths[np.isfinite(depths)])
    gaps = np.diff(d)
    gaps = gaps[gaps > DUPLICATE_MM]
    if len(gaps):
        return float(np.median(gaps))
    return float(thickness) if thickness else float("nan")


@dataclass
class Series:
    """Every file's series (code into `uids`, -1 for an unreadable header), position along the
    slice normal and pixel spacing, and each series' z spacing."""
    uids: list[str]
    code: np.ndarray
    depth: np.ndarray
    spacing_yx: np.ndarray
    dz: np.ndarray

    def spacing_known(self, among: np.ndarray, files: Files, report: IngestReport) -> np.ndarray:
        """False (reported, for the slices `among`) where a slice's series spacing is unknown."""
        unknown = among & ~np.isfinite(self.dz[np.maximum(self.code, 0)])
        for i in np.flatnonzero(unknown):
            report.skip(files.path(i), "slice spacing unknown: a single slice in its series and no SliceThickness")
        return ~unknown

    def store_order(self, chosen: np.ndarray, is_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training volumes, then validation volumes; series by uid; slices by position, then file
        name (arrays, not per-slice Python tuples: 752k slices). Returns the reordered slices and
        their group (one group = one store volume: 2 * series rank + is_val)."""
        uid_rank = np.empty(len(self.uids), np.int64)
        uid_rank[np.argsort(np.array(self.uids, dtype=object))] = np.arange(len(self.uids))
        group = uid_rank[self.code[chosen]] * 2 + is_val
        order = np.lexsort((chosen, np.nan_to_num(self.depth[chosen], nan=0.0), uid_rank[self.code[chosen]],
                            is_val))
        return chosen[order], group[order]


def scan_series(files: Files, row: np.ndarray, pool: OrderedPool, report: IngestReport) -> Series:
    """Headers of every file, labelled or not (the z spacing of a series needs all its slices)."""
    series_of: dict[str, int] = {}
    uids: list[str] = []
    code = np.full(len(files), -1, np.int64)
    depth = np.full(len(files), np.nan)
    thickness: dict[int, float | None] = {}
    spacing_yx = np.zeros((len(files), 2))
    with closing(pool.map(read_header, map(files.path, range(len(files))), chunksize=64)) as heads:
        for i, h in enumerate(heads):
            if h[0] == "error":
                if row[i] >= 0:  # an unlabelled file was reported already
                    report.skip(files.path(i), h[1])
                continue
            uid, d, thick, yx = h
            uid = uid or files.names[i]  # untagged series: the slice stands alone
            c = series_of.get(uid)
            if c is None:
                c = series_of[uid] = len(uids)
                uids.append(uid)
            code[i], depth[i], spacing_yx[i] = c, d, yx
            thickness.setdefault(c, thick)
    dz = np.full(len(uids), np.nan)
    order = np.lexsort((depth, code))
    order = order[code[order] >= 0]
    bounds = np.flatnonzero(np.diff(code[order])) + 1
    for members in (np.split(order, bounds) if len(order) else []):
        c = int(code[members[0]])
        dz[c] = _series_spacing(depth[members], thickness.get(c))
    return Series(uids, code, depth, spacing_yx, dz)
