"""Inference and per-volume scoring of a trained U-Net on a store held in memory."""

from __future__ import annotations

import numpy as np
import torch

from ichbench.evaluate import per_volume_row
from ichbench.evaluate.summary import NSD_MM
from ichbench.evaluate.digest import volume_digest
from ichbench.train.data import SliceArrays, volume_rows
from ichbench.train.device import autocast_for, images_of

EVAL_BATCH = 64


@torch.no_grad()
def probabilities(model: torch.nn.Module, arrays: SliceArrays, rows: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
    """The sigmoid output (len(rows), S, S) float32 on the CPU for the slices `rows`."""
    model.eval()
    out = []
    for idx in rows.split(EVAL_BATCH):
        with autocast_for(device):
            logits = model(images_of(arrays, idx, device))
        out.append(torch.sigmoid(logits.float())[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros((0, arrays.image_size, arrays.image_size))


def to_mask(probability: torch.Tensor, threshold: float, arrays: SliceArrays, rows: torch.Tensor,
            cavity=None) -> np.ndarray:
    """probability > threshold, and for +ICM methods times the intracranial cavity mask `cavity`
    gives (an `ichbench.icm.CavitySource`)."""
    pred = probability > threshold
    if cavity is not None and len(rows):
        pred &= cavity.masks(arrays, rows)
    return pred.numpy()


def predict(model: torch.nn.Module, arrays: SliceArrays, rows: torch.Tensor, device: torch.device,
            threshold: float, cavity=None) -> np.ndarray:
    """Binary masks (len(rows), S, S) for the slices `rows` (`probabilities`, then `to_mask`)."""
    return to_mask(probabilities(model, arrays, rows, device), threshold, arrays, rows, cavity)


def scored_row(arrays: SliceArrays, vid: str, pred: np.ndarray, spacing_scale: float = 1.0,
               nsd_mm: float = NSD_MM) -> dict:
    """The per-volume row of `pred` (bool, the volume's slices on the arrays' grid) against the
    volume's mask in `arrays`: Dice, precision, recall, TP/FP/FN, mL and the surface metrics (HD,
    HD95, NSD at `nsd_mm`, RVD; `evaluate.summary.SURFACE_KEYS`) with the volume's spacing
    scaled to this grid, and `pred_sha256`, the digest of the predicted mask
    (`ichbench.evaluate.digest`). Both trainers score with it (`train.own_loop` too)."""
    rows = volume_rows(arrays, [vid])
    truth = arrays.masks[rows.to(arrays.masks.device)].cpu().numpy().astype(bool)
    vol = next(v for v in arrays.volumes if v["id"] == vid)
    z, y, x = vol["spacing"]
    row = per_volume_row(vid, pred, truth, (z, y * spacing_scale, x * spacing_scale),
                         vol.get("subtypes"), has_ich=vol.get("has_ich"), nsd_mm=nsd_mm)
    return {**row, "pred_sha256": volume_digest(pred)}


def evaluate_volumes(model, arrays: SliceArrays, volume_ids, device, threshold: float, cavity=None,
                     spacing_scale: float = 1.0, nsd_mm: float = NSD_MM) -> list[dict]:
    """Per-volume rows (`scored_row`) of the model's predictions for the named volumes."""
    return [scored_row(arrays, vid, predict(model, arrays, volume_rows(arrays, [vid]), device, threshold, cavity),
                       spacing_scale, nsd_mm) for vid in volume_ids]


def mean_probability(per_fold: list[np.ndarray]) -> np.ndarray:
    """The fold ensemble's probability: the mean of the folds' sigmoid outputs (the nnU-Net rule:
    average, then threshold); also what `ichbench run --test-on` scores as the ensemble."""
    return np.mean(np.stack(per_fold), axis=0)
