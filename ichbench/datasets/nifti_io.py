"""NIfTI reading shared by the NIfTI datasets (segcq500, hssayeni).

Store orientation. Every volume is returned as (S, H, W) axial slices in the same voxel order
a standard axial DICOM series has (so NIfTI and DICOM datasets agree pixel for pixel):

- axis 0 (slices): increasing patient z, inferior -> superior;
- axis 1 (rows):   anterior -> posterior, so the head points up in an image viewer;
- axis 2 (columns): patient right -> patient left (radiological convention: the patient's
  right is on the image's left, as scanners display axial CT).

In NIfTI (RAS+ world) terms the file's voxel axes are reoriented to ("L", "P", "S") and then
transposed to (z, y, x). The axes are taken from the affine's *closest* orientation
(`nib.io_orientation`), never from its diagonal: CQ500 series with a gantry tilt were converted
with a sheared affine, and those must load like any other. No resampling happens; only axis
flips and permutations, so voxel values and masks are kept exactly.

Every failure becomes an InputError naming the file, so readers can skip-and-report. A header
is checked against its file before any voxel is read (`check_claimed_size`): a few bytes that
claim gigabytes are refused at once, not after allocating what they claim.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichbench.errors import InputError

STORE_AXCODES = ("L", "P", "S")  # file axes are reoriented to these, then transposed to (z, y, x)
# The most voxels a volume may have: 2**30, a 1024 x 1024 x 1024 cube. A head CT has about
# 512 x 512 x 300 (thin-slice series up to ~1000 slices, 2.6e8 voxels), so only a broken or hostile
# header claims more; reading one would allocate gigabytes before anything could be checked.
MAX_VOXELS = 2 ** 30
# deflate's ceiling: a 258-byte match coded in 2 bits, so a gzip file never holds more than 1032
# times its own size; a header claiming more is refused without decompressing anything
DEFLATE_MAX_RATIO = 1032


@dataclass
class NiftiVolume:
    path: Path
    data: np.ndarray                    # (S, H, W) in store orientation
    spacing: tuple[float, float, float]  # (z, y, x) mm, in the same axis order as `data`
    slice_index: np.ndarray             # for each stored slice, its 0-based index in the file
    transform: np.ndarray               # nibabel ornt: file axes -> STORE_AXCODES
    file_shape: tuple[int, int, int]
    file_ornt: np.ndarray | None = None  # the affine's closest orientation, None if unusable
    affine: np.ndarray | None = None     # the file's affine, as nibabel gives it


def open_image(path: Path):
    """The image header (data is read lazily). Raises InputError if missing or not NIfTI."""
    import nibabel as nib
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on bad files
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"expected a NIfTI image, got {type(img).__name__}")
    shape = tuple(int(n) for n in img.shape)
    # a trailing singleton 4th dimension (one time point) is common and harmless
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) == 0:
        raise InputError(path, f"expected a 3-D volume, got an image of shape {tuple(img.shape)}")
    check_claimed_size(img, path)
    return img


def check_claimed_size(img, path: Path) -> None:
    """Refuse a header whose voxels the file cannot hold, or more than MAX_VOXELS, before nibabel
    allocates them: claimed bytes = data offset + voxels x item size, against the file's size
    (plain), or its possible and then its actual uncompressed size (gzip, counted with bounded
    memory only when the trailer does not already agree)."""
    shape = tuple(int(n) for n in img.shape)
    voxels = math.prod(shape)
    # the data proxy knows where the voxels start (the image's header copy says 0)
    offset = getattr(img.dataobj, "offset", None) or img.header.get_data_offset()
    claimed = int(offset) + voxels * img.header.get_data_dtype().itemsize
    data_file = Path(img.file_map["image"].filename)
    size = data_file.stat().st_size
    kind = data_file.name.lower().rsplit(".", 1)[-1]
    says = f"header claims {' x '.join(map(str, shape[:3]))} voxels ({_bytes(claimed)})"
    if kind == "gz" and claimed > size * DEFLATE_MAX_RATIO:
        raise InputError(path, f"{says} but the file holds {_bytes(size)}, at most "
                               f"{_bytes(size * DEFLATE_MAX_RATIO)} once decompressed: truncated or a false header")
    if kind not in ("gz", "bz2", "zst") and claimed > size:
        raise InputError(path, f"{says} but the file holds {_bytes(size)}: truncated or a false header")
    if voxels > MAX_VOXELS:
        raise InputError(path, f"{says}, more than the {MAX_VOXELS} (2**30) voxels ichbench reads: "
                               "no head CT is that large")
    if kind == "gz":
        held = _gzip_holds(data_file, claimed)
        if held < claimed:
            raise InputError(path, f"{says} but the file holds {_bytes(size)}, {_bytes(held)} once "
                                   "decompressed: truncated or a false header")


def _gzip_holds(path: Path, claimed: int) -> int:
    """Uncompressed bytes of a gzip file, counted up to `claimed`. The trailer's ISIZE (the last
    member's size mod 2**32) settles it at once for the usual single-member file; otherwise (several
    members, over 4 GiB, truncated) the stream is decompressed in 1 MiB pieces, stopping at
    `claimed` or where the data ends or breaks."""
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        if int.from_bytes(fh.read(4), "little") == claimed % 2 ** 32:
            return claimed   # a false match only lets nibabel's own read fail, as before
    held = 0
    try:
        with gzip.open(path, "rb") as gz:
            while held < claimed:
                piece = gz.read1(min(1 << 20, claimed - held))   # read1: a break keeps what came before
                if not piece:
                    break
                held += len(piece)
    except (OSError, EOFError, zlib.error):   # truncated or corrupt: what came before it counts
        pass
    return held


def file_to_store(affine: np.ndarray, path: Path) -> np.ndarray:
    """The nibabel orientation transform from the file's voxel axes to STORE_AXCODES.

    Uses the closest axis-aligned orientation of the affine, so a gantry-tilt shear (or a small
    rotation) still gives the right axes."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(path, "affine (sform/qform) is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, "affine is singular: voxel axes cannot be placed in patient space")
    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise InputError(path, "affine has no clear axis orientation")
    return ornt_transform(ornt, axcodes2ornt(STORE_AXCODES))


def read_array(img, path: Path, *, mask: bool = False) -> np.ndarray:
    """The voxel array in file order: float32 HU for a CT, bool for a mask (any value > 0.5,
    which tolerates masks saved as floats that are not exactly 0/1)."""
    try:
        if mask:
            raw = np.asanyarray(img.dataobj)
        else:
            raw = img.get_fdata(dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - truncated data, bad gzip stream, ...
        raise InputError(path, f"voxel data cannot be read, the file may be truncated "
                               f"({type(exc).__name__}: {_one_line(exc)})") from None
    raw = raw.reshape(raw.shape[:3]) if raw.ndim == 4 else raw
    if mask:
        raw = np.asarray(raw)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise InputError(path, "mask contains NaN or infinite voxels")
        return raw > 0.5
    bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise InputError(path, f"CT contains {bad} NaN or infinite voxels")
    return raw


def file_spacing(img, path: Path) -> np.ndarray:
    """Voxel size along the file's three axes, in mm.

    The header zooms, except along the slice axis of a sheared (gantry-tilt) affine: there the
    zoom is the distance between consecutive slice *centres*, longer than the distance between
    slice *planes* by 1/cos(tilt); the plane distance is what makes voxel volume
    (z * y * x) equal |det(affine)|, so hemorrhage volume in mL stays right."""
    zooms = _raw_pixdim(img, path)
    if not np.isfinite(zooms).all() or (zooms <= 0).any():
        raise InputError(path, f"invalid voxel spacing (pixdim) {tuple(float(z) for z in zooms)}")
    lin = np.asarray(img.affine, dtype=float)[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    if not np.isfinite(lin).all() or (norms == 0).any():
        return zooms                                 # no usable affine: nothing to correct
    cols = lin / norms
    if np.abs(cols.T @ cols - np.eye(3)).max() > 1e-4:   # non-orthogonal axes: a shear
        k = int(np.argmax(np.abs(lin[2])))           # the file axis closest to patient z
        a, b = (lin[:, i] for i in range(3) if i != k)
        plane = abs(np.linalg.det(lin)) / np.linalg.norm(np.cross(a, b))
        zooms[k] *= plane / np.linalg.norm(lin[:, k])
    return zooms


def to_store(raw: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """File-order array -> (S, H, W) store order (see the module docstring)."""
    from nibabel.orientations import apply_orientation
    oriented = apply_orientation(raw, transform)     # axes now (L, P, S)
    return np.ascontiguousarray(oriented.transpose(2, 1, 0))


def store_spacing(zooms: np.ndarray, transform: np.ndarray) -> tuple[float, float, float]:
    out = np.empty(3)
    for file_axis, (store_axis, _flip) in enumerate(transform):
        out[int(store_axis)] = zooms[file_axis]
    return (float(out[2]), float(out[1]), float(out[0]))


def slice_order(file_shape, transform: np.ndarray) -> np.ndarray:
    """For each stored slice, its index along the file axis that became the slice axis."""
    for file_axis, (store_axis, flip) in enumerate(transform):
        if int(store_axis) == 2:
            idx = np.arange(file_shape[file_axis])
            return idx[::-1].copy() if flip < 0 else idx
    raise AssertionError("orientation transform without a slice axis")


def load_ct(path: Path, transform: np.ndarray | None = None) -> NiftiVolume:
    """A CT volume in HU, in store orientation. `transform` overrides the affine's orientation
    (for datasets whose affines are known to be unreliable)."""
    path = Path(path)
    img = open_image(path)
    if transform is None:
        transform = file_to_store(img.affine, path)
    zooms = file_spacing(img, path)
    raw = read_array(img, path)
    return NiftiVolume(path=path, data=to_store(raw, transform), spacing=store_spacing(zooms, transform),
                       slice_index=slice_order(raw.shape, transform), transform=transform,
                       file_shape=tuple(raw.shape), file_ornt=closest_ornt(img.affine),
                       affine=np.asarray(img.affine, dtype=float))


def _open_on_grid(path: Path, ct: NiftiVolume, what: str):
    """A label image that must lie on `ct`'s voxel grid: same file shape, same axis orientation.

    Masks are voxel-aligned with their CT (ITK-SNAP and similar tools save them on the CT's
    grid), so the CT's orientation is applied; a mask whose own affine points its axes
    elsewhere is reported rather than silently mirrored."""
    import nibabel as nib
    path = Path(path)
    img = open_image(path)
    shape = tuple(int(n) for n in img.shape[:3])
    if shape != ct.file_shape:
        raise InputError(path, f"{what} shape {shape} differs from the CT shape {ct.file_shape} of {_short(ct.path)}")
    own = closest_ornt(img.affine)
    if own is not None and ct.file_ornt is not None and not np.array_equal(own, ct.file_ornt):
        codes = "".join(nib.orientations.ornt2axcodes(own))
        ct_codes = "".join(nib.orientations.ornt2axcodes(ct.file_ornt))
        raise InputError(path, f"{what} orientation {codes} differs from the CT's {ct_codes} ({_short(ct.path)})")
    return img


def load_mask(path: Path, ct: NiftiVolume, what: str = "mask") -> np.ndarray:
    """A mask drawn on `ct`'s voxel grid, as (S, H, W) bool in the same orientation."""
    img = _open_on_grid(path, ct, what)
    return to_store(read_array(img, Path(path), mask=True), ct.transform)


def load_label_map(path: Path, ct: NiftiVolume, ids: dict[int, int], what: str = "label map") -> np.ndarray:
    """A label image on `ct`'s grid as (S, H, W) uint8 store class ids: `ids` maps each value the
    dataset defines (0 included) to its store id. Values are read with the header's scl_slope /
    scl_inter applied, as every reader does; float labels are fine when they are whole numbers
    (0.0 / 1.0), and any other value, or one the dataset does not define, is an InputError naming
    the values found."""
    path = Path(path)
    img = _open_on_grid(path, ct, what)
    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated data, bad gzip stream, ...
        raise InputError(path, f"voxel data cannot be read, the file may be truncated "
                               f"({type(exc).__name__}: {_one_line(exc)})") from None
    raw = np.asarray(raw.reshape(raw.shape[:3]) if raw.ndim == 4 else raw)
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise InputError(path, f"{what} contains NaN or infinite voxels")
        whole = np.rint(raw)
        if np.abs(raw - whole).max(initial=0) > 1e-3:
            raise InputError(path, f"{what} values must be whole class ids, found {_values(raw[raw != whole])}")
        raw = whole
    found = np.unique(raw)
    extra = [v for v in found.tolist() if v not in ids]
    if extra:
        raise InputError(path, f"{what} values {_values(np.array(extra))} are outside the dataset's classes "
                               f"{', '.join(str(k) for k in sorted(ids))}")
    lut = np.zeros(int(max(ids)) + 1, np.uint8)
    for value, store_id in ids.items():
        lut[int(value)] = store_id
    return to_store(lut[raw.astype(np.int64)], ct.transform)


def _values(a: np.ndarray, limit: int = 6) -> str:
    vals = np.unique(a)
    shown = ", ".join(f"{v:g}" for v in vals[:limit].tolist())
    return shown + (f", ... ({len(vals)} values)" if len(vals) > limit else "")


def _raw_pixdim(img, path: Path) -> np.ndarray:
    """pixdim[1:4] as written in the file. nibabel's header check silently turns a zero pixdim
    into 1 mm, which would hide a broken header behind a plausible but wrong spacing."""
    from nibabel.openers import ImageOpener
    try:
        holder = img.file_map.get("header") or img.file_map["image"]  # .hdr/.img pair, or one .nii
        with ImageOpener(holder.filename) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
        return np.abs(np.array([float(z) for z in raw["pixdim"][1:4]]))
    except Exception:  # noqa: BLE001 - unusual storage: fall back to nibabel's checked header
        return np.array([float(z) for z in img.header.get_zooms()[:3]])


@contextmanager
def _quiet_nibabel():
    """nibabel logs header fixes to stderr; our own checks report problems as one line each."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def closest_ornt(affine) -> np.ndarray | None:
    """The affine's closest axis orientation (nibabel ornt, RAS+), or None if it has none."""
    from nibabel.orientations import io_orientation
    try:
        ornt = io_orientation(np.asarray(affine, dtype=float))
    except Exception:  # noqa: BLE001 - singular or non-finite affine
        return None
    return None if np.isnan(ornt).any() else ornt


def _bytes(n: int) -> str:
    """A size for a message: 74 bytes, 17.2 GB (decimal units)."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:.1f} {unit}"


def _short(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
