"""Reading any tool's NIfTI masks: `ichbench score` (cli/scoring.py) and `ichbench leaderboard
submit --predictions` (leaderboard/external.py) both read with these, so a mask file means the same
to both: named by its case, binary 0/1 (or a label image of given ids), complete (a truncated file
is one line naming it, not a traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ichbench.errors import InputError
from ichbench.evaluate.classes import label_problem

SUFFIXES = (".nii.gz", ".nii")


def case_name(path: Path) -> str | None:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return None


def read_mask(path: Path, labels: dict[str, int] | None = None):
    """(array in file order, nibabel image): a binary mask as bool, or with `labels` ({name: id}) a
    label image as int (0 and those ids only); InputError naming the file for a missing, truncated,
    non-3-D, non-binary or foreign-valued one."""
    from ichbench.datasets.nifti_io import open_image
    img = open_image(path)
    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip/zlib raise many types on a bad stream
        raise InputError(path, f"voxel data cannot be read, the file may be truncated "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    raw = np.asarray(raw).reshape(raw.shape[:3])
    if labels is not None:
        problem = label_problem(raw, labels)
        if problem:
            raise InputError(path, f"not a label image of --labels: {problem}")
        return raw.astype(np.int64), img
    on = raw != 0
    bad = on & (raw != 1)
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5].astype(float)) + (", ..." if len(values) > 5 else "")
        raise InputError(path, f"not a binary mask: {int(bad.sum())} voxels are neither 0 nor 1 ({shown}); "
                               "write 0/1 masks, or score a label image with --labels")
    return on, img
