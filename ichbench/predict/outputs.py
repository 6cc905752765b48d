"""What `ichbench predict` writes, all on the input's own grid, all or nothing:

- `mask.nii.gz`: the binary mask with the input's affine (for a NIfTI input, its voxel order and
  header; for a DICOM series, the affine its geometry tags give),
- `labels.nii.gz`: a subtypes model's label map (uint8, 0 background, k = its k-th class), written
  as the mask is; the mask is its union,
- `mask.dcm`: a DICOM SEG referencing the source series, one segment (DICOM inputs; highdicom),
- `labels.dcm`: a subtypes model's label map as a DICOM SEG, one segment per class (seg.py),
- `report.json`: hemorrhage volume in mL, its connected components, the slices it is on, the
  cavity volume, and where the model came from,
- `overlay.png`: the slices with hemorrhage in a brain window, the mask outlined.

Files are written into a temporary folder beside the output folder, which then takes the output
folder's place in one rename, so a failure or Ctrl-C leaves nothing half-written. A folder that
holds anything already is refused unless `force`, which replaces all of it: files of an earlier
prediction never stay beside the new ones.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.predict.infer import Prediction
from ichbench.predict.models import Ensemble
from ichbench.predict.scan import Scan
from ichbench.predict.seg import class_segments, sources, union_segments, write_seg

DISCLAIMER = "research tool, not a medical device: not for diagnosis or treatment decisions"
BRAIN_WINDOW = (0.0, 80.0)       # HU shown in the overlay (level 40, width 80)
MAX_OVERLAY_SLICES = 24


# -- the mask on the input's grid -----------------------------------------------------------------

def _inverse_ornt(transform: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(transform)
    for file_axis, (store_axis, flip) in enumerate(transform):
        inv[int(store_axis)] = (file_axis, flip)
    return inv


def mask_in_file_order(scan: Scan, mask: np.ndarray) -> np.ndarray:
    """A NIfTI input: the (S, H, W) store-orientation mask back in the file's voxel order."""
    from nibabel.orientations import apply_orientation
    oriented = np.ascontiguousarray(mask.transpose(2, 1, 0))          # (L, P, S) axes
    return np.ascontiguousarray(apply_orientation(oriented, _inverse_ornt(scan.nifti.transform)))


def mask_in_dicom_order(scan: Scan, mask: np.ndarray) -> np.ndarray:
    """A DICOM input: (S, Rows, Columns) as each source file stores its pixels, slices in order."""
    out = mask
    if scan.flips[0]:
        out = out[:, ::-1, :]
    if scan.flips[1]:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def dicom_affine(scan: Scan) -> np.ndarray:
    """RAS affine of the (Columns, Rows, slice) voxel grid of a DICOM series (NIfTI convention)."""
    first, last = scan.slices[0], scan.slices[-1]
    o = np.asarray(first.orientation or (1, 0, 0, 0, 1, 0), float)
    row, col = o[:3], o[3:]
    dr, dc = first.spacing_yx                      # PixelSpacing: between rows, between columns
    if len(scan.slices) > 1 and first.position is not None and last.position is not None:
        step = (np.asarray(last.position) - np.asarray(first.position)) / (len(scan.slices) - 1)
    else:
        step = np.cross(row, col) * scan.spacing[0]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * dc, col * dr, step
    lps[:3, 3] = np.asarray(first.position if first.position is not None else (0.0, 0.0, 0.0), float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps      # DICOM's LPS to NIfTI's RAS


def write_nifti(path: Path, scan: Scan, mask: np.ndarray) -> None:
    import nibabel as nib
    if scan.kind == "nifti":
        data = mask_in_file_order(scan, mask).astype(np.uint8)
        header = nib.load(str(scan.path)).header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(data, scan.affine, header=header)
    else:
        data = mask_in_dicom_order(scan, mask).transpose(2, 1, 0).astype(np.uint8)
        img = nib.Nifti1Image(data, dicom_affine(scan))
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


# -- report and overlay -----------------------------------------------------------------------------

def report(scan: Scan, pred: Prediction, ens: Ensemble, notes: list[str]) -> dict:
    from scipy import ndimage
    labels, n = ndimage.label(pred.mask, structure=np.ones((3, 3, 3), bool))
    numbers = scan.input_slice_numbers()
    components = []
    for k in range(1, n + 1):
        where = labels == k
        rows = np.flatnonzero(where.reshape(len(where), -1).any(1))
        components.append({"volume_ml": float(where.sum() * scan.voxel_ml),
                           "slices": sorted(numbers[r] for r in rows)})
    components.sort(key=lambda c: -c["volume_ml"])
    with_ich = np.flatnonzero(pred.mask.reshape(len(pred.mask), -1).any(1))
    return {
        "disclaimer": DISCLAIMER,
        "input": {"path": str(scan.path), "kind": scan.kind, "series_uid": scan.series_uid or None,
                  "slices": int(scan.hu.shape[0]), "rows": int(scan.hu.shape[1]), "columns": int(scan.hu.shape[2]),
                  "spacing_mm": [float(v) for v in scan.spacing], "voxel_ml": scan.voxel_ml},
        "hemorrhage": {"volume_ml": float(pred.mask.sum() * scan.voxel_ml), "voxels": int(pred.mask.sum()),
                       "components": components, "n_components": n,
                       "slices": sorted(numbers[r] for r in with_ich)},
        "icm": None if pred.cavity is None else {"source": ens.icm["source"],
                                                  "volume_ml": float(pred.cavity.sum() * scan.voxel_ml)},
        "model": {"method": ens.method, "dataset": ens.first.get("dataset"), "profile": ens.first.get("profile"),
                  "run_id": ens.run_id, "entry": ens.entry, "folds": [f.fold for f in ens.folds],
                  "checkpoints": [{"fold": f.fold, "sha256": f.sha256} for f in ens.folds],
                  "threshold": ens.threshold, "image_size": ens.image_size, "store_size": ens.store_size,
                  "trained_with": ens.first.get("ichbench_version"), "ichbench_version": __version__,
                  **ens.provenance},
        **({"subtypes": subtype_volumes(scan, pred, ens)} if pred.labels is not None else {}),
        "notes": notes,
    }


def subtype_volumes(scan: Scan, pred: Prediction, ens: Ensemble) -> dict:
    """A subtypes model's label map per class: {name: {"id", "volume_ml", "voxels"}} (ids 1..C)."""
    out = {}
    for k, name in enumerate(ens.classes, start=1):
        voxels = int((pred.labels == k).sum())
        out[name] = {"id": k, "volume_ml": float(voxels * scan.voxel_ml), "voxels": voxels}
    return out


def write_overlay(path: Path, scan: Scan, pred: Prediction) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = np.flatnonzero(pred.mask.reshape(len(pred.mask), -1).any(1))
    if len(rows) > MAX_OVERLAY_SLICES:   # the largest cross-sections
        area = pred.mask.reshape(len(pred.mask), -1).sum(1)
        rows = np.sort(rows[np.argsort(-area[rows])[:MAX_OVERLAY_SLICES]])
    numbers = scan.input_slice_numbers()
    n = max(1, len(rows))
    cols = min(n, 6)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(2.4 * cols, 2.4 * -(-n // cols)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    lo, hi = BRAIN_WINDOW
    for ax, r in zip(axes.flat, rows):
        ax.imshow(np.clip((scan.hu[r] - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.contour(pred.mask[r], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"slice {numbers[r]}", fontsize=8)
    if not len(rows):
        axes.flat[0].text(0.5, 0.5, "no hemorrhage predicted", ha="center", va="center")
    fig.suptitle("ichbench predict (research use only)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def check_output(out_dir: Path, force: bool = False, keep=()) -> None:
    """Refuse an output folder the set cannot replace whole: a file, a folder this user may not
    write, one that holds anything already (unless `force`), or one that is or holds a path of
    `keep` (what the command reads: `force` would delete it)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IchbenchError(f"--output {out_dir}: is a file, not a folder")
    if not out_dir.is_dir():
        return
    if not os.access(out_dir, os.W_OK):
        raise IchbenchError(f"--output {out_dir}: the folder is read-only")
    if any(out_dir.iterdir()) and not force:
        raise IchbenchError(f"--output {out_dir}: the folder is not empty (an earlier prediction?); name a "
                            "new or empty one, or give --force to replace everything in it")
    target = out_dir.resolve()
    for path in map(Path, keep):
        if target == path.resolve() or target in path.resolve().parents:
            raise IchbenchError(f"--output {out_dir}: holds {path}, which this command reads; replacing the "
                                "folder would delete it, name another one")


def write_outputs(out_dir: Path, scan: Scan, pred: Prediction, ens: Ensemble, force: bool = False) -> dict:
    """Write every output into `out_dir`, atomically as a set; returns the report. An existing
    folder must be empty, or `force` replaces it (and all it held) with the new set."""
    out_dir = Path(out_dir)
    check_output(out_dir, force)
    target = out_dir.resolve()          # a link to a folder: the folder it points to is replaced
    tmp, backup = (target.parent / f".{target.name}.{what}-{os.getpid()}" for what in ("predict", "replaced"))
    try:
        return _write_set(target, tmp, backup, scan, pred, ens, force)
    except OSError as exc:
        if exc.filename and not _is_output(Path(exc.filename).absolute(), target, tmp, backup):
            raise                       # an input file (a source DICOM header), named as it is
        raise IchbenchError(f"--output {out_dir}: cannot write the outputs there "
                            f"({exc.strerror or type(exc).__name__})") from None


def _is_output(name: Path, target: Path, *beside: Path) -> bool:
    return name in target.parents or any(name == p or p in name.parents for p in (target, *beside))


def _write_set(target: Path, tmp: Path, backup: Path, scan: Scan, pred: Prediction, ens: Ensemble,
               force: bool) -> dict:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    notes: list[str] = []
    try:
        tmp.mkdir()   # inside the try: a Ctrl-C landing just after it must still remove the folder
        write_nifti(tmp / "mask.nii.gz", scan, pred.mask)
        if pred.labels is not None:   # a subtypes model: its label map too, on the same grid and header
            write_nifti(tmp / "labels.nii.gz", scan, pred.labels)
        if scan.kind == "dicom":
            src = sources(scan, notes)
            write_seg(tmp / "mask.dcm", src, mask_in_dicom_order(scan, pred.mask), union_segments(), ens,
                      series_number=900, what="hemorrhage", content_label="HEMORRHAGE")
            if pred.labels is not None:   # segment k = class id k, every class of the model
                write_seg(tmp / "labels.dcm", src, mask_in_dicom_order(scan, pred.labels), class_segments(ens.classes),
                          ens, series_number=901, what="hemorrhage subtypes", content_label="SUBTYPES")
        write_overlay(tmp / "overlay.png", scan, pred)
        rep = report(scan, pred, ens, notes)
        rep["outputs"] = sorted(p.name for p in tmp.iterdir()) + ["report.json"]
        (tmp / "report.json").write_text(json.dumps(rep, indent=2))
        _swap_in(tmp, target, backup, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rep


def _swap_in(new: Path, target: Path, backup: Path, force: bool) -> None:
    """`new` becomes `target` by renames. A missing or empty target is replaced in one (POSIX lets a
    folder replace an empty one, and refuses a full one: a folder filled meanwhile is not lost).
    A full target (with `force`) is moved aside first, put back if the second
    rename fails or Ctrl-C lands between them, and removed after."""
    if not force or not target.is_dir() or not any(target.iterdir()):
        os.rename(new, target)
        return
    shutil.rmtree(backup, ignore_errors=True)
    os.rename(target, backup)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(backup, target)
        raise
    try:
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:               # Ctrl-C while removing the old set: finish, then stop
        shutil.rmtree(backup, ignore_errors=True)
        raise
