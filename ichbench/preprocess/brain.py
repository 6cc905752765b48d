"""Intracranial cavity masks.

`BrainMasker` is the small interface every source of intracranial masks implements: the
classical extraction below now, the paper's ICM U-Net (tissue + bone windows, union; §2.3.3)
later, trained from any store that has `brain` masks.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage

BONE_HU = 300.0
TISSUE_HU = (-20.0, 120.0)


class BrainMasker(Protocol):
    name: str

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """(S,H,W) HU -> (S,H,W) bool intracranial mask."""


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
