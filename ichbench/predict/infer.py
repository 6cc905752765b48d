"""Applying an ensemble to a scan, on the scan's own grid.

The slices go through what training saw — resampled to the store's size, then to the training
size, windowed — each fold's sigmoid output is averaged (the nnU-Net rule: mean probability, then
threshold), the mean probability is resampled back to the scan's in-plane size and thresholded
there, and +ICM methods keep only voxels inside the cavity mask their config names. A subtypes model
(`finetune.task=subtypes`) averages its folds' softmax over background + classes the same way and
takes the argmax on the scan's grid: a label map, whose union (any class) is the mask.

A 2.5D model (its config's `input`) reads each slice with its neighbours in the scan, replicated
at the scan's ends as in training, in its windows; a scan with fewer slices than the model reads
at a time is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ichbench.errors import IchbenchError
from ichbench.models.unet import UNet
from ichbench.predict.models import Ensemble
from ichbench.predict.scan import Scan
from ichbench.preprocess.resize import resize_slices, resize_stack
from ichbench.preprocess.window import window
from ichbench.train.inputs import PAPER_WINDOW, Channels, neighbour_index
from ichbench.train.predict import labels_of, mean_probability
from ichbench.train.task import to_probability

BATCH = 32


@dataclass
class Prediction:
    probability: np.ndarray          # (S, H, W) float32 mean sigmoid over folds, on the scan's grid
    mask: np.ndarray                 # (S, H, W) bool hemorrhage (after the cavity mask, if any)
    cavity: np.ndarray | None        # (S, H, W) bool intracranial cavity for +ICM methods
    network_probability: dict        # fold -> (S, s, s) sigmoid at the training size (for inspection)
    labels: np.ndarray | None = None   # (S, H, W) uint8 class ids of a subtypes model (0 background)


def _to_grid(x: np.ndarray, shape_hw) -> np.ndarray:
    """(S, s, s) float -> (S, H, W) bilinear (the network's grid back to the scan's); (S, K, s, s)
    class probabilities -> (S, K, H, W), each class alike."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = t[:, None] if t.ndim == 3 else t
    if tuple(t.shape[-2:]) != tuple(shape_hw):
        t = F.interpolate(t, size=tuple(shape_hw), mode="bilinear", align_corners=False)
    return (t[:, 0] if x.ndim == 3 else t).numpy()


def network_input(ens: Ensemble, scan: Scan) -> np.ndarray:
    """(S, s, s) int16 HU at the training size, by the same two resamplings as ingest + load."""
    stored = resize_slices(scan.hu, ens.store_size)
    if ens.store_size == ens.image_size:
        return stored
    return resize_stack(stored, ens.image_size, is_mask=False)


def input_of(config: dict) -> tuple[int, list]:
    """(context, windows) of a model's recorded config; the paper's input when it has none."""
    inp = config.get("input") or {}
    return int(inp.get("context", 0)), [tuple(w) for w in inp.get("windows", [PAPER_WINDOW])]


def check_scan_fits(ens: Ensemble, scan: Scan) -> None:
    """A 2.5D model reads 2·context + 1 slices at a time: a shorter scan cannot give them."""
    context, _ = input_of(ens.config)
    if len(scan.hu) < 2 * context + 1:
        raise IchbenchError(f"{scan.path}: {len(scan.hu)} slice(s), but {ens.method}'s models read "
                            f"{2 * context + 1} adjacent slices at a time (input.context={context}): give a "
                            f"series of at least {2 * context + 1} slices")


def _batches(payload: dict, hu: np.ndarray, device: torch.device):
    """The network input, BATCH slices at a time: (B, C, s, s) on `device`."""
    context, windows = input_of(payload["config"])
    hu_t = torch.from_numpy(hu)
    channels = Channels.of(windows, neighbour_index(np.zeros(len(hu), np.int64), context), context)
    plain = context == 0 and windows == [PAPER_WINDOW]
    for start in range(0, len(hu), BATCH):
        if plain:
            yield window(hu_t[start:start + BATCH].float())[:, None].to(device)
        else:
            idx = torch.arange(start, min(start + BATCH, len(hu)))
            yield channels.window(hu_t[channels.rows(idx)].to(device))


@torch.no_grad()
def _fold_probability(payload: dict, hu: np.ndarray, device: torch.device) -> np.ndarray:
    mc = payload["config"]["model"]
    context, windows = input_of(payload["config"])
    classes = payload.get("classes")   # a subtypes model: softmax over background + classes
    net = UNet(in_channels=(2 * context + 1) * len(windows), base=mc["base_channels"], depth=mc["depth"],
               encoder_growth=mc.get("encoder_growth", "first"), out_channels=len(classes) + 1 if classes else 1)
    net.load_state_dict(payload["state"])
    net.to(device).eval()
    out = []
    for x in _batches(payload, hu, device):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x)
        out.append(to_probability(logits, classes).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, *hu.shape[1:]), np.float32)


def _cavity(ens: Ensemble, hu_net: np.ndarray, device) -> np.ndarray | None:
    icm = ens.icm
    if not icm:
        return None
    if icm["source"] == "unet":
        from ichbench.icm.masker import IcmUNets
        return IcmUNets(icm["unets"], device)(hu_net, icm["threshold"])
    if icm["source"] == "classical":
        from ichbench.preprocess.brain import ClassicalBrainMasker
        return ClassicalBrainMasker()(hu_net.astype(np.float32))
    raise IchbenchError(f"{ens.method} was evaluated with its dataset's shipped cavity masks (icm.source="
                        f"{icm['source']}), which a new scan does not have: apply a run made with "
                        "icm.source=unet or classical")


def predict_scan(ens: Ensemble, scan: Scan, device="cpu") -> Prediction:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IchbenchError("--device cuda, but torch sees no CUDA device")
    check_scan_fits(ens, scan)
    hu_net = network_input(ens, scan)
    per_fold = {f.fold: _fold_probability(f.payload, hu_net, device) for f in ens.folds}
    mean = mean_probability(list(per_fold.values()))
    shape_hw = scan.hu.shape[1:]
    labels = None
    if ens.classes:   # subtypes: the argmax of the mean softmax; the hemorrhage is any class
        per_class = _to_grid(mean, shape_hw)
        labels = labels_of(per_class)
        probability, mask = 1.0 - per_class[:, 0], labels > 0
    else:
        probability = _to_grid(mean, shape_hw)
        mask = probability > ens.threshold
    cavity = _cavity(ens, hu_net, device)
    if cavity is not None:
        cavity = _to_grid(cavity.astype(np.float32), shape_hw) >= 0.5
        mask &= cavity
        if labels is not None:
            labels[~cavity] = 0
    return Prediction(probability=probability, mask=mask, cavity=cavity, network_probability=per_fold, labels=labels)
