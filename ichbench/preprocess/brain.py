"""The classical intracranial cavity mask (threshold the skull, fill inside it): the `classical`
source of `ichbench.icm.sources`, beside the shipped masks and the paper's ICM U-Nets (§2.3.3)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BONE_HU = 300.0
TISSUE_HU = (-20.0, 120.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def classical_slice(hu: np.ndarray) -> np.ndarray:
    """One slice: threshold the skull, fill inside it, remove the bone, keep the largest part.

    Where the skull ring is open (skull base, burr holes) filling finds nothing; then a closed
    version of the bone is tried, and finally soft tissue inside the head's convex hull region."""
    bone = hu >= BONE_HU
    if not bone.any():
        return np.zeros(hu.shape, bool)
    tissue = (hu >= TISSUE_HU[0]) & (hu <= TISSUE_HU[1])
    for closing in (0, 3, 7):
        b = ndimage.binary_closing(bone, iterations=closing) if closing else bone
        inside = ndimage.binary_fill_holes(b) & ~b & tissue
        inside = ndimage.binary_opening(inside, iterations=2)
        if inside.sum() > 0.01 * hu.size:
            return ndimage.binary_fill_holes(_largest_component(inside))
    return np.zeros(hu.shape, bool)


class ClassicalBrainMasker:
    name = "classical"

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return np.stack([classical_slice(s) for s in hu]) if len(hu) else np.zeros(hu.shape, bool)
