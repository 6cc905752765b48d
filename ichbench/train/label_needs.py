"""Refuse a run whose stores cannot give the method the labels it needs — before any training.

The paper's Table 2: every method fine-tunes on segmentation masks; the self-supervised pretexts
need only images; binary classification needs slice-level ICH labels; multi-label classification
needs those plus the five subtypes on every pretraining slice.
"""

from __future__ import annotations

import numpy as np

from ichbench import SUBTYPES
from ichbench import UNKNOWN_LABEL as UNKNOWN
from ichbench.errors import IchbenchError



def _labels(store) -> tuple[np.ndarray, str]:
    return np.asarray(store.load(["labels"])["labels"]), str(store.path)


def check_pretraining_store(method, store) -> None:
    """Raise IchbenchError with the reason when `store` (a SliceStore) cannot train the pretext."""
    needs = method.label_needs
    if not method.has_pretext or not (needs.binary or needs.multilabel):
        return
    labels, where = _labels(store)
    known = labels[:, 1] != UNKNOWN
    refuse = f"{method.name} cannot pretrain on {where}:"
    # what to do instead; a segmentation store (it has masks) also says where its labels come from
    fix = "; pretrain on a store that has them (--pretrain-dataset rsna)"
    seg = "masks" in store.arrays
    if not known.any():
        raise IchbenchError(f"{refuse} no slice has a known ICH label (all `any` labels are unknown, 255); "
                            f"it needs slice-level classification labels{fix}")
    anyich = labels[known, 1]
    if not (anyich == 1).any() or not (anyich == 0).any():
        raise IchbenchError(f"{refuse} its labeled slices are all {'ICH' if (anyich == 1).all() else 'non-ICH'}; "
                            f"a classification pretext needs both classes{fix}")
    if needs.multilabel:
        sub = labels[known][:, 2:]
        unknown = (sub == UNKNOWN).any(axis=1)
        if unknown.any():
            why = (" (a segmentation store knows subtypes only where its reader gave Volume.subtypes or "
                   "Volume.labels; masks alone say ICH or not)") if seg else ""
            raise IchbenchError(f"{refuse} {int(unknown.sum())} of {int(known.sum())} labeled slices have unknown "
                                f"subtypes (255){why}; multi-label pretraining needs all five subtype labels{fix}")
        present = [name for j, name in enumerate(SUBTYPES) if (sub[:, j] == 1).any()]
        if not present:
            raise IchbenchError(f"{refuse} no slice is labeled with any ICH subtype "
                                f"({', '.join(SUBTYPES)}); multi-label pretraining needs subtype positives{fix}")


def check_finetuning_store(method, store) -> None:
    """Segmentation masks for every method. (The +ICM methods' cavity mask depends on `icm.source`:
    `ichbench.icm.check_shipped` checks the shipped one; the others are computed.)"""
    if "masks" not in store.arrays:
        raise IchbenchError(f"{method.name} cannot fine-tune on {store.path}: the store has no hemorrhage "
                            "masks (is it a pretraining store?)")
