"""A seeded synthetic head-CT generator: skull, brain, ventricles and the five ICH subtypes.

Everything is a pure function of the seed (numpy's PCG64 plus scipy.ndimage), so a phantom
cohort is reproducible on any machine. Geometry is defined in millimetres and rendered at the
requested matrix size, so the anatomy looks the same at 64² and 512².

Conventions (those of `ichbench.datasets.base.Volume`): arrays are (S, H, W) = (slice, row, col);
slice 0 is the most inferior; row 0 is anterior (the head points up), columns run from the
patient's right to left (DICOM LPS +x). HU values are whole numbers in [-1024, 3071] so that
writing them as DICOM (raw = HU + 1024) and reading back is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ichbench import SUBTYPES
from ichbench.datasets.phantom.anatomy import Anatomy, fourier_radius, pick_z, smooth_field, wrap_angle, z_profile

GENERATOR_VERSION = 3             # bump when the output for a given seed changes: the phantom
                                  # source folder is regenerated when its manifest differs
                                  # (3: each volume's class map, ICH_classes.nii.gz, is written)
HU_MIN, HU_MAX = -1024, 3071
MIN_LESION_FRACTION = 0.003       # per-slice cross-sections smaller than this share of the slice
                                  # are dropped (≈12 px at 64²): tiny caps are unlearnable noise

CSF_HU = 8.0


@dataclass
class PhantomVolume:
    id: str
    hu: np.ndarray                            # (S, H, W) float32, integer-valued HU
    mask: np.ndarray                          # (S, H, W) bool, any ICH
    subtype_masks: dict[str, np.ndarray]      # subtype -> (S, H, W) bool, all five keys
    brain: np.ndarray                         # (S, H, W) bool intracranial cavity
    spacing: tuple[float, float, float]       # (z, y, x) mm
    subtypes: list[str]                       # subtypes present, in SUBTYPES order
    seed: int = 0
    slice_labels: np.ndarray = field(default=None, repr=False)  # (S, 5) uint8 per-slice subtypes

    def __post_init__(self):
        if self.slice_labels is None:
            self.slice_labels = np.stack(
                [self.subtype_masks[s].reshape(len(self.hu), -1).any(axis=1) for s in SUBTYPES],
                axis=1).astype(np.uint8)


# -- small geometric helpers ----------------------------------------------------------------------

def _iph(rng, an: Anatomy, vent: np.ndarray) -> np.ndarray:
    """Intraparenchymal: an irregular blob in the parenchyma, away from the midline."""
    centre, half = pick_z(rng, an.S, (0.10, 0.16))
    prof = z_profile(an.S, centre, half)
    k = int(round(centre))
    for _ in range(50):
        th0 = rng.uniform(-np.pi, np.pi)
        rho0 = rng.uniform(0.3, 0.6)
        r_at = an.zscale[k] / np.hypot(np.cos(th0) / an.ax, np.sin(th0) / an.ay)
        cy, cx = rho0 * r_at * np.sin(th0), rho0 * r_at * np.cos(th0)
        if abs(cx) > 0.3 * an.ax:
            break
    radius = rng.uniform(11, 18)
    ang = np.arctan2(an.dy - cy, an.dx - cx)
    dist = np.hypot(an.dy - cy, an.dx - cx) / (radius * np.clip(1 + fourier_radius(rng, ang, 4, 0.18), 0.6, 1.5))
    m = (dist[None] < prof[:, None, None]) & (an.rho < 0.9) & ~vent
    return m


def _ivh(rng, an: Anatomy, vents: dict) -> np.ndarray:
    """Intraventricular: blood layering in the dependent (posterior) part of the ventricles."""
    sides = [["left"], ["right"], ["left", "right"]][rng.integers(0, 3)]
    fill = rng.uniform(0.5, 1.0)
    m = np.zeros_like(an.brain)
    for s in sides:
        m |= vents[s] & (vents[s + "_ap"] > 1 - 2 * fill)
    if rng.random() < 0.5:
        m |= vents["third"]
    return m


def _sah(rng, an: Anatomy) -> np.ndarray:
    """Subarachnoid: thin curvilinear strips in the surface CSF and down the sulci of a convexity
    sector, sometimes in the interhemispheric fissure too. Strips are about 5 mm wide (the clot
    widens the sulci): thinner ones would vanish at the 64² training size."""
    centre, half = pick_z(rng, an.S, (0.14, 0.25))
    prof = z_profile(an.S, centre, half)[:, None, None] > 0
    th0, hw = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(45, 70))
    dth = np.abs(wrap_angle(an.theta - th0))[None]
    taper = np.clip(np.cos(np.pi / 2 * dth / hw), 0, None)
    depth = (1 - an.rho) * an.r_in
    m = (dth < hw) & (depth < rng.uniform(3.5, 5.5) * np.maximum(taper, 0.4)) & an.brain
    d3 = np.broadcast_to(an.d, m.shape)
    extra = [(th0 + rng.uniform(-0.8, 0.8) * hw + 0.06 * np.sin(2.0 * an.t + rng.uniform(0, 6)),
              rng.uniform(12, 22)) for _ in range(rng.integers(2, 5))]
    for a0, sdepth in an.sulcus_axes + extra:
        across = np.abs(wrap_angle(an.theta[None] - a0[:, None, None])) * d3
        m |= (across < 2.6) & (depth < sdepth + 3) & (dth < hw) & an.brain
    if rng.random() < 0.5:
        m |= (np.abs(an.dx)[None] < 2.5) & (an.dy[None] < 0) & (an.rho > 0.3) & an.brain
    return m & prof


def _subdural(rng, an: Anatomy) -> np.ndarray:
    """Subdural: a crescent along the inner table, long and fairly thin, over many slices."""
    centre, half = pick_z(rng, an.S, (0.22, 0.32))
    prof = z_profile(an.S, centre, half)[:, None, None]
    th0 = (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, np.deg2rad(25))
    hw = np.deg2rad(rng.uniform(50, 80))
    dth = np.abs(wrap_angle(an.theta - th0))[None]
    thick = rng.uniform(7, 12) * np.sqrt(np.clip(np.cos(np.pi / 2 * dth / hw), 0, None)) * np.sqrt(prof)
    depth = (1 - an.rho) * an.r_in
    return (dth < hw) & (depth < thick) & an.brain


def _epidural(rng, an: Anatomy) -> np.ndarray:
    """Epidural: a short, thick biconvex lens against the skull (elliptic thickness profile)."""
    centre, half = pick_z(rng, an.S, (0.10, 0.16))
    prof = z_profile(an.S, centre, half)[:, None, None]
    th0 = (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, np.deg2rad(35))
    hw = np.deg2rad(rng.uniform(24, 36))
    dth = np.abs(wrap_angle(an.theta - th0))[None]
    thick = rng.uniform(13, 22) * np.sqrt(np.clip(1 - (dth / hw) ** 2, 0, None)) * prof
    depth = (1 - an.rho) * an.r_in
    return (depth < thick) & an.brain


def _prune(m: np.ndarray, min_px: int) -> np.ndarray:
    """Drop slices where the lesion is too small to see, but never the whole lesion."""
    area = m.reshape(len(m), -1).sum(axis=1)
    keep = area >= min_px
    if not keep.any() and area.any():
        keep = area == area.max()
    return m & keep[:, None, None]


# -- public API ------------------------------------------------------------------------------------

def class_map(subtype_masks: dict[str, np.ndarray]) -> np.ndarray:
    """Per-voxel class ids (uint8): 0 background, k the subtype SUBTYPES[k-1]. Where two drawn
    subtypes overlap (an SDH and an EDH both line the inner table) the later one in SUBTYPES order
    (iph, ivh, sah, sdh, edh) wins, so the union of the classes is exactly the hemorrhage mask."""
    out = np.zeros(next(iter(subtype_masks.values())).shape, np.uint8)
    for k, name in enumerate(SUBTYPES, start=1):
        out[subtype_masks[name]] = k
    return out


def draw_subtypes(rng) -> list[str]:
    """One to three distinct subtypes (mixed hemorrhages are common in trauma)."""
    n = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
    return sorted(rng.choice(len(SUBTYPES), size=n, replace=False).tolist())


def generate_volume(seed: int, *, vol_id: str = "PH000", slices: int = 16, size: int = 128,
                    subtypes: list[str] | None = None) -> PhantomVolume:
    """One synthetic head CT. subtypes=None draws 1-3 subtypes from the seed; [] gives a volume
    without hemorrhage. The content depends only on (seed, slices, size, subtypes), not vol_id."""
    if slices < 4 or size < 32:
        raise ValueError(f"phantom needs at least 4 slices of 32x32, got {slices} of {size}x{size}")
    rng = np.random.default_rng(seed)
    if subtypes is None:
        subtypes = [SUBTYPES[i] for i in draw_subtypes(rng)]
    unknown = set(subtypes) - set(SUBTYPES)
    if unknown:
        raise ValueError(f"unknown subtypes {sorted(unknown)}; known: {', '.join(SUBTYPES)}")
    an = Anatomy(rng, slices, size)
    hu = an.render(rng)
    # IVH comes with ventricular enlargement (obstructive hydrocephalus), which also keeps it visible
    vents = an.ventricles(1.3 if "ivh" in subtypes else 1.0)
    vent_any = vents["left"] | vents["right"] | vents["third"]
    hu[vent_any] = an.csf_hu

    makers = {"iph": lambda: _iph(rng, an, ndimage.binary_dilation(vent_any, iterations=2)),
              "ivh": lambda: _ivh(rng, an, vents), "sah": lambda: _sah(rng, an),
              "sdh": lambda: _subdural(rng, an), "edh": lambda: _epidural(rng, an)}
    min_px = max(4, int(round(MIN_LESION_FRACTION * size * size)))
    sub_masks = {s: np.zeros(hu.shape, bool) for s in SUBTYPES}
    for s in SUBTYPES:                      # fixed order: the random stream does not depend on
        if s in subtypes:                   # the order the caller listed the subtypes in
            sub_masks[s] = _prune(makers[s](), min_px)
    mask = np.zeros(hu.shape, bool)
    for s in SUBTYPES:
        mask |= sub_masks[s]

    # blood: 50-90 HU by subtype, denser clot centre, mild texture; edema rings the IPH
    blood = np.full(hu.shape, -np.inf)
    levels = {"iph": (62, 80), "ivh": (55, 75), "sah": (55, 72), "sdh": (60, 82), "edh": (66, 88)}
    texture = smooth_field(rng, hu.shape, (0.5, 1.5, 1.5), 3.0)
    for s in SUBTYPES:
        m = sub_masks[s]
        if not m.any():
            continue
        level = rng.uniform(*levels[s])
        if s == "iph":
            edema = ndimage.binary_dilation(m, iterations=max(1, int(round(4 / an.sp)))) & ~m & an.brain
            hu[edema & ~vent_any] -= rng.uniform(6, 10)
            core = ndimage.distance_transform_edt(m, sampling=(an.spacing[0] * 4, an.sp, an.sp))
            level = level + np.clip(core / 6.0, 0, 1) * 6
        val = np.clip(level + texture, 50, 90)
        blood = np.where(m, np.maximum(blood, val), blood)
    hu = np.where(mask, blood, hu)

    # the scanner's point-spread function, then smoothed Gaussian noise of 5-9 HU
    hu = ndimage.gaussian_filter(hu, sigma=(0, 0.5, 0.5))
    sigma = rng.uniform(5, 9)
    noise = ndimage.gaussian_filter(rng.normal(size=hu.shape), sigma=(0, 0.6, 0.6))
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    gain = np.sqrt((ndimage.gaussian_filter(delta, 0.6) ** 2).sum())   # std left after smoothing
    hu = hu + noise * (sigma / gain)
    hu = np.rint(np.clip(hu, HU_MIN, HU_MAX)).astype(np.float32)

    present = [s for s in SUBTYPES if sub_masks[s].any()]
    return PhantomVolume(id=vol_id, hu=hu, mask=mask, subtype_masks=sub_masks, brain=an.brain.copy(),
                         spacing=an.spacing, subtypes=present, seed=int(seed))


def volume_seed(seed: int, index: int) -> int:
    """Independent, reproducible seeds for the volumes of a cohort."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def cohort_plan(n_volumes: int, *, seed: int = 0, ich_fraction: float = 0.6,
                prefix: str = "PH") -> list[tuple[str, int, list[str]]]:
    """(id, seed, subtypes) per volume. round(n * ich_fraction) volumes bleed; their main
    subtype cycles through the five so every subtype is present once there are five ICH volumes,
    sometimes with a second one beside it."""
    if not 0 <= ich_fraction <= 1:
        raise ValueError(f"ich_fraction must be in [0, 1], got {ich_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1C4]))
    n_ich = int(round(n_volumes * ich_fraction))
    ich = set(rng.permutation(n_volumes)[:n_ich].tolist())
    offset = int(rng.integers(0, len(SUBTYPES)))
    plan, k = [], 0
    for i in range(n_volumes):
        subs: list[str] = []
        if i in ich:
            main = SUBTYPES[(k + offset) % len(SUBTYPES)]
            subs = [main]
            if rng.random() < 0.35:
                subs.append(str(rng.choice([s for s in SUBTYPES if s != main])))
            k += 1
        plan.append((f"{prefix}{i:03d}", volume_seed(seed, i), sorted(subs, key=SUBTYPES.index)))
    return plan


def generate_cohort(n_volumes: int, *, seed: int = 0, slices: int = 16, size: int = 128,
                    ich_fraction: float = 0.6, prefix: str = "PH") -> list[PhantomVolume]:
    return [generate_volume(vseed, vol_id=vid, slices=slices, size=size, subtypes=subs)
            for vid, vseed, subs in cohort_plan(n_volumes, seed=seed, ich_fraction=ich_fraction,
                                                prefix=prefix)]
