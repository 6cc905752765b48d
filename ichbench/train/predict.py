"""Inference and per-volume scoring of a trained U-Net on a store held in memory."""

from __future__ import annotations

import numpy as np
import torch

from ichbench.evaluate import per_volume_row
from ichbench.evaluate.summary import NSD_MM
from ichbench.evaluate.classes import class_row_fields
from ichbench.evaluate.digest import volume_digest
from ichbench.train import task
from ichbench.train.data import SliceArrays, volume_rows
from ichbench.train.device import autocast_for, images_of

EVAL_BATCH = 64


@torch.no_grad()
def probabilities(model: torch.nn.Module, arrays: SliceArrays, rows: torch.Tensor,
                  device: torch.device, classes=None, ensemble: bool = False) -> torch.Tensor:
    """The sigmoid output (len(rows), S, S) float32 on the CPU for the slices `rows`; for the
    subtypes task (`classes`) the argmax class ids, uint8 (`train.task.to_prediction`), or with
    `ensemble` the softmax (len(rows), C + 1, S, S) that a fold ensemble averages
    (`train.task.to_probability`, then `mean_probability` and `labels_of`)."""
    model.eval()
    head = task.to_probability if ensemble else task.to_prediction
    out = []
    for idx in rows.split(EVAL_BATCH):
        with autocast_for(device):
            logits = model(images_of(arrays, idx, device))
        out.append(head(logits, classes).cpu())
    if out:
        return torch.cat(out)
    per_class = (len(classes) + 1,) if classes and ensemble else ()
    dtype = torch.uint8 if classes and not ensemble else torch.float32
    return torch.zeros((0, *per_class, arrays.image_size, arrays.image_size), dtype=dtype)


def to_mask(probability: torch.Tensor, threshold: float, arrays: SliceArrays, rows: torch.Tensor,
            cavity=None) -> np.ndarray:
    """probability > threshold, and for +ICM methods times the intracranial cavity mask `cavity`
    gives (an `ichbench.icm.CavitySource`). A label map (uint8 class ids, subtypes) is kept as
    it is, its voxels outside the cavity set to background."""
    pred = probability if probability.dtype == torch.uint8 else probability > threshold
    if cavity is not None and len(rows):
        pred = pred * cavity.masks(arrays, rows) if pred.dtype == torch.uint8 else pred & cavity.masks(arrays, rows)
    return pred.numpy()


def predict(model: torch.nn.Module, arrays: SliceArrays, rows: torch.Tensor, device: torch.device,
            threshold: float, cavity=None, classes=None) -> np.ndarray:
    """Binary masks (len(rows), S, S) for the slices `rows` (`probabilities`, then `to_mask`);
    label maps for the subtypes task."""
    return to_mask(probabilities(model, arrays, rows, device, classes), threshold, arrays, rows, cavity)


def scored_row(arrays: SliceArrays, vid: str, pred: np.ndarray, spacing_scale: float = 1.0,
               nsd_mm: float = NSD_MM, classes=None) -> dict:
    """The per-volume row of `pred` (bool, the volume's slices on the arrays' grid) against the
    volume's mask in `arrays`: Dice, precision, recall, TP/FP/FN, mL and the surface metrics (HD,
    HD95, NSD at `nsd_mm`, RVD; `evaluate.summary.SURFACE_KEYS`) with the volume's spacing
    scaled to this grid, and `pred_sha256`, the digest of the predicted mask
    (`ichbench.evaluate.digest`). Both trainers score with it (`train.own_loop` too).

    For the subtypes task `pred` is a label map (ids 1..len(`classes`)): the row's metrics and
    `pred_sha256` are those of its union (any class), the paper's binary mask, and it adds
    `classes` (each class's `case_metrics` against the stored class map, `evaluate.classes`)
    and `pred_labels_sha256`, the digest of the label map itself."""
    rows = volume_rows(arrays, [vid])
    truth = arrays.masks[rows.to(arrays.masks.device)].cpu().numpy().astype(bool)
    vol = next(v for v in arrays.volumes if v["id"] == vid)
    z, y, x = vol["spacing"]
    spacing = (z, y * spacing_scale, x * spacing_scale)
    union = pred > 0 if classes else pred
    row = per_volume_row(vid, union, truth, spacing, vol.get("subtypes"), has_ich=vol.get("has_ich"), nsd_mm=nsd_mm)
    row["pred_sha256"] = volume_digest(union)
    if classes:
        truth_map = arrays.classes[rows.to(arrays.classes.device)].cpu().numpy()
        row.update(class_row_fields(pred, truth_map, classes, spacing, nsd_mm))
    return row


def evaluate_volumes(model, arrays: SliceArrays, volume_ids, device, threshold: float, cavity=None,
                     spacing_scale: float = 1.0, nsd_mm: float = NSD_MM, classes=None) -> list[dict]:
    """Per-volume rows (`scored_row`) of the model's predictions for the named volumes."""
    return [scored_row(arrays, vid, predict(model, arrays, volume_rows(arrays, [vid]), device, threshold, cavity,
                                            classes), spacing_scale, nsd_mm, classes) for vid in volume_ids]


def mean_probability(per_fold: list[np.ndarray]) -> np.ndarray:
    """The fold ensemble's probability: the mean of the folds' sigmoid outputs (the nnU-Net rule:
    average, then threshold), or of their softmax for the subtypes task (then `labels_of`); also
    what `ichbench run --test-on` scores as the ensemble."""
    return np.mean(np.stack(per_fold), axis=0)


def labels_of(per_class: np.ndarray) -> np.ndarray:
    """The label map (uint8 class ids, 0 background) of per-class probabilities (N, C + 1, H, W):
    their argmax. A subtypes ensemble is `labels_of(mean_probability(softmax of each fold))`, in
    `ichbench predict` and `ichbench run --test-on` alike."""
    return np.asarray(per_class).argmax(1).astype(np.uint8)
