"""Agreement of predicted and true hemorrhage volumes (mL) across volumes: Lin's CCC, ICC(2,1) and
Bland-Altman bias with 95 % limits, as clinical volumetry papers report them (the ABC/2 comparisons).

Formulas, so that a reader can check them (docs/score.md):
- Lin's concordance correlation coefficient (Lin 1989): 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)
  with the 1/n moments of the paper.
- ICC(2,1), two-way random effects, absolute agreement, single measurement (Shrout & Fleiss 1979;
  McGraw & Wong's ICC(A,1)): (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n), from the two-way
  ANOVA mean squares of n volumes (rows) by k = 2 raters (prediction and truth).
- Bland-Altman (1986): bias = mean(pred - truth), limits = bias -/+ 1.96 SD(pred - truth), SD with n-1.
No statistics package of the project's dependencies has these (scipy has none of the three), so they
are written here, tested against published and hand-computed values.
"""

from __future__ import annotations

import numpy as np


def lin_ccc(x, y) -> float | None:
    x, y = _pair(x, y)
    if len(x) < 2:
        return None
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return None if denom == 0 else float(2 * sxy / denom)


def icc_2_1(ratings) -> float | None:
    """ICC(2,1) of an (n targets, k raters) table."""
    r = np.asarray(ratings, dtype=float)
    n, k = r.shape
    if n < 2 or k < 2:
        return None
    grand = r.mean()
    ss_rows = k * ((r.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((r.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((r - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    return None if denom == 0 else float((msr - mse) / denom)


def bland_altman(pred, truth) -> dict:
    """{"bias", "sd", "loa_low", "loa_high"} of pred - truth (None where n is too small)."""
    p, t = _pair(pred, truth)
    d = p - t
    bias = float(d.mean()) if len(d) else None
    sd = float(d.std(ddof=1)) if len(d) >= 2 else None
    lo = hi = None
    if sd is not None:
        lo, hi = bias - 1.96 * sd, bias + 1.96 * sd
    return {"bias": bias, "sd": sd, "loa_low": lo, "loa_high": hi}


def volume_agreement(pred_ml, true_ml) -> dict:
    """Every statistic above for predicted vs true mL over volumes, in the keys `score` writes."""
    p, t = _pair(pred_ml, true_ml)
    ba = bland_altman(p, t)
    return {"n": int(len(p)), "ccc": lin_ccc(p, t), "icc_2_1": icc_2_1(np.stack([p, t], axis=1)) if len(p) else None,
            "bias_ml": ba["bias"], "sd_diff_ml": ba["sd"], "loa_low_ml": ba["loa_low"], "loa_high_ml": ba["loa_high"]}


def _pair(x, y):
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"agreement needs paired values, got {len(x)} and {len(y)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("agreement needs finite volumes")
    return x, y

