"""The phantom's anatomy: a cranial ellipsoid with skull, scalp, parenchyma and ventricles, in
millimetres, rendered at any matrix size; plus the random fields and z-profiles lesions use.
Split from `generator.py` (which adds the hemorrhages); outputs are unchanged by the split."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SLICE_THICKNESS_MM = 5.0          # as RSNA/CQ500 head CT
Z_RANGE = (-0.7, 0.88)            # slices span this part of the cranial ellipsoid (base .. vertex)
LESION_Z_BAND = (0.15, 0.85)      # hemorrhages stay in this fraction of the slices: the top and
                                  # bottom slices are always ICH-free
AIR_HU = -1000.0


def wrap_angle(a):
    """Angle difference into (-pi, pi]."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def fourier_radius(rng, theta, kmax: int, amp: float):
    """A smooth random function of the angle: sum of a few harmonics (irregular outlines)."""
    out = np.zeros_like(theta)
    for k in range(2, kmax + 1):
        out += rng.normal(0, amp / k ** 0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return out


def smooth_field(rng, shape, sigma_px, amp):
    """Gaussian-smoothed white noise rescaled to standard deviation `amp`."""
    f = ndimage.gaussian_filter(rng.normal(size=shape), sigma=sigma_px)
    return f * (amp / (f.std() + 1e-9))


def z_profile(n_slices: int, centre: float, half: float) -> np.ndarray:
    """Elliptic cross-section scale per slice: 1 at the centre, 0 beyond `half` slices away."""
    s = np.arange(n_slices, dtype=np.float64)
    u = (s - centre) / max(half, 0.5)
    return np.sqrt(np.clip(1 - u ** 2, 0, None))


def pick_z(rng, n_slices: int, half_frac: tuple[float, float], band=LESION_Z_BAND,
            within: tuple[float, float] | None = None) -> tuple[float, float]:
    """A lesion's centre slice and half extent (in slices), kept inside the allowed band."""
    lo, hi = band[0] * (n_slices - 1), band[1] * (n_slices - 1)
    if within is not None:
        lo, hi = max(lo, within[0]), min(hi, within[1])
    half = max(1.6, rng.uniform(*half_frac) * n_slices)
    half = min(half, max(1.0, (hi - lo) / 2 + 0.9))
    c_lo, c_hi = lo + half - 0.9, hi - half + 0.9
    centre = rng.uniform(c_lo, c_hi) if c_hi > c_lo else (lo + hi) / 2
    return centre, half


class Anatomy:
    """The normal head of one volume, with the polar coordinates the lesions are drawn in."""

    def __init__(self, rng, slices: int, size: int):
        self.S, self.H = slices, size
        fov = rng.uniform(220.0, 240.0)
        self.sp = fov / size
        self.spacing = (SLICE_THICKNESS_MM, self.sp, self.sp)
        c = (size - 1) / 2
        cy = c + rng.uniform(-0.02, 0.02) * size
        cx = c + rng.uniform(-0.015, 0.015) * size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        self.dy, self.dx = (yy - cy) * self.sp, (xx - cx) * self.sp     # mm, +y posterior, +x left
        self.d = np.hypot(self.dy, self.dx)
        self.theta = np.arctan2(self.dy, self.dx)
        self.t = np.linspace(*Z_RANGE, slices)                        # position in the ellipsoid
        self.ay, self.ax = rng.uniform(78, 88), rng.uniform(62, 70)   # inner-table semi-axes, mm
        self.zscale = np.sqrt(1 - self.t ** 2)                        # cross-section shrinks upward
        # inner table radius per slice and angle: an ellipse with a slightly irregular outline
        ell = 1.0 / np.sqrt((np.cos(self.theta) / self.ax) ** 2 + (np.sin(self.theta) / self.ay) ** 2)
        wobble = 1 + fourier_radius(rng, self.theta, 5, 0.02)
        self.r_in = ell[None] * wobble[None] * self.zscale[:, None, None]   # (S, H, W) mm
        self.rho = self.d[None] / self.r_in                           # < 1 inside the cavity
        self.brain = self.rho < 1.0

    def render(self, rng) -> np.ndarray:
        """The normal head in HU (float64, before blur and noise)."""
        S, H = self.S, self.H
        d3 = np.broadcast_to(self.d, (S, H, H))
        th = self.theta
        hu = np.full((S, H, H), AIR_HU)
        # skull: a shell of varying thickness; dense tables, lighter diploë between them
        thick = rng.uniform(5.0, 7.0) * (1 + 0.25 * np.cos(th - rng.uniform(0, 2 * np.pi))
                                         + fourier_radius(rng, th, 4, 0.08))
        thick = np.clip(thick, 3.0, None)[None]
        scalp = rng.uniform(4.0, 7.0)
        u = (d3 - self.r_in) / thick
        table, diploe = rng.uniform(1300, 1500), rng.uniform(650, 800)
        bone = (u >= 0) & (u < 1)
        skin = (u >= 1) & (d3 < self.r_in + thick + scalp)
        hu[skin] = 30.0
        fat = skin & (d3 < self.r_in + thick + scalp * 0.55)
        hu[fat] = -70.0
        hu[bone] = (diploe + (table - diploe) * np.abs(2 * u - 1) ** 1.5)[bone]

        # parenchyma: cortex (gray matter) over white matter, with smooth gray/white variation
        gm, wm = rng.uniform(35, 40), rng.uniform(25, 29)
        depth = (1 - self.rho) * self.r_in                           # mm below the inner table
        gyri = rng.integers(14, 22)
        cortex = rng.uniform(3.0, 4.0) * (1 + 0.45 * np.sin(gyri * th[None] + 1.3 * self.t[:, None, None]))
        rim = rng.uniform(1.5, 2.5)                                  # subarachnoid CSF layer
        brain = self.brain
        hu[brain] = wm
        hu[brain & (depth < rim + cortex)] = gm
        # deep gray nuclei beside the ventricles in the lower-middle slices
        for side in (-1, 1):
            nuc = (((self.dx - side * 22) / 9) ** 2 + ((self.dy + 2) / 13) ** 2)[None] < \
                z_profile(S, self._slice_of(-0.05), 0.18 * S)[:, None, None] ** 2
            hu[nuc & brain] = rng.uniform(33, 37)
        hu[brain] += smooth_field(rng, (S, H, H), (0.4, 6 / self.sp, 6 / self.sp), 1.5)[brain]

        csf = brain & (depth < rim)
        # sulci: thin CSF clefts running in from the surface at fixed angles that wander with z
        self.sulci = np.zeros((S, H, H), bool)
        self.sulcus_axes = []
        for _ in range(rng.integers(20, 28)):
            a0 = rng.uniform(-np.pi, np.pi) + 0.08 * np.sin(2.0 * self.t + rng.uniform(0, 6))
            sdepth = rng.uniform(8, 18)
            across = np.abs(wrap_angle(th[None] - a0[:, None, None])) * d3
            cleft = (across < 0.8) & (depth < sdepth) & brain
            self.sulci |= cleft
            self.sulcus_axes.append((a0, sdepth))
        csf |= self.sulci
        # interhemispheric fissure: midline cleft, interrupted by the corpus callosum mid-volume
        fissure = (np.abs(self.dx)[None] < 1.0) & brain & ((self.rho > 0.55) | (self.t[:, None, None] > 0.45))
        csf |= fissure

        # ventricles (drawn by `ventricles`, whose size depends on the hemorrhage): two lateral
        # ventricles whose posterior parts diverge, as the atria do, and a midline third ventricle
        self.vent_params = dict(ap=rng.uniform(24, 30), lat=rng.uniform(7, 9.5),
                                sep=rng.uniform(7, 9), ang=np.deg2rad(rng.uniform(8, 15)),
                                yc=-rng.uniform(2, 8), zc=self._slice_of(0.1), zh=0.22 * S)
        hu[csf] = rng.uniform(4, 12)
        self.csf_hu = rng.uniform(2, 12)
        return hu

    def _slice_of(self, t: float) -> float:
        """Fractional slice index of ellipsoid position t."""
        return (t - Z_RANGE[0]) / (Z_RANGE[1] - Z_RANGE[0]) * (self.S - 1)

    def ventricles(self, scale: float) -> dict[str, np.ndarray]:
        """Per-side lateral ventricle masks (S, H, W) and their local AP coordinate (-1 anterior)."""
        p = self.vent_params
        prof = z_profile(self.S, p["zc"], p["zh"])[:, None, None]
        prof = np.where(prof > 0, np.maximum(prof, 0.45), 0)       # horns end bluntly
        out = {}
        for side, name in ((-1, "right"), (1, "left")):
            # tilt each about its centre so the posterior ends (atria) lie farther from the midline
            a = side * p["ang"]
            x0, y0 = self.dx - side * p["sep"] * scale, self.dy - p["yc"]
            xr = x0 * np.cos(a) - y0 * np.sin(a)
            yr = x0 * np.sin(a) + y0 * np.cos(a)
            q = (xr / (p["lat"] * scale)) ** 2 + (yr / (p["ap"] * scale)) ** 2
            m = (q[None] < prof ** 2) & self.brain
            out[name] = m
            out[name + "_ap"] = np.broadcast_to(yr / (p["ap"] * scale), m.shape)
        third = ((np.abs(self.dx) < 1.5 * scale) & (np.abs(self.dy - 4) < 9))[None] & \
            (z_profile(self.S, self._slice_of(-0.2), 0.12 * self.S)[:, None, None] > 0) & self.brain
        out["third"] = third
        return out


# -- hemorrhages -----------------------------------------------------------------------------------
