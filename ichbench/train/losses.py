"""Losses of the paper (Spahr et al. 2023) and of its pretext tasks.

- `dice_loss`: soft Dice on sigmoid outputs, per slice (eq. 4), with the weight α on slices whose
  target is empty (eq. 5, the *Mixed* recipe).
- `weighted_bce`, `multilabel_dice_loss`: the multi-label classification pretexts (§2.6.2.2).
- `info_nce`: the global contrastive loss (eq. 6, SimCLR's NT-Xent); the local contrastive loss
  (eq. 7) is the same formula applied to region embeddings instead of image embeddings.

Label tensors may carry 255 for "not known for this slice" (the store's convention); the
classification losses ignore those entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ichbench import UNKNOWN_LABEL



def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: logits shape {tuple(a.shape)} != target shape {tuple(b.shape)}")


def soft_dice_per_sample(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 per sample: 1 - (2 Σ p·t + ε) / (Σ p² + Σ t² + ε), summing over all but dim 0.

    The squared norms in the denominator are the paper's |p|² + |t|² (Milletari et al. 2016).
    ε keeps an empty target defined: its loss is 1 - ε / (Σ p² + ε), which is 0 only when the
    prediction is empty too, so empty slices still teach the network to predict nothing.
    `valid` (same shape, 0/1) drops entries from every sum.
    """
    p = probs.float().flatten(1)
    t = target.float().flatten(1)
    if valid is not None:
        v = valid.float().flatten(1)
        p, t = p * v, t * v
    inter = (p * t).sum(1)
    denom = (p * p).sum(1) + (t * t).sum(1)
    return 1.0 - (2.0 * inter + eps) / (denom + eps)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0,
              empty_weight: float = 1.0) -> torch.Tensor:
    """Segmentation loss of the paper: eq. 4 per slice, weighted by eq. 5, averaged over the batch.

    logits, target: (B, 1, H, W) or (B, H, W); target binary. Eq. 5 is
    Σ_{t=0} α·L(p,t) + Σ_{t≠0} L(p,t): each slice with an empty target contributes α times its
    Dice loss, each slice with hemorrhage contributes its Dice loss. We divide that sum by the
    batch size B (not by the sum of weights): a constant factor, so the relative weight of empty
    and ICH slices is exactly the paper's, and the loss scale does not depend on how many empty
    slices a batch happened to draw. `empty_weight=1` is plain eq. 4 (the ICH-only recipe);
    the Mixed recipe uses α = 0.2.
    """
    _check_same_shape(logits, target, "dice_loss")
    if logits.ndim < 2:
        raise ValueError(f"dice_loss: expected a batch (B, ...) of slices, got shape {tuple(logits.shape)}")
    per_slice = soft_dice_per_sample(torch.sigmoid(logits.float()), target, eps)
    empty = target.flatten(1).sum(1) == 0
    weights = torch.where(empty, torch.full_like(per_slice, float(empty_weight)), torch.ones_like(per_slice))
    return (weights * per_slice).sum() / per_slice.shape[0]


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


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Class-wise binary cross-entropy with positive weights (multilabel_ce pretext, §2.6.2.2).

    logits, target: (B, C). Each of the C outputs (no-ICH, ICH, five subtypes) is its own binary
    task: BCE(x, y) = -[w_c·y·log σ(x) + (1-y)·log(1-σ(x))], averaged over the known entries.
    `pos_weight` (C,) is usually `class_pos_weights` of the pretraining labels.
    """
    _check_same_shape(logits, target, "weighted_bce")
    known = _known(target)
    y = torch.where(known, target, torch.zeros_like(target)).float()
    pw = None if pos_weight is None else pos_weight.to(device=logits.device, dtype=torch.float32)
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw, reduction="none")
    k = known.float()
    return (per_entry * k).sum() / k.sum().clamp(min=1.0)


def multilabel_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
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


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """InfoNCE / NT-Xent (eq. 6; eq. 7 with region embeddings): z1[i] and z2[i] are two views.

    The 2N embeddings are L2-normalised so dot products are the cosine similarity of eq. 6. Each
    of the 2N anchors has its other view as positive and the remaining 2N-2 embeddings as
    negatives; the denominator runs over all k ≠ i (positive included), as in eq. 6 and SimCLR.
    The paper writes a sum over anchors; we take the mean over all 2N anchors (SimCLR's
    normalisation), which only rescales the loss and keeps it independent of the batch size.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"info_nce: expected two (N, D) tensors of equal shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 1:
        raise ValueError("info_nce: need at least one pair")
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    sim = z @ z.t() / tau
    # k = i is excluded from the denominator of eq. 6.
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)
