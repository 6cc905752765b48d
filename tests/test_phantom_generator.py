"""The phantom generator's ground truth: anatomy, the five subtypes' shapes and HU, lesion sizes a
U-Net at 64x64 can learn, determinism, and a cohort that covers every subtype."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ichbench import SUBTYPES
from ichbench.datasets.phantom.generator import cohort_plan, generate_cohort, generate_volume
from ichbench.preprocess.resize import resize_mask


def test_generator_anatomy_and_subtype_shapes():
    v = generate_volume(7, slices=16, size=128, subtypes=list(SUBTYPES))
    assert v.hu.dtype == np.float32 and v.hu.shape == (16, 128, 128)
    assert np.array_equal(v.hu, np.rint(v.hu))                      # exact through DICOM
    assert v.subtypes == list(SUBTYPES) and set(v.subtype_masks) == set(SUBTYPES)
    assert np.array_equal(v.mask, np.any([v.subtype_masks[s] for s in SUBTYPES], axis=0))
    assert (v.mask <= v.brain).all()                                  # blood is intracranial
    assert v.spacing[0] == 5.0 and 220 / 128 <= v.spacing[1] <= 240 / 128

    corner = v.hu[:, :5, :5]
    assert abs(corner.mean() + 1000) < 5                              # air
    skull = ndimage.binary_erosion(v.hu > 600, iterations=1)
    assert 700 < np.median(v.hu[skull]) < 1500                        # bone
    inner = ndimage.binary_erosion(v.brain, iterations=3) & ~ndimage.binary_dilation(v.mask, iterations=2)
    assert 22 < np.median(v.hu[inner]) < 40                           # parenchyma (with CSF)
    core = ndimage.binary_erosion(v.mask, iterations=1)
    assert 55 < np.median(v.hu[core]) < 90                            # fresh blood
    noise = np.diff(v.hu[8, 55:75, 55:75], axis=1).std() / np.sqrt(2)
    assert 3 < noise < 12

    outside = ~v.brain
    per_slice = v.mask.reshape(16, -1).any(axis=1)
    assert per_slice.any() and not per_slice.all()                   # slices with and without ICH
    assert not per_slice[0] and not per_slice[-1]
    for s in SUBTYPES:
        m = v.subtype_masks[s]
        on = np.flatnonzero(m.reshape(16, -1).any(axis=1))
        assert len(on) >= 2 and np.array_equal(on, np.arange(on[0], on[-1] + 1)), s  # consecutive
        touches_skull = (ndimage.binary_dilation(m, iterations=2) & outside).any()
        assert touches_skull == (s in ("sah", "sdh", "edh")), s       # extra-axial vs intra-axial
    # SDH: long and thin crescent; EDH: short and thick lens
    def thickness_and_extent(m):
        k = int(np.argmax(m.reshape(16, -1).sum(axis=1)))
        return ndimage.distance_transform_edt(m[k]).max(), m[k].sum()
    t_sdh, a_sdh = thickness_and_extent(v.subtype_masks["sdh"])
    t_edh, a_edh = thickness_and_extent(v.subtype_masks["edh"])
    assert a_sdh / t_sdh ** 2 > 2 * a_edh / t_edh ** 2
    # IVH lies in the ventricles, near the midline
    ys, xs = np.nonzero(v.subtype_masks["ivh"].any(axis=0))
    assert np.abs(xs - 63.5).max() * v.spacing[2] < 35


def test_generator_lesions_are_learnable_size_at_64():
    for seed in range(2):
        for s in SUBTYPES:
            v = generate_volume(100 + seed, slices=16, size=128, subtypes=[s])
            area = resize_mask(v.subtype_masks[s], 64).reshape(16, -1).sum(axis=1)
            assert area.max() >= 25, (s, seed, area)


def test_generator_is_deterministic_and_seed_dependent():
    a, b = generate_volume(3, size=64, slices=8), generate_volume(3, size=64, slices=8)
    c = generate_volume(4, size=64, slices=8)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.mask, b.mask) and a.subtypes == b.subtypes
    assert not np.array_equal(a.hu, c.hu)
    empty = generate_volume(3, size=64, slices=8, subtypes=[])
    assert empty.subtypes == [] and not empty.mask.any()
    with pytest.raises(ValueError, match="unknown subtypes"):
        generate_volume(3, subtypes=["xyz"])


def test_cohort_plan_covers_every_subtype():
    plan = cohort_plan(10, seed=1, ich_fraction=0.6)
    assert [p[0] for p in plan] == [f"PH{i:03d}" for i in range(10)]
    assert sum(1 for p in plan if p[2]) == 6
    assert set().union(*(p[2] for p in plan)) == set(SUBTYPES)
    vols = generate_cohort(4, seed=1, slices=6, size=48, ich_fraction=0.5)
    assert [bool(v.subtypes) for v in vols] == [bool(p[2]) for p in cohort_plan(4, seed=1, ich_fraction=0.5)]
