"""Surface and volume metrics of one volume: HD, HD95, NSD, |RVD| and mL, with one empty-case rule.

Definitions are those of Nikolov et al. 2021 and DeepMind's `surface-distance`, which INSTANCE 2022's
official scoring uses: a mask's surface is the set of voxel *corners* whose 2x2x2 neighbourhood is
mixed; each carries the area of its marching-cubes surfel (`surfel_normals.py`, scaled by the
physical spacing). Directed distances go from every surfel of one surface to the nearest surfel
corner of the other, in mm.
- HD_q (q = 100 or 95): per direction, the distance where the surfel areas sorted by distance first
  reach q % of the surface's area; the larger of the two directions. Not the percentile of both
  directions pooled (medpy's hd95) and not between voxel centres of whole objects (ITK's filter).
- NSD at tolerance tau mm: the surfel area of both surfaces within tau of the other surface, over
  the area of both surfaces.

Empty cases (docs/score.md), one rule: both masks empty -> HD = HD95 = 0, NSD = 1, |RVD| = 0 (and
Dice = precision = recall = 1 through eps); exactly one empty -> HD = HD95 = inf, NSD = 0
(and |RVD| = inf when the truth is the empty one).
"""

from __future__ import annotations

import math

import numpy as np

from ichbench.evaluate.metrics import METRIC_EPS, _as_bool, volume_metrics, volume_ml

# (offset of the voxel in the corner's 2x2x2 neighbourhood, its bit): the weights of DeepMind's
# ENCODE_NEIGHBOURHOOD_3D_KERNEL, [[[128, 64], [32, 16]], [[8, 4], [2, 1]]]
_BITS = [((a, b, c), 7 - (4 * a + 2 * b + c)) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
# above this many query corners per voxel of the cropped box, a Euclidean distance transform of the
# box beats a k-d tree (scattered voxels, far from the other surface, are slow tree queries); below
# it, the tree wins by far
_EDT_ABOVE = 1 / 16


def surfel_areas_table(spacing) -> np.ndarray:
    """Area in mm^2 of the surfels of each of the 256 neighbourhood codes at this spacing: each
    triangle's unit-grid normal scaled by the spacing of the other two axes, as DeepMind does."""
    from ichbench.evaluate.surfel_normals import NEIGHBOUR_CODE_TO_NORMALS
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.array([np.linalg.norm(np.asarray(n, dtype=float) * scale, axis=1).sum()
                     for n in NEIGHBOUR_CODE_TO_NORMALS])


def _codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner of `mask` (shape + 1 per axis; outside is empty)."""
    padded = np.pad(mask, 1).view(np.uint8)
    n0, n1, n2 = (s + 1 for s in mask.shape)
    code = np.zeros((n0, n1, n2), dtype=np.uint8)
    for (a, b, c), bit in _BITS:
        code |= padded[a:a + n0, b:b + n1, c:c + n2] << np.uint8(bit)
    return code


def _surface(mask: np.ndarray, table: np.ndarray):
    """(corner indices (n, 3), surfel areas (n,)) of a cropped mask's surface."""
    code = _codes(mask)
    border = (code != 0) & (code != 255)
    idx = np.argwhere(border)
    return idx, table[code[border]], border


def _distances_kdtree(src_idx, dst_idx, spacing) -> np.ndarray:
    """Distance from each corner in src to the nearest in dst. The tree finds the nearest corner;
    the distance is then recomputed from index differences the way scipy's distance transform does
    (sqrt of the sum of (delta * spacing)^2), so a tie with the tolerance (one 0.42 mm voxel at
    tau = 0.42) falls the same way as in DeepMind's code."""
    from scipy.spatial import cKDTree
    s = np.asarray(spacing, dtype=float)
    # sliding-midpoint splits: faster to build, and to query from far away (scattered false positives)
    _, nearest = cKDTree(dst_idx * s, balanced_tree=False, compact_nodes=False).query(src_idx * s)
    delta = (dst_idx[nearest] - src_idx).astype(np.float64) * s
    return np.sqrt(np.add.reduce(delta * delta, axis=1))


def _distances_edt(src_idx, dst_border, spacing) -> np.ndarray:
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(~dst_border, sampling=spacing)
    return dist[tuple(src_idx.T)]


def surface_distances(pred, truth, spacing) -> dict:
    """Directed surface distances (mm) and surfel areas (mm^2): {"truth_to_pred", "truth_areas",
    "pred_to_truth", "pred_areas"}, unsorted. An empty mask has no surfels; distances to it are inf."""
    p = _as_bool(pred, "pred")
    t = _as_bool(truth, "truth")
    spacing = _check_spacing(spacing, p.ndim)
    if p.shape != t.shape:
        raise ValueError(f"surface_distances: pred shape {p.shape} != truth shape {t.shape}")
    union = p | t
    if not union.any():
        return {k: np.zeros(0) for k in ("truth_to_pred", "truth_areas", "pred_to_truth", "pred_areas")}
    box = _bbox(union)
    table = surfel_areas_table(spacing)
    t_idx, t_area, t_border = _surface(t[box], table)
    p_idx, p_area, p_border = _surface(p[box], table)
    if len(t_idx) == 0 or len(p_idx) == 0:
        return {"truth_to_pred": np.full(len(t_idx), np.inf), "truth_areas": t_area,
                "pred_to_truth": np.full(len(p_idx), np.inf), "pred_areas": p_area}
    t_to_p = _directed(t_idx, p_idx, p_border, spacing)
    p_to_t = _directed(p_idx, t_idx, t_border, spacing)
    return {"truth_to_pred": t_to_p, "truth_areas": t_area, "pred_to_truth": p_to_t, "pred_areas": p_area}


def _directed(src_idx, dst_idx, dst_border, spacing) -> np.ndarray:
    """Distances from src's corners to dst's surface: a k-d tree unless src has so many corners
    (scattered voxels, most far from dst) that a distance transform of the box is cheaper."""
    if len(src_idx) > _EDT_ABOVE * dst_border.size:
        return _distances_edt(src_idx, dst_border, spacing)
    return _distances_kdtree(src_idx, dst_idx, spacing)


def _check_spacing(spacing, ndim: int) -> tuple:
    s = np.asarray(spacing, dtype=float)
    if ndim != 3 or s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"surface metrics need a 3-D mask and three positive spacings (mm), "
                         f"got a {ndim}-D mask and spacing {spacing!r}")
    return tuple(float(x) for x in s)


def _bbox(mask: np.ndarray) -> tuple:
    """The smallest box holding every true voxel (the surfaces and their distances lie inside it)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def directed_percentile(distances, areas, q: float) -> float:
    """The distance at which the surfels, sorted by (distance, area), first reach q % of the total
    area: DeepMind's `compute_robust_hausdorff` for one direction (inf for an empty surface)."""
    if len(distances) == 0:
        return math.inf
    order = np.lexsort((areas, distances))
    d, a = distances[order], areas[order]
    cum = np.cumsum(a) / np.sum(a)
    return float(d[min(int(np.searchsorted(cum, q / 100.0)), len(d) - 1)])


def surface_metrics(pred, truth, spacing, nsd_mm: float = 1.0) -> dict:
    """{"hd_mm", "hd95_mm", "nsd"} of one volume, with the empty-case rule of the module docstring."""
    if not (isinstance(nsd_mm, (int, float)) and math.isfinite(nsd_mm) and nsd_mm >= 0):
        raise ValueError(f"nsd_mm must be a finite number >= 0, got {nsd_mm!r}")
    sd = surface_distances(pred, truth, spacing)
    t_empty, p_empty = len(sd["truth_areas"]) == 0, len(sd["pred_areas"]) == 0
    if t_empty and p_empty:
        return {"hd_mm": 0.0, "hd95_mm": 0.0, "nsd": 1.0}
    if t_empty or p_empty:
        return {"hd_mm": math.inf, "hd95_mm": math.inf, "nsd": 0.0}
    hd = {q: max(directed_percentile(sd["truth_to_pred"], sd["truth_areas"], q),
                 directed_percentile(sd["pred_to_truth"], sd["pred_areas"], q)) for q in (100, 95)}
    near = (sd["truth_areas"][sd["truth_to_pred"] <= nsd_mm].sum()
            + sd["pred_areas"][sd["pred_to_truth"] <= nsd_mm].sum())
    nsd = float(near / (sd["truth_areas"].sum() + sd["pred_areas"].sum()))
    return {"hd_mm": hd[100], "hd95_mm": hd[95], "nsd": nsd}


def case_metrics(pred, truth, spacing, nsd_mm: float = 1.0, eps: float = METRIC_EPS) -> dict:
    """Every per-volume metric of `ichbench score`: the paper's Dice/precision/recall with eps
    (`metrics.volume_metrics`, the same numbers runs report), HD, HD95, NSD, RVD and mL.

    spacing: mm per voxel along the three axes of `pred` and `truth`, in their order."""
    p = _as_bool(pred, "pred")
    t = _as_bool(truth, "truth")
    out = volume_metrics(p, t, eps)
    out.update(surface_metrics(p, t, spacing, nsd_mm))
    pred_ml, true_ml = volume_ml(p, spacing), volume_ml(t, spacing)
    if true_ml > 0:
        rvd = (pred_ml - true_ml) / true_ml
    else:
        rvd = 0.0 if pred_ml == 0 else math.inf
    out.update({"rvd": rvd, "abs_rvd": abs(rvd), "pred_ml": pred_ml, "true_ml": true_ml,
                "vol_err_ml": pred_ml - true_ml, "abs_vol_err_ml": abs(pred_ml - true_ml),
                "empty": _empty(p, t)})
    return out


def _empty(p: np.ndarray, t: np.ndarray) -> str:
    """Which mask is empty: "none", "pred", "truth" or "both" (the rule each case fell under)."""
    pe, te = not p.any(), not t.any()
    return {(False, False): "none", (True, False): "pred", (False, True): "truth", (True, True): "both"}[(pe, te)]
