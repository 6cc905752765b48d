"""The per-sample CPU reference of `ichbench.transforms.affine.random_affine`: what a naive
DataLoader transform does (scipy, one image at a time). The benchmark's baseline
(benchmarks/augment.py) and a cross-check in tests/test_augment.py; never used in training."""

from __future__ import annotations

import math

import numpy as np

def _scipy_matrix(tx, ty, angle, scale, flip, height, width):
    """`_pixel_inverse` for one sample in plain floats (no per-image tensor overhead in the baseline)."""
    a = math.radians(angle)
    c, s, f, k = math.cos(a), math.sin(a), (-1.0 if flip else 1.0), 1.0 / scale
    m = np.array([[c * f * k, -s * k], [s * f * k, c * k]])
    b = np.array([-tx * width, -ty * height])
    # scipy indexes (row, col) = (y, x): swap axes, and move the origin from the centre to pixel 0.
    m_rc = m[::-1, ::-1].copy()
    b_rc = b[::-1].copy()
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    return m_rc, centre - m_rc @ centre + b_rc


def affine_one_cpu(image: np.ndarray, *, tx: float, ty: float, angle: float, scale: float, flip: bool,
                   order: int = 1) -> np.ndarray:
    """Transform one (C, H, W) or (H, W) array with scipy.ndimage, channel by channel."""
    from scipy import ndimage

    img = np.asarray(image)
    planes = img[None] if img.ndim == 2 else img
    h, w = planes.shape[-2:]
    m, off = _scipy_matrix(tx, ty, angle, scale, flip, h, w)
    out = np.stack([ndimage.affine_transform(pl.astype(np.float32, copy=False), m, off, order=order,
                                             mode="grid-constant", cval=0.0) for pl in planes])
    return out[0] if img.ndim == 2 else out


def random_affine_per_sample_cpu(images: np.ndarray, masks: np.ndarray | None = None, *, translate: float = 0.1,
                                 rotate_deg: float = 15.0, scale: tuple[float, float] = (0.9, 1.1),
                                 hflip_p: float = 0.5, rng: np.random.Generator | None = None):
    """What a naive DataLoader transform does: draw and apply one transform per image on the CPU.

    images (B, C, H, W) float, masks (B, Cm, H, W) or (B, H, W) or None; images bilinear, masks
    nearest. Only the benchmark's baseline; training uses `random_affine`.
    """
    rng = rng if rng is not None else np.random.default_rng()
    images = np.asarray(images)
    out_i = np.empty(images.shape, dtype=np.float32)
    out_m = None if masks is None else np.empty_like(np.asarray(masks))
    for i in range(images.shape[0]):
        prm = dict(tx=rng.uniform(-translate, translate), ty=rng.uniform(-translate, translate),
                   angle=rng.uniform(-rotate_deg, rotate_deg), scale=rng.uniform(*scale),
                   flip=bool(rng.random() < hflip_p))
        out_i[i] = affine_one_cpu(images[i], **prm, order=1)
        if masks is not None:
            out_m[i] = affine_one_cpu(masks[i], **prm, order=0) >= 0.5
    return out_i, out_m
