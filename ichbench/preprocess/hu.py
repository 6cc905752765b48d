"""Hounsfield units from DICOM pixel data."""

from __future__ import annotations

import numpy as np


def needs_rsna_12bit_fix(bits_stored: int, pixel_representation: int, intercept: float) -> bool:
    """RSNA 2019's known bad series: 12-bit unsigned data whose stored values wrapped.

    They are recognisable by BitsStored 12, PixelRepresentation 0 and an intercept above -100
    (sound CT series use about -1024)."""
    return bits_stored == 12 and pixel_representation == 0 and intercept > -100


def raw_to_hu(raw: np.ndarray, slope: float, intercept: float, *, bits_stored: int = 16,
              pixel_representation: int = 1) -> np.ndarray:
    """HU = raw * slope + intercept, undoing the RSNA 12-bit wrap first where it applies:
    raw + 1000 wrapped modulo 4096, read with intercept -1000."""
    if needs_rsna_12bit_fix(bits_stored, pixel_representation, intercept):
        x = raw.astype(np.int32) + 1000
        x[x >= 4096] -= 4096
        intercept = -1000.0
        out = x.astype(np.float32)
    else:
        out = raw.astype(np.float32)  # straight to float32: an int64/float64 detour costs ~20x
    if slope != 1:
        out *= np.float32(slope)
    out += np.float32(intercept)
    return out


def dicom_to_hu(ds) -> np.ndarray:
    """A pydicom Dataset's single frame in HU (float32)."""
    return raw_to_hu(
        ds.pixel_array,
        float(getattr(ds, "RescaleSlope", 1) or 1),
        float(getattr(ds, "RescaleIntercept", 0) or 0),
        bits_stored=int(getattr(ds, "BitsStored", 16)),
        pixel_representation=int(getattr(ds, "PixelRepresentation", 1)),
    )
