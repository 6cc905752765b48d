"""`phantom_shifted`: the phantom seen by another scanner, a built-in external test set.

The same generator draws the heads and bleeds (other seeds, so other patients); each volume is
then changed the way a second site's scans differ from the first's (docs/datasets.md):

- a wider field of view: the head is shrunk in-plane by `FOV_ZOOM` and padded with air (a
  scanner reconstructing 300 mm instead of 220-240 mm; the pixel spacing grows to match),
- a miscalibrated HU scale: HU' = `HU_SCALE` · HU + `HU_OFFSET`,
- more noise: Gaussian noise of `EXTRA_NOISE_HU` HU on top (a lower-dose protocol),
- older blood: the bleed is `BLEED_SHIFT_HU` HU less dense (subacute, closer to parenchyma),
- fewer, thicker slices: `SLICES` of `SLICE_MM` mm instead of the phantom's 24 of 5 mm.

Everything is a pure function of the seed, so the set is as deterministic as the phantom; the
phantom's own volumes are untouched (its generator is not changed, only its output is edited).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ichbench.datasets.phantom.generator import HU_MAX, HU_MIN, PhantomVolume

SHIFT_VERSION = 2      # bump when the shifted output for a given seed changes (2: milder HU and noise shifts)
FOV_ZOOM = 0.78        # in-plane scale of the head (≈ 230 mm of a 295 mm field of view)
HU_SCALE, HU_OFFSET = 1.05, 5.0
EXTRA_NOISE_HU = 6.0
BLEED_SHIFT_HU = -8.0
SLICES, SLICE_MM = 16, 7.5
AIR_HU = -1000.0
DEFAULTS = {"volumes": 20, "slices": SLICES, "native_size": 128, "pretrain_volumes": 0, "ich_fraction": 0.6}
SEED_SALT = 0x5348   # "SH": other patients than the phantom's for the same seed


def _zoom_plane(arr: np.ndarray, fill, order: int) -> np.ndarray:
    """(S, H, W) shrunk in-plane about the centre by FOV_ZOOM, padded back to (H, W) with `fill`."""
    s, h, w = arr.shape
    small = ndimage.zoom(arr, (1, FOV_ZOOM, FOV_ZOOM), order=order, prefilter=False, grid_mode=True,
                         mode="grid-constant", cval=fill)
    out = np.full(arr.shape, fill, dtype=arr.dtype)
    y0, x0 = (h - small.shape[1]) // 2, (w - small.shape[2]) // 2
    out[:, y0:y0 + small.shape[1], x0:x0 + small.shape[2]] = small
    return out


def shift_volume(vol: PhantomVolume) -> PhantomVolume:
    """`vol` as the second site's scanner shows it (module docstring), seeded by `vol.seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([vol.seed, SEED_SALT]))
    hu = np.where(vol.mask, vol.hu + BLEED_SHIFT_HU, vol.hu).astype(np.float32)
    hu = _zoom_plane(hu, np.float32(AIR_HU), order=1)
    masks = {k: _zoom_plane(m, False, order=0) for k, m in vol.subtype_masks.items()}
    mask = np.zeros(hu.shape, bool)
    for m in masks.values():
        mask |= m
    hu = HU_SCALE * hu + HU_OFFSET + rng.normal(0.0, EXTRA_NOISE_HU, size=hu.shape)
    hu = np.rint(np.clip(hu, HU_MIN, HU_MAX)).astype(np.float32)
    _, sy, sx = vol.spacing
    spacing = (SLICE_MM, sy / FOV_ZOOM, sx / FOV_ZOOM)
    present = [s for s in vol.subtypes if masks[s].any()]
    return dataclasses.replace(vol, hu=hu, mask=mask, subtype_masks=masks, brain=_zoom_plane(vol.brain, False, 0),
                               spacing=spacing, subtypes=present, slice_labels=None)
