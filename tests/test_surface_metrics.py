"""Per-volume surface and volume metrics (issue 22 §1): ichbench/evaluate/surface.py and agreement.py.

Where each expected value comes from is said at each test: hand computation from the definitions
(docs/score.md), DeepMind's `surface-distance` package as an independent oracle (the code INSTANCE
2022's official scoring calls; a test-only dependency, the `dev` extra), or a published table.
"""

import math

import numpy as np
import pytest
from scipy import ndimage

from ichbench.evaluate import surface
from ichbench.evaluate.agreement import bland_altman, icc_2_1, lin_ccc, volume_agreement
from ichbench.evaluate.surface import case_metrics, surface_distances, surface_metrics

INSTANCE = (5.0, 0.42, 0.42)   # (z, y, x) mm: INSTANCE 2022's typical grid


def _cube(n, shape=(12, 12, 12), at=(3, 3, 3)):
    m = np.zeros(shape, bool)
    m[at[0]:at[0] + n, at[1]:at[1] + n, at[2]:at[2] + n] = True
    return m


# --- hand-computed cases ----------------------------------------------------------------------

def test_single_voxel_surface_area_by_hand():
    """A lone voxel has 8 corner surfels, each the triangle through three half-edges:
    area = 1/8 * sqrt((s1 s2)^2 + (s0 s2)^2 + (s0 s1)^2) (half the cross product)."""
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    s0, s1, s2 = INSTANCE
    sd = surface_distances(m, m, INSTANCE)
    assert len(sd["truth_areas"]) == 8
    np.testing.assert_allclose(sd["truth_areas"], math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8)


@pytest.mark.parametrize("s", [1.0, 2.0])
def test_cube_shifted_one_voxel_isotropic_by_hand(s):
    """A 4-voxel cube and the same cube one voxel further along axis 0, spacing s. Each surface's
    corners at distance s from the other surface: its whole trailing face ((n+1)^2 corners: 9 face,
    12 edge, 4 vertex) and the 9 inner corners of its leading face; every other corner lies on the
    other surface (0). Surfel areas: face s^2, edge s^2 sqrt(2)/2, vertex s^2 sqrt(3)/8."""
    n = 4
    t, p = _cube(n), _cube(n, at=(4, 3, 3))
    face, edge, vertex = s * s, s * s * math.sqrt(2) / 2, s * s * math.sqrt(3) / 8
    total = 6 * (n - 1) ** 2 * face + 12 * (n - 1) * edge + 8 * vertex
    far = (n - 1) ** 2 * face + 4 * (n - 1) * edge + 4 * vertex + (n - 1) ** 2 * face
    m = surface_metrics(p, t, (s, s, s), nsd_mm=0.5 * s)
    assert m["hd_mm"] == pytest.approx(s)
    assert m["hd95_mm"] == pytest.approx(s)            # far / total = 0.38 > 5 %
    assert m["nsd"] == pytest.approx(1 - far / total)
    assert surface_metrics(p, t, (s, s, s), nsd_mm=s)["nsd"] == 1.0   # the tolerance includes its bound


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cube_shifted_one_voxel_anisotropic_hd_is_that_axis_spacing(axis):
    """Shifted one voxel along an axis, the trailing face is exactly that axis's spacing away from
    the other cube and nothing is farther: HD = spacing[axis], on INSTANCE's 5 x 0.42 x 0.42 grid too
    (a voxel-unit or wrongly paired spacing gives 1 or another axis's spacing)."""
    at = [3, 3, 3]
    at[axis] += 1
    m = surface_metrics(_cube(4, at=tuple(at)), _cube(4), INSTANCE)
    assert m["hd_mm"] == pytest.approx(INSTANCE[axis])


def test_two_points_by_hand():
    """One voxel each, 2 slices and 3 rows apart on the INSTANCE grid. From a voxel's 8 corners to the
    other's, per axis the offset is d or d - 1 voxels (0 along the axis they share), so the directed
    distances are sqrt((a*5)^2 + (b*0.42)^2) for a in {1, 2}, b in {2, 3}, each for 2 equal-area
    corners: HD = HD95 = the centre distance sqrt(10^2 + 1.26^2); within 6 mm lie the 4 with a = 1."""
    t = np.zeros((6, 8, 4), bool)
    p = np.zeros_like(t)
    t[1, 2, 1] = True
    p[3, 5, 1] = True
    centre = math.hypot(2 * 5.0, 3 * 0.42)
    m = surface_metrics(p, t, INSTANCE, nsd_mm=6.0)
    assert m["hd_mm"] == pytest.approx(centre)
    assert m["hd95_mm"] == pytest.approx(centre)
    assert m["nsd"] == pytest.approx(0.5)
    assert surface_metrics(p, t, INSTANCE, nsd_mm=centre + 1e-9)["nsd"] == 1.0
    assert surface_metrics(p, t, INSTANCE, nsd_mm=5.0)["nsd"] == 0.0   # nearest corner: hypot(5, 0.84)


def _medpy_hd95(result, reference, spacing):
    """medpy.metric.binary.hd95, transcribed: border voxels (mask minus its erosion), voxel-centre
    distances, both directions pooled before an unweighted percentile."""
    def directed(a, b):
        fp = ndimage.generate_binary_structure(3, 1)
        a_border, b_border = a ^ ndimage.binary_erosion(a, fp), b ^ ndimage.binary_erosion(b, fp)
        return ndimage.distance_transform_edt(~b_border, sampling=spacing)[a_border]
    return np.percentile(np.hstack((directed(result, reference), directed(reference, result))), 95)


def test_hd95_is_per_direction_not_pooled_like_medpy():
    """Truth: a 3 x 2 x 2 box; prediction: the box plus one voxel 7 slices above its top. Hand:
    the box's surfel area is 10 faces x 1 + 16 edges x sqrt(2)/2 + sqrt(3) = 23.05, the stray voxel's
    sqrt(3) (8 corners), 6.99 % of the prediction's surface. Sorted by distance, prediction->truth
    reaches 95 % at the third stray corner: its 4 near corners are 7 voxels from the box's top face,
    its 4 far ones 8. So HD95 = 7, HD = 8. medpy pools 12 + 13 border voxels of which one (4 %)
    is far: its HD95 is 0, hiding the false positive."""
    t = np.zeros((16, 6, 6), bool)
    t[2:5, 2:4, 2:4] = True
    p = t.copy()
    p[12, 2, 2] = True
    m = surface_metrics(p, t, (1.0, 1.0, 1.0))
    assert m["hd95_mm"] == pytest.approx(7.0)
    assert m["hd_mm"] == pytest.approx(8.0)
    assert _medpy_hd95(p, t, (1.0, 1.0, 1.0)) == 0.0   # the pitfall this definition avoids


# --- the empty-case rule -------------------------------------------------------------------------

def test_empty_case_rule():
    """docs/score.md: both empty -> Dice 1 (eps), HD = HD95 = 0, NSD 1, |RVD| 0; one empty -> HD and
    HD95 inf, NSD 0; |RVD| inf when only the truth is empty."""
    empty, blob = np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    blob[1:3, 1:3, 1:3] = True
    both = case_metrics(empty, empty, INSTANCE)
    assert (both["dice"], both["hd_mm"], both["hd95_mm"], both["nsd"], both["abs_rvd"]) == (1.0, 0.0, 0.0, 1.0, 0.0)
    assert both["empty"] == "both"
    missed = case_metrics(empty, blob, INSTANCE)
    assert math.isinf(missed["hd_mm"]) and math.isinf(missed["hd95_mm"]) and missed["nsd"] == 0.0
    assert missed["abs_rvd"] == 1.0 and missed["empty"] == "pred"
    assert missed["dice"] == pytest.approx(1 / (8 + 1))    # eq. 1 with eps = 1: (0 + 1) / (0 + 0 + 8 + 1)
    false_alarm = case_metrics(blob, empty, INSTANCE)
    assert math.isinf(false_alarm["hd_mm"]) and false_alarm["nsd"] == 0.0
    assert math.isinf(false_alarm["abs_rvd"]) and false_alarm["empty"] == "truth"


def test_volume_errors_by_hand():
    """8 true voxels, 12 predicted (8 of them right), 5 x 0.42 x 0.42 mm = 0.882 mm^3 a voxel."""
    t = np.zeros((4, 5, 6), bool)
    t[1:3, 1:3, 1:3] = True
    p = t.copy()
    p[3, 1:3, 1:3] = True
    m = case_metrics(p, t, INSTANCE)
    voxel_ml = 5 * 0.42 * 0.42 / 1000
    assert m["true_ml"] == pytest.approx(8 * voxel_ml) and m["pred_ml"] == pytest.approx(12 * voxel_ml)
    assert m["vol_err_ml"] == pytest.approx(4 * voxel_ml) and m["abs_rvd"] == pytest.approx(0.5)
    assert m["dice"] == pytest.approx((2 * 8 + 1) / (2 * 8 + 4 + 0 + 1))   # metrics.ratios, eps = 1


def test_bad_arguments_are_value_errors():
    m = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(m, m, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(m, np.ones((2, 2, 3), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="0/1"):
        surface_metrics(m.astype(int) * 2, m, (1, 1, 1))


# --- DeepMind's surface-distance as the oracle -------------------------------------------------

def _blob(shape, centre, radii):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def _cases():
    rng = np.random.default_rng(22)
    bleed = _blob((20, 96, 96), (10, 40, 50), (4, 18, 12))
    far_fp = np.roll(bleed, 2, axis=2)
    far_fp[16:18, 85:90, 5:9] = True
    salt = bleed | (rng.random(bleed.shape) < 0.003)
    tiny = np.zeros((20, 96, 96), bool)
    tiny[7, 40:43, 50:52] = True                               # a one-slice bleed of 6 voxels
    iso = _blob((48, 48, 48), (24, 24, 24), (9, 12, 7))
    return [
        ("INSTANCE grid, shifted and dilated", INSTANCE, ndimage.binary_dilation(np.roll(bleed, 1, 1)), bleed),
        ("INSTANCE grid, far false positive", INSTANCE, far_fp, bleed),
        ("INSTANCE grid, salt noise", INSTANCE, salt, bleed),
        ("INSTANCE grid, tiny one-slice bleed, missed by a slice", INSTANCE, np.roll(tiny, 1, 0), tiny),
        ("isotropic 1 mm", (1.0, 1.0, 1.0), ndimage.binary_erosion(iso), iso),
        ("anisotropic 0.7 x 2.5 x 1.3", (0.7, 2.5, 1.3), np.roll(iso, 3, 2), iso),
        ("dense random masks", (2.0, 0.5, 1.0), rng.random((14, 20, 17)) < 0.3, rng.random((14, 20, 17)) < 0.2),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def oracle():
    sd = pytest.importorskip("surface_distance", reason="DeepMind's surface-distance (pip install -e '.[dev]')")

    def metrics(pred, truth, spacing, tau):
        d = sd.compute_surface_distances(truth, pred, spacing)
        return (sd.compute_robust_hausdorff(d, 100), sd.compute_robust_hausdorff(d, 95),
                sd.compute_surface_dice_at_tolerance(d, tau))
    return metrics


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the package's scipy.ndimage.filters import
@pytest.mark.parametrize("name,spacing,pred,truth", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("tau", [0.42, 1.0, 5.0])
def test_matches_deepmind_surface_distance(oracle, name, spacing, pred, truth, tau):
    """HD, HD95 and NSD to 1e-4 relative of DeepMind's implementation on the same masks (issue 22)."""
    ours = surface_metrics(pred, truth, spacing, nsd_mm=tau)
    hd, hd95, nsd = oracle(pred, truth, spacing, tau)
    assert ours["hd_mm"] == pytest.approx(hd, rel=1e-4)
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-4)
    assert ours["nsd"] == pytest.approx(nsd, rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("name,spacing,pred,truth", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_kdtree_and_distance_transform_paths_agree(monkeypatch, name, spacing, pred, truth):
    """Distances come from a k-d tree for few surface corners and from two distance transforms for
    many: both exact, so both give the same numbers."""
    results = []
    for threshold in (0.0, 10.0):   # 0: always the transforms; 10: always the tree
        monkeypatch.setattr(surface, "_EDT_ABOVE", threshold)
        results.append(surface_metrics(pred, truth, spacing, nsd_mm=0.42))
    assert results[0] == pytest.approx(results[1], rel=1e-12)


# --- agreement ----------------------------------------------------------------------------------

def test_icc_2_1_matches_shrout_and_fleiss():
    """Shrout & Fleiss (1979), Psychol Bull 86:420, Table 2 (6 targets x 4 judges): ICC(2,1) = .29."""
    table = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert icc_2_1(table) == pytest.approx(0.29, abs=0.005)


def test_lin_ccc_and_bland_altman_by_hand():
    """y = x + 1 over x = 1, 2, 3: s_xy = s_x^2 = s_y^2 = 2/3 (1/n moments), mean difference 1:
    CCC = 2 (2/3) / (4/3 + 1) = 4/7. Differences 1, 2, 4: bias 7/3, SD sqrt(7/3), limits bias -/+ 1.96 SD."""
    assert lin_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert lin_ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    ba = bland_altman([2, 3, 5], [1, 1, 1])
    assert ba["bias"] == pytest.approx(7 / 3) and ba["sd"] == pytest.approx(math.sqrt(7 / 3))
    assert ba["loa_high"] == pytest.approx(7 / 3 + 1.96 * math.sqrt(7 / 3))
    one = volume_agreement([1.0], [2.0])
    assert one["n"] == 1 and one["ccc"] is None and one["icc_2_1"] is None and one["bias_ml"] == -1.0
