"""Volume-level metrics of the paper (§2.4, eqs. 1–3) and hemorrhage volume in mL.

The paper segments slice by slice but scores whole volumes: TP, FP and FN are summed over every
voxel of a volume before the ratios are taken, and ε = 1 keeps a volume without hemorrhage
defined (an empty prediction on an empty volume scores 1 on all three).
"""

from __future__ import annotations

import numpy as np

# §2.4: "ε ensures numerical stability when there are no true positives, set to ε = 1". The one ε of
# every score ichbench computes (runs, `ichbench score`, leaderboard re-scoring, the ICM's Dice):
# the functions below default to it and no caller passes its own (tests/test_fidelity.py checks both).
METRIC_EPS = 1.0


def _as_bool(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    # 0/1 integer or float masks are common (uint8 stores); anything else is a probability map or
    # a label image, and silently thresholding it would give wrong scores.
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1, got values outside {{0, 1}} (dtype {a.dtype})")
    return a.astype(bool)


def volume_metrics(pred, truth, eps: float = METRIC_EPS) -> dict:
    """Dice, precision and recall of one volume (eqs. 1–3) with TP/FP/FN summed over all voxels.

    pred, truth: boolean arrays of the same shape (any number of dimensions; a volume is usually
    (slices, H, W)). Returns {"dice", "precision", "recall", "tp", "fp", "fn"}.
    """
    p = np.asarray(pred)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"volume_metrics: pred shape {p.shape} != truth shape {t.shape}")
    p = _as_bool(p, "pred")
    t = _as_bool(t, "truth")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return {**ratios(tp, fp, fn, eps), "tp": tp, "fp": fp, "fn": fn}


def ratios(tp: int, fp: int, fn: int, eps: float = METRIC_EPS) -> dict:
    """Dice, precision and recall from a volume's counts (eqs. 1-3, smoothed by `eps`): the one
    formula every score of ichbench comes from, runs and leaderboard entries alike."""
    return {"dice": (2 * tp + eps) / (2 * tp + fp + fn + eps),
            "precision": (tp + eps) / (tp + fp + eps),
            "recall": (tp + eps) / (tp + fn + eps)}


def volume_ml(mask, spacing_zyx) -> float:
    """Hemorrhage volume in millilitres: voxel count × z·y·x spacing (mm³) / 1000.

    `spacing_zyx` is the store's spacing after resampling (see docs/architecture.md), so the count
    of positive voxels of a stored mask converts directly.
    """
    spacing = np.asarray(spacing_zyx, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"volume_ml: spacing_zyx must be three positive numbers (mm), got {spacing_zyx!r}")
    m = _as_bool(mask, "mask")
    return float(np.count_nonzero(m)) * float(np.prod(spacing)) / 1000.0
