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


def class_ids(classes: np.ndarray) -> list[int]:
    """The nonzero ids present in a class map: one comparison pass per possible id (a few), far
    cheaper than sorting the map (np.unique) or widening it to int64 (np.bincount)."""
    classes = np.asarray(classes)
    top = int(classes.max()) if classes.size else 0
    return [c for c in range(1, top + 1) if (classes == c).any()]


def resize_classes(classes: np.ndarray, size: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(S,H,W) class ids (0 background) -> (S,size,size) uint8, by the per-class area rule: a pixel
    is hemorrhage where the union of the classes covers >= 0.5 of it (exactly `resize_mask` of
    `classes > 0`, which a caller that has it passes as `mask`, so the stored binary mask and the
    class map always agree), and then takes the class covering most of it (ties: the lower id).
    No class is merged into another; one can only vanish where it never covers the most of any
    pixel (ingest warns when that happens). Interpolation is linear, so only the slices holding
    two or more classes need one pass per class they hold; a one-class slice is that class where
    the mask is."""
    classes = np.asarray(classes)
    if classes.shape[0] == 0:
        return np.zeros((0, size, size), np.uint8)
    if classes.shape[1:] == (size, size):
        return classes.astype(np.uint8)
    union = resize_mask(classes > 0, size) if mask is None else np.asarray(mask, np.uint8)
    ids = class_ids(classes)
    on = np.stack([(classes == c).reshape(len(classes), -1).any(axis=1) for c in ids], axis=1) if ids else None
    out = np.zeros(union.shape, np.uint8)
    for row in np.flatnonzero(on.sum(axis=1) == 1) if ids else []:
        out[row] = union[row] * ids[int(np.argmax(on[row]))]
    mixed = np.flatnonzero(on.sum(axis=1) > 1) if ids else np.zeros(0, int)
    if len(mixed):
        best = np.full((len(mixed), size, size), -1.0, np.float32)
        pick = np.zeros(best.shape, np.uint8)
        for c in ids:
            area = _interp((classes[mixed] == c).astype(np.float32), size)
            better = area > best
            pick[better], best[better] = c, area[better]
        out[mixed] = pick * union[mixed]
    return out


def resize_stack(stack: np.ndarray, size: int, is_mask: bool) -> np.ndarray:
    """A stored array's rows at `size`: HU images stay int16 (`resize_slices`), masks uint8
    (`resize_mask`)."""
    return resize_mask(stack, size) if is_mask else resize_slices(stack, size)


def resized_spacing(spacing, shape_hw, size: int) -> tuple[float, float, float]:
    """In-plane spacing after resampling an (H, W) slice to size x size; z is unchanged."""
    z, y, x = (float(s) for s in spacing)
    return (z, y * shape_hw[0] / size, x * shape_hw[1] / size)
