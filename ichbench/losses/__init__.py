"""Losses of the paper (Spahr et al. 2023) and of its pretext tasks: a building block that the
methods (their pretext losses) and the training engine (the fine-tuning loss) both use, kept apart
from either as MONAI keeps its losses apart from its engines.

- `dice_loss` (`dice`): the fine-tuning loss, eqs. 4-5.
- `weighted_bce`, `multilabel_dice_loss`, `selection_pos_weights`, `class_pos_weights` (`multilabel`):
  §2.6.2.2's pretexts.
- `info_nce` (`contrastive`): eqs. 6-7.
"""

from ichbench.losses.contrastive import info_nce
from ichbench.losses.dice import dice_loss, soft_dice_per_sample
from ichbench.losses.multilabel import (class_pos_weights, multilabel_dice_loss, selection_pos_weights,
                                       weighted_bce)

__all__ = ["class_pos_weights", "dice_loss", "info_nce", "multilabel_dice_loss", "selection_pos_weights",
           "soft_dice_per_sample", "weighted_bce"]
