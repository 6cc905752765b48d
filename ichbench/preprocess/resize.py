"""Resampling slices to the store's square size (256x256 by default, as in the paper)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HU_MIN, HU_MAX = -1024, 3071  # int16 storage range; values outside carry no information for ICH
CHUNK = 256  # slices per interpolate call: bounds the float32 copy of a large stack


def _interp(stack: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (S,H,W) -> (S,size,size) float32, antialiased when shrinking. The one resampling
    of ichbench: ingest (native -> store size), training loads and the node cache (store size ->
    training size) and predict all go through it."""
    out = np.empty((len(stack), size, size), np.float32)
    for start in range(0, len(stack), CHUNK):
        t = torch.from_numpy(np.ascontiguousarray(stack[start:start + CHUNK], dtype=np.float32))[:, None]
        if t.shape[-2:] == (size, size):
            out[start:start + CHUNK] = t[:, 0].numpy()
            continue
        # antialiasing avoids aliasing thin skull edges when downsampling 512 -> 256
        out[start:start + CHUNK] = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                                 antialias=t.shape[-1] > size or t.shape[-2] > size)[:, 0].numpy()
    return out


def resize_slices(hu: np.ndarray, size: int) -> np.ndarray:
    """(S,H,W) float HU -> (S,size,size) int16 HU, clipped to [-1024, 3071]."""
    if hu.shape[0] == 0:
        return np.zeros((0, size, size), np.int16)
    if hu.dtype == np.int16 and hu.shape[1:] == (size, size):
        # resampled already (rsna's decoding workers): the float round trip below gives the same
        # values and was the ingest driver's largest cost per slice
        return np.clip(hu, HU_MIN, HU_MAX)
    return np.rint(np.clip(_interp(hu, size), HU_MIN, HU_MAX)).astype(np.int16)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(S,H,W) bool -> (S,size,size) uint8 by area fraction >= 0.5."""
    if mask.shape[0] == 0:
        return np.zeros((0, size, size), np.uint8)
    return (_interp(mask.astype(np.float32), size) >= 0.5).astype(np.uint8)


def resize_stack(stack: np.ndarray, size: int, is_mask: bool) -> np.ndarray:
    """A stored array's rows at `size`: HU images stay int16 (`resize_slices`), masks uint8
    (`resize_mask`)."""
    return resize_mask(stack, size) if is_mask else resize_slices(stack, size)


def resized_spacing(spacing, shape_hw, size: int) -> tuple[float, float, float]:
    """In-plane spacing after resampling an (H, W) slice to size x size; z is unchanged."""
    z, y, x = (float(s) for s in spacing)
    return (z, y * shape_hw[0] / size, x * shape_hw[1] / size)
