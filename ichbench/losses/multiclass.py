"""The fine-tuning loss of the subtypes task (`finetune.task=subtypes`): eqs. 4-5 generalised to
C classes on a softmax over background + classes.

Per slice, the loss is the mean of two eq. 4 soft Dice terms (the same ε):
  - the union: the hemorrhage probability 1 - p_background against the binary mask (any class),
    the paper's own term on the paper's own target;
  - the classes: the mean over k = 1..C of eq. 4 between p_k and the one-hot target of class k
    (background is not a Dice term, as the binary loss has none; a class absent from the slice
    still teaches the network to predict none of it).
Eq. 5's α weighs slices whose target holds no class at all, and the sum is divided by the batch
size, exactly as `dice_loss` does. With C = 1 both terms are `dice_loss` of the logit difference
l1 - l0 (softmax over two outputs is the sigmoid of their difference): the binary recipe is the
one-class case. Why the union term: the class mean alone starts from C small probabilities whose
gradients are each 1/C of one, and at the smoke profile's budget it did not learn at all on the
phantom (union Dice 0.00 after 300 steps, 0.82 with the union term, 0.84 for the binary loss;
docs/methods.md, "Subtype segmentation").
"""

from __future__ import annotations

import torch

from ichbench.losses.dice import DICE_LOSS_EPS, soft_dice_per_sample


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = DICE_LOSS_EPS,
                         empty_weight: float = 1.0) -> torch.Tensor:
    """logits (B, C + 1, H, W), channel 0 background; target (B, H, W) or (B, 1, H, W) class ids
    0..C. Returns the per-slice mean of the union's and the classes' soft Dice losses, weighted
    by eq. 5, summed over the batch and divided by B."""
    if target.ndim == logits.ndim:
        target = target[:, 0]
    if logits.ndim != 4 or logits.shape[1] < 2 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"multiclass_dice_loss: logits {tuple(logits.shape)} (B, C+1, H, W) and target "
                         f"{tuple(target.shape)} (B, H, W) do not fit")
    probs = torch.softmax(logits.float(), dim=1)
    ids = target.long()
    n_classes = logits.shape[1] - 1
    per_class = torch.stack([soft_dice_per_sample(probs[:, k], ids == k, eps) for k in range(1, n_classes + 1)], 1)
    union = soft_dice_per_sample(1.0 - probs[:, 0], ids > 0, eps)
    per_slice = (union + per_class.mean(1)) / 2
    empty = ids.flatten(1).amax(1) == 0
    weights = torch.where(empty, torch.full_like(per_slice, float(empty_weight)), torch.ones_like(per_slice))
    return (weights * per_slice).sum() / per_slice.shape[0]
