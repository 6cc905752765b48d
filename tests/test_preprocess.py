import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from ichbench.preprocess.brain import ClassicalBrainMasker
from ichbench.preprocess.hu import dicom_to_hu, raw_to_hu
from ichbench.preprocess.resize import resize_mask, resize_slices, resized_spacing
from ichbench.preprocess.window import window


def test_hu_from_ct_small_by_hand():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.pixel_array
    hu = dicom_to_hu(ds)
    slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    for (r, c) in [(0, 0), (64, 64), (100, 20)]:
        assert hu[r, c] == np.float32(int(raw[r, c]) * slope + icpt)


def test_rsna_12bit_fix_by_hand():
    # the bad RSNA series hold HU as 12-bit two's complement with intercept 0: air (-1000 HU) is
    # stored as 4096-1000 = 3096, 40 HU as 40, bone 1000 HU as 1000, -596 HU as 3500.
    raw = np.array([[3096, 40], [1000, 3500]], np.uint16)
    hu = raw_to_hu(raw, 1.0, 0.0, bits_stored=12, pixel_representation=0)
    assert hu.tolist() == [[-1000.0, 40.0], [1000.0, -596.0]]
    # a sound series is left alone
    assert raw_to_hu(raw, 1.0, -1024.0, bits_stored=12, pixel_representation=0)[0, 1] == -984.0


def test_window_maps_range():
    assert window(np.array([-100.0, -50.0, 50.0, 150.0, 400.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_resize_keeps_constants_and_masks_binary():
    hu = np.full((2, 64, 48), 37.0, np.float32)
    out = resize_slices(hu, 32)
    assert out.shape == (2, 32, 32) and out.dtype == np.int16 and (out == 37).all()
    m = np.zeros((1, 64, 64), bool)
    m[0, 16:48, 16:48] = True
    r = resize_mask(m, 32)
    assert set(np.unique(r)) == {0, 1} and r.sum() == 16 * 16
    assert resized_spacing((5, 0.5, 0.4), (512, 400), 256) == (5.0, 1.0, 0.625)


def test_classical_brain_mask_finds_the_inside_of_a_skull():
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    hu = np.full((96, 96), -1000.0, np.float32)
    hu[r < 40] = 1000.0   # skull
    hu[r < 34] = 35.0     # brain
    mask = ClassicalBrainMasker()(hu[None])[0]
    inside = r < 33
    assert mask[inside].mean() > 0.97
    assert not mask[r > 35].any()
