"""Statistics shown on the leaderboard: bootstrap CIs, Welch t-tests, paired Wilcoxon, Holm.

- 95% CI of a mean: percentile bootstrap over volumes (resampling volumes with replacement,
  `N_BOOT` resamples, fixed seed so a re-render gives the same numbers).
- The paper's test (Figure 4): Welch's unequal-variance t-test between two methods' per-volume
  values, two-sided. For published rows only mean, std and n exist, so it is computed from those.
- The paired test: Wilcoxon signed-rank on the per-volume differences over the volumes both
  methods scored, two-sided, zero differences dropped (`zero_method="wilcox"`); exact null
  distribution for up to 50 non-zero differences without ties, else the normal approximation
  with tie correction (never a random permutation test, so the page is reproducible).
  Both methods see the same volumes, so pairing removes the between-volume variance (a volume
  that is hard for one method is hard for the other) that an unpaired test counts as noise.
- Holm's step-down correction over the pairs of one matrix (one dataset, group and metric).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

N_BOOT = 2000
BOOT_SEED = 20230725


def bootstrap_ci(values, level: float = 0.95, n_boot: int = N_BOOT, seed: int = BOOT_SEED):
    """(low, high) percentile bootstrap interval of the mean, or None for no values."""
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return None
    if a.size == 1:
        return (float(a[0]), float(a[0]))
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _finite(p) -> float | None:
    p = float(p)
    return p if math.isfinite(p) else None


def welch(a, b) -> float | None:
    """Two-sided Welch t-test p-value between two samples (None when undefined)."""
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if a.size < 2 or b.size < 2:
        return None
    if a.var() == 0 and b.var() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return _finite(sps.ttest_ind(a, b, equal_var=False).pvalue)


def welch_from_stats(m1, s1, n1, m2, s2, n2) -> float | None:
    """The same test from summary statistics (sample std), as for the paper's published rows."""
    if None in (m1, s1, n1, m2, s2, n2) or n1 < 2 or n2 < 2:
        return None
    if s1 == 0 and s2 == 0:
        return 1.0 if m1 == m2 else 0.0
    return _finite(sps.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue)


def paired_wilcoxon(a: dict, b: dict) -> tuple[float | None, int]:
    """Wilcoxon signed-rank p-value over the volume ids both dicts hold; returns (p, n_shared).

    p is 1.0 when every shared volume scores the same (no evidence of a difference) and None
    when no volume is shared.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        return None, 0
    d = np.array([a[v] - b[v] for v in shared], float)
    d = d[d != 0]  # zero differences carry no sign ("wilcox" zero method), e.g. empty-on-empty volumes
    if d.size == 0:
        return 1.0, len(shared)
    # Chosen here rather than by scipy's "auto", which falls back to a random permutation test when
    # zeros or ties are present: exact null distribution for up to 50 distinct |differences|,
    # else the normal approximation with tie correction. Both are deterministic.
    ties = np.unique(np.abs(d)).size != d.size
    method = "exact" if d.size <= 50 and not ties else "asymptotic"
    res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method=method)
    return _finite(res.pvalue), len(shared)


def holm(pvalues) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order; None entries are left out of the
    family and stay None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        adj = min(1.0, (m - rank) * pvalues[i])
        running = max(running, adj)  # step-down: adjusted p-values never decrease with rank
        out[i] = running
    return out
