"""Soft Dice on sigmoid outputs, per slice (eq. 4), with the weight α on slices whose target is
empty (eq. 5, the *Mixed* recipe): the fine-tuning loss of every method."""

from __future__ import annotations

import torch

# ε of eq. 4. The paper writes none (Milletari et al. neither); ichbench uses eqs. 1-3's ε = 1
# (`ichbench.evaluate.metrics.METRIC_EPS`, a separate statement of the paper, so a separate name)
# so that an empty slice's loss is defined. Every Dice loss of ichbench (fine-tuning, the ICM,
# multi-label DL) defaults to it and no caller passes its own (tests/test_fidelity.py checks both).
DICE_LOSS_EPS = 1.0


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: logits shape {tuple(a.shape)} != target shape {tuple(b.shape)}")


def soft_dice_per_sample(probs: torch.Tensor, target: torch.Tensor, eps: float = DICE_LOSS_EPS,
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


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = DICE_LOSS_EPS,
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
