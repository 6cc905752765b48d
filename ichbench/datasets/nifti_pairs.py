"""Image / label NIfTI pairs in two folders, the layout INSTANCE 2022 and BHSD ship (and the nnU-Net
layout many copies use): matching them by name, reading each pair through `nifti_io` (header size
checks, orientation from the affine, spacing, HU with scl_slope / scl_inter) and naming every file
that is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ichbench.datasets.base import IngestReport, Volume
from ichbench.datasets.nifti_io import load_ct, load_label_map
from ichbench.errors import InputError

NIFTI_RE = re.compile(r"^(.+?)\.nii(\.gz)?$")


def nifti_files(folder: Path, strip: str = "") -> dict[str, Path]:
    """{case name: file} of the NIfTI files directly in `folder` (hidden files left out); `strip`
    is a suffix the name loses (nnU-Net's channel `_0000`). Sorted by name."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        m = NIFTI_RE.match(p.name)
        if m and p.is_file() and not p.name.startswith("."):
            name = m.group(1)
            out.setdefault(name[:-len(strip)] if strip and name.endswith(strip) else name, p)
    return out


def pair(images: dict[str, Path], labels: dict[str, Path], label_dir: Path,
         report: IngestReport) -> list[tuple[str, Path, Path | None]]:
    """(case, image, label or None) per image, in case order; a label without an image is
    reported here, an image without a label when it is read."""
    for case in sorted(set(labels) - set(images)):
        report.skip(labels[case], "label without an image; ignored")
    return [(case, images[case], labels.get(case) or label_dir / f"{case}.nii.gz") for case in sorted(images)]


def read_pairs(pairs: Iterable[tuple[str, Path, Path]], ids: dict[int, int], report: IngestReport, *,
               keep_classes: bool) -> Iterator[Volume]:
    """One Volume per readable pair. `ids` maps each label value the dataset defines to its store
    class id (0 background); keep_classes: the volume carries the class map (a multi-class
    dataset), else only the binary mask. Skipped, with the file named: a missing label, an
    unreadable or truncated file, a label whose shape or orientation differs from its image, a
    label value outside the dataset's classes, NaN or infinite voxels."""
    for case, image, label in pairs:
        if not label.is_file():
            report.skip(label, f"label is missing for image {image.name}; volume skipped")
            continue
        try:
            ct = load_ct(image)
            classes = load_label_map(label, ct, ids, "label")
        except InputError as exc:
            report.skip(exc.path, exc.problem)
            continue
        yield Volume(id=case, hu=ct.data, spacing=ct.spacing, mask=classes > 0,
                     classes=classes if keep_classes else None, source=str(image))


def read_images(files: Iterable[tuple[str, Path]], report: IngestReport) -> Iterator[Volume]:
    """Unlabelled volumes (a pretraining store): the CT alone, slice labels unknown."""
    for case, image in files:
        try:
            ct = load_ct(image)
        except InputError as exc:
            report.skip(exc.path, exc.problem)
            continue
        yield Volume(id=case, hu=ct.data, spacing=ct.spacing, source=str(image))


def warn_count(report: IngestReport, found: int, expected: int, what: str, where: Path) -> None:
    if found != expected:
        report.warn(f"found {found} usable {what} in {where}, expected {expected}")
