"""A run's segmentation task (`finetune.task`): what the U-Net's head outputs, the loss it is
fine-tuned with and how its output becomes a prediction.

- "binary" (the paper): one logit, eqs. 4-5's Dice loss on its sigmoid, prediction = sigmoid >
  `finetune.threshold`.
- "subtypes": the store's class map (`classes`, ids 1..C named by `store.class_names`): C + 1
  logits, a softmax over background + classes (a voxel holds one class id, so the classes are
  exclusive and a softmax gives them one distribution; the argmax is the label map directly), the
  multi-class Dice loss (`losses.multiclass`), prediction = argmax (the threshold is unused).
  The binary hemorrhage is the union of the classes (id > 0), scored as the paper's mask.

Only the head depends on the task: every other part of the U-Net has the same shapes, so a
pretraining transfers into either (a transferred 1-output head is left out for subtypes and the
head keeps its fresh initialisation).
"""

from __future__ import annotations

import math

import torch

from ichbench.errors import IchbenchError
from ichbench.losses import dice_loss
from ichbench.losses.multiclass import multiclass_dice_loss

BINARY, SUBTYPES = "binary", "subtypes"


def task_of(cfg) -> str:
    return getattr(cfg.finetune, "task", BINARY) or BINARY


def class_names(cfg, store) -> list[str] | None:
    """The classes the run segments: None for the binary task, else the store's class names;
    a subtypes run on a store without a class map is refused in one line."""
    if task_of(cfg) == BINARY:
        return None
    names = getattr(store, "class_names", None)
    if not names:
        raise IchbenchError(f"finetune.task=subtypes: {store.path} has no class map (a binary store); "
                            "subtypes need a dataset with per-voxel classes (bhsd, phantom)")
    return list(names)


def head_outputs(classes) -> int:
    return 1 if not classes else len(classes) + 1


def mask_names(classes) -> tuple[str, ...]:
    """The stored arrays the fine-tuning targets come from (beside the images)."""
    return ("masks",) if not classes else ("masks", "classes")


def transferable(unet, parts: list[str], classes) -> list[str]:
    """The parts a pretraining gives a U-Net of this task: for subtypes all but the head (a
    pretext's head has another shape), named one by one."""
    if not classes:
        return list(parts)
    from ichbench.models.unet import expand_parts
    return [p for p in expand_parts(unet, parts) if p != "head"]


def init_head_prior(unet, prior: float, classes) -> None:
    """Set the head's bias so that the foreground (any class) starts at probability `prior`:
    logit(prior) for the binary head; for subtypes background 0 and every class
    log(prior / (C (1 - prior))), the same union probability spread evenly over the classes."""
    if not classes:
        torch.nn.init.constant_(unet.head.bias, math.log(prior / (1 - prior)))
        return
    with torch.no_grad():
        unet.head.bias.fill_(math.log(prior / (len(classes) * (1 - prior))))
        unet.head.bias[0] = 0.0


def targets(arrays, idx, gather, device, classes) -> torch.Tensor:
    """(B, 1, H, W) float targets of the slices `idx`: the mask, or the class ids (augmented by
    nearest sampling, which keeps ids exact)."""
    source = arrays.masks if not classes else arrays.classes
    return gather(source, idx, device)[:, None].float()


def loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, classes) -> torch.Tensor:
    if not classes:
        return dice_loss(logits, target, empty_weight=alpha)
    return multiclass_dice_loss(logits, target, empty_weight=alpha)


def to_prediction(logits: torch.Tensor, classes) -> torch.Tensor:
    """(B, S, S): the sigmoid probability (binary) or the argmax class id (uint8, subtypes)."""
    if not classes:
        return torch.sigmoid(logits.float())[:, 0]
    return logits.float().argmax(1).to(torch.uint8)


def to_probability(logits: torch.Tensor, classes) -> torch.Tensor:
    """What a fold ensemble averages: the sigmoid (B, S, S) (binary) or the softmax over
    background + classes (B, C + 1, S, S) (subtypes); `train.predict.labels_of` turns the
    latter's mean into a label map."""
    if not classes:
        return torch.sigmoid(logits.float())[:, 0]
    return torch.softmax(logits.float(), 1)
