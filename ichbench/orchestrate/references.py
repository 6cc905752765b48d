"""Published reference numbers that are not the paper's and not comparable with a run's folds,
shown under a run's results for context, each clearly marked with where it was measured.

INSTANCE 2022: the challenge's winning method averaged a Dice of 0.6925 over the 70 cases of the
held-out test set (Li et al. 2023, "The state-of-the-art 3D anisotropic intracranial hemorrhage
segmentation on non-contrast head CT: The INSTANCE challenge", arXiv, abstract). That is another
test set, other training data (100 + 30 unlabelled cases) and a 3D method: a reference, never a
row a run is ranked against. BHSD has no published per-class baseline we could find, so none.
"""

from __future__ import annotations

# dataset -> (source label, n volumes, mean Dice over all volumes in percent)
REFERENCES = {
    "instance2022": ("challenge winner, challenge test set (not these folds)", 70, 69.25),
}


def reference_rows(dataset: str) -> list[tuple[str, str, list[str]]]:
    """(dataset, source, [n, Dice all, Dice ICH, Prec. all, Recall all]) rows for the results
    table; only what the source reports is filled in."""
    if dataset not in REFERENCES:
        return []
    source, n, dice = REFERENCES[dataset]
    return [(dataset, source, [str(n), f"{dice:.1f}", "—", "—", "—"])]
