"""DICOM reading on real files: the CTs pydicom ships and slices written here with pydicom."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ichbench.datasets.dicom_io import is_axial, order_series, read_slice, stack_series
from ichbench.testing.dicom import write_slice
from ichbench.errors import InputError

TILT = (1.0, 0.0, 0.0, 0.0, 0.9272, -0.3746)   # the gantry tilt of J2K_pixelrep_mismatch.dcm


def _hand_hu(path, points):
    """raw * RescaleSlope + RescaleIntercept, from the file's own tags."""
    ds = pydicom.dcmread(str(path))
    raw = ds.pixel_array
    slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    return [int(raw[r, c]) * slope + icpt for r, c in points]


def test_ct_small_hu_and_geometry_by_hand():
    path = get_testdata_file("CT_small.dcm")
    s = read_slice(path)
    points = [(0, 0), (64, 64), (100, 20), (127, 127)]
    assert [float(s.hu[r, c]) for r, c in points] == _hand_hu(path, points)
    assert s.hu.dtype == np.float32 and s.hu.shape == s.shape == (128, 128)
    assert s.spacing_yx == (0.661468, 0.661468) and s.thickness == 5.0
    assert s.position == (-158.135803, -179.035797, -75.699997)
    assert is_axial(s.orientation)


def test_jpeg2000_head_ct_decodes_to_hu_by_hand():
    # needs a JPEG 2000 decoder: Pillow >= 10 provides it to pydicom
    path = get_testdata_file("J2K_pixelrep_mismatch.dcm")
    s = read_slice(path)
    points = [(256, 256), (0, 0), (256, 100), (256, 105), (400, 300)]
    assert [float(s.hu[r, c]) for r, c in points] == _hand_hu(path, points)
    # slope 1, intercept 0: HU are the stored values; brain at the centre, -2000 padding outside
    assert s.hu[256, 256] == 27.0 and s.hu[0, 0] == -2000.0
    assert 20 <= np.median(s.hu[200:300, 200:300]) <= 40
    # a 22 degree gantry tilt is still axial; the window tags are MultiValue and do not get in the way
    assert is_axial(s.orientation)
    assert isinstance(pydicom.dcmread(path).WindowCenter, pydicom.multival.MultiValue)


def test_rsna_12bit_wrapped_file_by_hand(tmp_path):
    # RSNA's bad series: BitsStored 12, unsigned, intercept 0, HU + 1000 stored modulo 4096
    # (minus 1000 again): -1000 HU -> 3096, 40 -> 40, 1000 -> 1000, -596 -> 3500, -1 -> 4095
    raw = np.array([[3096, 40, 1000], [3500, 4095, 0]], np.uint16)
    path = write_slice(tmp_path / "wrapped.dcm", raw, bits_stored=12, intercept=0.0)
    assert read_slice(path).hu.tolist() == [[-1000.0, 40.0, 1000.0], [-596.0, -1.0, 0.0]]
    # the same values with a sound intercept are not touched
    path = write_slice(tmp_path / "sound.dcm", raw, bits_stored=12, intercept=-1024.0)
    assert read_slice(path).hu.tolist() == [[2072.0, -984.0, -24.0], [2476.0, 3071.0, -1024.0]]


def test_signed_pixels_and_slope(tmp_path):
    raw = np.array([[-1000, 0], [40, 1500]], np.int16)
    path = write_slice(tmp_path / "s.dcm", raw, pixel_representation=1, slope=0.5, intercept=-10.0)
    assert read_slice(path).hu.tolist() == [[-510.0, -10.0], [10.0, 740.0]]


def test_truncated_and_non_dicom_files_raise_input_error(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    data = open(src, "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_slice(cut)
    assert str(err.value).startswith(str(cut)) and "pixel data" in str(err.value)
    # the header is intact: a header-only read still works (readers choose series this way)
    assert read_slice(cut, pixels=False).shape == (128, 128)
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file\n")
    with pytest.raises(InputError, match="not a readable DICOM file"):
        read_slice(text)


def test_flipped_orientation_is_shown_head_up(tmp_path):
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4) + 1024
    path = write_slice(tmp_path / "f.dcm", raw, orientation=(-1, 0, 0, 0, -1, 0))
    assert read_slice(path).hu.tolist() == (raw.astype(float) - 1024)[::-1, ::-1].tolist()


def _series(folder, n, *, uid="1.2.3", orientation=(1, 0, 0, 0, 1, 0), step=2.5, shape=(4, 4), start=0):
    normal = np.cross(orientation[:3], orientation[3:])
    paths = []
    for k in range(n):
        raw = np.full(shape, 1024 + 10 * (k + start), np.uint16)
        pos = tuple(np.array([-10.0, -20.0, 30.0]) + (k + start) * step * normal)
        paths.append(write_slice(folder / f"IM{k + start:03d}.dcm", raw, series_uid=uid, position=pos,
                                 orientation=orientation))
    return paths


def test_stack_series_sorts_along_the_tilted_normal(tmp_path):
    paths = _series(tmp_path, 4, orientation=TILT, step=2.5)
    slices = [read_slice(p) for p in reversed(paths)]
    hu, spacing, ordered = stack_series(slices, tmp_path)
    assert [s.path.name for s in ordered] == ["IM000.dcm", "IM001.dcm", "IM002.dcm", "IM003.dcm"]
    assert hu[:, 0, 0].tolist() == [0.0, 10.0, 20.0, 30.0]
    # 2.5 mm between slices along the normal, although z moves only 2.5 * 0.9272 mm
    assert spacing[0] == pytest.approx(2.5, abs=1e-3) and spacing[1:] == (0.5, 0.5)
    # header-only slices give the same order and spacing
    ordered2, spacing2 = order_series([read_slice(p, pixels=False) for p in paths], tmp_path)
    assert [s.path for s in ordered2] == [s.path for s in ordered] and spacing2 == spacing


def test_bad_series_are_named(tmp_path):
    a = [read_slice(p) for p in _series(tmp_path / "a", 2, uid="1.1")]
    b = [read_slice(p) for p in _series(tmp_path / "b", 2, uid="1.2", start=5)]
    with pytest.raises(InputError, match=r"mixes 2 series") as err:
        stack_series(a + b, tmp_path / "mixed")
    assert str(err.value).startswith(str(tmp_path / "mixed"))
    sag = [read_slice(p) for p in _series(tmp_path / "sag", 3, orientation=(0, 1, 0, 0, 0, -1))]
    with pytest.raises(InputError, match="not axial"):
        stack_series(sag, tmp_path / "sag")
    dup = _series(tmp_path / "dup", 3)
    shutil.copy(dup[1], tmp_path / "dup" / "IM099.dcm")
    with pytest.raises(InputError, match="same position"):
        stack_series([read_slice(p) for p in sorted((tmp_path / "dup").glob("*.dcm"))], tmp_path / "dup")
    small = [read_slice(p) for p in _series(tmp_path / "size", 2, shape=(4, 4))]
    big = [read_slice(p) for p in _series(tmp_path / "size2", 1, shape=(6, 6), start=7)]
    with pytest.raises(InputError, match="different sizes"):
        stack_series(small + big, tmp_path / "size")


def test_ordered_pool_keeps_order_bounds_work_and_reports_failures(tmp_path):
    from ichbench.datasets.dicom_io import hu_or_problem
    from ichbench.parallel import OrderedPool

    paths = _series(tmp_path, 5)
    (tmp_path / "bad.dcm").write_text("not DICOM")
    items = [str(p) for p in paths] + [str(tmp_path / "bad.dcm")]
    with OrderedPool(2) as pool:
        out = list(pool.map(hu_or_problem, items, chunksize=2))
        assert [float(hu[0, 0]) for hu, _ in out[:5]] == [0.0, 10.0, 20.0, 30.0, 40.0]
        assert out[5][0] is None and out[5][1].startswith("not a readable DICOM file")
        # a slow consumer never has more than workers * prefetch chunks pulled ahead
        pulled = []

        def numbers():
            for i in range(10_000):
                pulled.append(i)
                yield -i

        it = pool.map(abs, numbers(), chunksize=8, prefetch=2)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        assert len(pulled) <= 8 * (2 * 2 + 1)
        it.close()
