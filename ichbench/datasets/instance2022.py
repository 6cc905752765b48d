"""INSTANCE 2022 (MICCAI challenge, Li et al.): 100 labelled non-contrast head CTs, binary ICH masks.

Layout (`--source` is the challenge's training folder, whatever its name, or a folder up to two
levels above it):

    data/NNN.nii.gz     CT (512 x 512 x 20-70, about 0.42 x 0.42 x 5 mm); HU after scl_slope / scl_inter
    label/NNN.nii.gz    hemorrhage mask on the CT's grid, values 0 / 1 (some copies save them as float)

Volume ids are the file names without `.nii.gz` (`001` ... `100`). Orientation comes from the
affine, as for Seg-CQ500 (`nifti_io`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ichbench.datasets.base import (SEGMENTATION, Dataset, IngestOptions, IngestReport, Volume, find_below,
                                    folder_listing, locate_root)
from ichbench.datasets.nifti_pairs import nifti_files, pair, read_pairs, warn_count
from ichbench.errors import LayoutError
from ichbench.plugins import hookimpl

EXPECTED_VOLUMES = 100
IMAGES, LABELS = "data", "label"
BINARY_IDS = {0: 0, 1: 1}   # label value -> store id: 0/1 only


def find_root(source: Path) -> Path | None:
    """The folder holding data/ and label/: `source` or the one such folder up to 2 levels below."""
    return find_below(source, lambda p: (p / IMAGES).is_dir() and (p / LABELS).is_dir(),
                      "INSTANCE 2022 training folder")


class Instance2022Dataset(Dataset):
    name = "instance2022"
    description = ("INSTANCE 2022 (MICCAI challenge): 100 labelled non-contrast head CTs with binary ICH masks, "
                   "512 x 512 x 20-70 at about 0.42 x 0.42 x 5 mm")
    roles = (SEGMENTATION,)
    source_url = "https://instance.grand-challenge.org/ (request the data from the organisers)"
    licence = ("INSTANCE 2022 data agreement: research use only, no redistribution; cite the challenge "
               "papers (Li et al. 2023)")
    layout = (
        "--source is the challenge's training folder, whatever its name (or a folder up to 2 levels above it):\n"
        "  data/NNN.nii.gz     CT, 100 volumes (HU after scl_slope/scl_inter)\n"
        "  label/NNN.nii.gz    hemorrhage mask on the CT's grid, values 0/1 (integer or float)")

    def check_layout(self, source: Path) -> None:
        expected = f"expected {IMAGES}/NNN.nii.gz and {LABELS}/NNN.nii.gz under {source}"
        root = locate_root(source, find_root, expected)
        if not nifti_files(root / IMAGES):
            raise LayoutError(f"{expected}; found: no .nii.gz files in {root / IMAGES} "
                              f"(it holds: {folder_listing(root / IMAGES)})")

    def read(self, source: Path, role: str, options: IngestOptions, report: IngestReport) -> Iterator[Volume]:
        root = find_root(Path(source))
        if root is None:
            self.check_layout(Path(source))
        pairs = pair(nifti_files(root / IMAGES), nifti_files(root / LABELS), root / LABELS, report)
        report.expect(volumes=len(pairs))
        n = 0
        for vol in read_pairs(pairs, BINARY_IDS, report, keep_classes=False):
            n += 1
            yield vol
        warn_count(report, n, EXPECTED_VOLUMES, "volumes", root)


@hookimpl
def register_datasets(register):
    register(Instance2022Dataset())
