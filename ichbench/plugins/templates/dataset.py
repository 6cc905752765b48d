"""A dataset plugin: a reader for a folder of NIfTI cases, and its test.

`string.Template`s: `$name` placeholders, and no other `$` in the generated code.
"""

from ichbench.plugins.templates.common import REGISTRATION_TEST


DATASET_README = '''\
# $dist

$what for ichbench, registered as `$registered`.

It starts as a reader for a folder of NIfTI cases, one subfolder per scan:

    <source>/<case id>/ct.nii.gz      CT in Hounsfield units
    <source>/<case id>/mask.nii.gz    hemorrhage mask on the CT's voxel grid

Change `read` in `src/$module/dataset.py` to your layout. The shared ingest pipeline does the
rest (resizing, brain masks, the store); a bad file is reported with `report.skip(path, problem)`
and the ingest goes on.

```bash
pip install -e .
pytest
ichbench datasets                                  # lists $registered
ichbench data ingest $registered --source /path/to/cases
ichbench run --method unet_mixed --dataset $registered --profile smoke
```
'''

DATASET_PY = '''\
"""$registered: a folder of NIfTI cases as an ichbench segmentation dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ichbench.api import (SEGMENTATION, Dataset, IngestOptions, IngestReport, InputError, LayoutError, Volume,
                          load_ct, load_mask)

CT_NAMES = ("ct.nii.gz", "ct.nii")
MASK_NAMES = ("mask.nii.gz", "mask.nii")


def _first(folder: Path, names) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


class $classname(Dataset):
    name = "$registered"
    description = "NIfTI cases with hemorrhage masks (one folder per scan)"
    roles = (SEGMENTATION,)
    source_url = ""          # where people get the data
    licence = ""             # under which terms
    layout = "<source>/<case id>/ct.nii.gz and <source>/<case id>/mask.nii.gz (the mask on the CT's grid)"

    def cases(self, source: Path) -> list[Path]:
        return sorted(d for d in Path(source).iterdir() if d.is_dir() and _first(d, CT_NAMES))

    def check_layout(self, source: Path) -> None:
        source = Path(source)
        if not source.is_dir():
            raise LayoutError(f"expected a folder of cases at {source}; found: it does not exist")
        if not self.cases(source):
            found = ", ".join(sorted(p.name for p in source.iterdir())[:10]) or "(empty folder)"
            raise LayoutError(f"expected <case>/ct.nii.gz folders in {source}; found: {found}")

    def read(self, source: Path, role: str, options: IngestOptions, report: IngestReport) -> Iterator[Volume]:
        for case in self.cases(Path(source)):
            mask_path = _first(case, MASK_NAMES)
            if mask_path is None:
                report.skip(case, "no mask.nii.gz beside the CT")
                continue
            try:
                ct = load_ct(_first(case, CT_NAMES))
                mask = load_mask(mask_path, ct)
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                continue
            yield Volume(id=case.name, hu=ct.data.astype(np.float32), spacing=ct.spacing,
                         mask=mask.astype(bool), source=str(case))
'''

DATASET_TEST = '''\
"""Generated with $dist: these pass as written; keep them passing as you change the reader."""

from __future__ import annotations

import importlib.metadata as md

import nibabel as nib
import numpy as np
import pytest

from ichbench.api import IngestOptions, LayoutError, get_registry, ingest, open_store, reset_registry, store_path
from $module import $classname

SLICES, SIZE = 6, 40


def head(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc of brain (35 HU) in a skull ring (1000 HU) in air, with a 70 HU bleed on some slices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    r = np.hypot(yy, xx)
    ct = np.full((SIZE, SIZE, SLICES), -1000.0, np.float32)
    ct[r < 17] = 1000.0
    ct[r < 15] = 35.0 + rng.normal(0, 3, (int((r < 15).sum()), SLICES))
    mask = np.zeros(ct.shape, np.uint8)
    mask[12:20, 14:22, 2:4] = 1
    ct[mask == 1] = 70.0
    return ct, mask


def write_case(folder, seed):
    folder.mkdir(parents=True)
    ct, mask = head(seed)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "mask.nii.gz"))


def test_ingests_a_folder_of_cases(tmp_path):
    source = tmp_path / "cases"
    write_case(source / "case01", 1)
    write_case(source / "case02", 2)
    broken = source / "case03"
    broken.mkdir()
    (broken / "ct.nii.gz").write_bytes(b"not a nifti file")
    (broken / "mask.nii.gz").write_bytes(b"nor this")

    [result] = ingest($classname(), tmp_path / "home", source=source, options=IngestOptions(size=32))
    store = open_store(store_path(tmp_path / "home", "$registered", "segmentation"))
    assert store.n_slices == 2 * SLICES
    assert [v["id"] for v in store.volumes] == ["case01", "case02"]
    data = store.load(["masks", "labels"])
    assert data["masks"].shape == (2 * SLICES, 32, 32)
    assert int(data["labels"][:, 1].sum()) == 4                   # two bleeding slices per case
    assert [s["file"] for s in result.report.skipped] and "case03" in result.report.skipped[0]["file"]


def test_layout_errors_say_what_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("no cases here")
    with pytest.raises(LayoutError, match="notes.txt"):
        $classname().check_layout(tmp_path)


''' + REGISTRATION_TEST

DATASET_FILES = {
    "README.md": DATASET_README,
    "src/$module/dataset.py": DATASET_PY,
    "tests/test_$module.py": DATASET_TEST,
}
