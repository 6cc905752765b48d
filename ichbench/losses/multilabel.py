"""The multi-label classification pretexts' losses (§2.6.2.2). Label tensors may carry
`UNKNOWN_LABEL` (255, "not known for this slice", the store's convention); these losses ignore
those entries."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ichbench import UNKNOWN_LABEL
from ichbench.losses.dice import DICE_LOSS_EPS, _check_same_shape, soft_dice_per_sample


def _known(target: torch.Tensor) -> torch.Tensor:
    return target != UNKNOWN_LABEL


def class_pos_weights(labels: torch.Tensor, *, max_weight: float = 100.0) -> torch.Tensor:
    """Positive-class weights for `weighted_bce`: n_negative / n_positive per class.

    The paper says only "weighted binary cross-entropy" (§2.6.2.2); inverse frequency is the usual
    choice (it is what `BCEWithLogitsLoss(pos_weight=...)` documents) and it balances the rare
    subtypes (EDH is ~0.3 % of RSNA slices) against the frequent no-ICH class. Computed once on the
    pretraining labels (N, C); unknown entries (255) are not counted; a class with no positives
    gets `max_weight`, and every weight is clipped to it so one rare class cannot dominate.
    """
    if labels.ndim != 2:
        raise ValueError(f"class_pos_weights: expected labels (N, C), got shape {tuple(labels.shape)}")
    known = _known(labels)
    pos = ((labels == 1) & known).sum(0).double()
    neg = ((labels == 0) & known).sum(0).double()
    w = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return w.clamp(max=max_weight).float()


def selection_pos_weights(labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' class weights (§2.6.2.2's "weighted binary cross-entropy"): per class,
    (N − n_pos) / n_pos over the labels (N, C) of the pretraining selection, computed once,
    unclipped, as `MultiClassification_UNet2D_scripts.py` passes them to `BCEWithLogitsLoss`.

    N counts the class's known entries (unknown ones, 255, are not counted; with every label known
    it is the number of slices). A class with no positive gets 1: `pos_weight` multiplies only the
    positive terms, which that class never has in the slices the weights come from, so any value
    trains the same and 1 is the neutral one (the authors' formula would divide by zero).
    Returns (weights float64, n_pos, n_known), each (C,).
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 2:
        raise ValueError(f"selection_pos_weights: expected labels (N, C), got shape {tuple(labels.shape)}")
    known = _known(labels)
    n_pos = ((labels == 1) & known).sum(0).to(torch.float64)
    n_known = known.sum(0).to(torch.float64)
    weights = torch.where(n_pos > 0, (n_known - n_pos) / n_pos.clamp(min=1), torch.ones_like(n_pos))
    return weights, n_pos, n_known


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Class-wise binary cross-entropy with positive weights (multilabel_ce pretext, §2.6.2.2).

    logits, target: (B, C). Each of the C outputs (no-ICH, ICH, five subtypes) is its own binary
    task: BCE(x, y) = -[w_c·y·log σ(x) + (1-y)·log(1-σ(x))], averaged over the known entries.
    `pos_weight` (C,): `selection_pos_weights` of the pretraining selection (the paper profile).
    """
    _check_same_shape(logits, target, "weighted_bce")
    known = _known(target)
    y = torch.where(known, target, torch.zeros_like(target)).float()
    pw = None if pos_weight is None else pos_weight.to(device=logits.device, dtype=torch.float32)
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw, reduction="none")
    k = known.float()
    return (per_entry * k).sum() / k.sum().clamp(min=1.0)


def multilabel_dice_loss(logits: torch.Tensor, target: torch.Tensor, *,
                         eps: float = DICE_LOSS_EPS) -> torch.Tensor:
    """Dice loss on the 7 sigmoid outputs (multilabel_dl pretext, §2.6.2.2), averaged over the batch.

    The paper trains the classifier "to generate an output that matches the 7-neurons ground
    truth": eq. 4 between each slice's 7 probabilities and its 7-label vector. Per slice rather
    than one Dice over the whole batch matrix, so every slice weighs the same whatever its number
    of positives; every slice has at least one positive (no-ICH or ICH), so no slice is empty.
    Unknown entries (255) are dropped from the sums.
    """
    _check_same_shape(logits, target, "multilabel_dice_loss")
    known = _known(target)
    y = torch.where(known, target, torch.zeros_like(target))
    return soft_dice_per_sample(torch.sigmoid(logits.float()), y, eps, valid=known).mean()
