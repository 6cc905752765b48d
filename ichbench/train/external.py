"""Scoring a run's fold models on an external test set (`ichbench run --test-on`): every fold
model predicts every volume of the other dataset's segmentation store, and so does the fold
ensemble (the mean of the folds' sigmoid outputs, `train.predict.mean_probability`, then the
threshold, as `ichbench predict` applies a run). Rows are the folds' own (`train.predict.scored_row`).
A subtypes model (`finetune.task=subtypes`, its classes in model.pt) predicts label maps: each
fold's argmax, and for the ensemble the mean of the folds' softmax, then the argmax
(`train.predict.labels_of`, `ichbench predict`'s rule); the rows then carry per-class metrics
against the store's class map (whose classes `orchestrate.external.plan_tests` checked).

The store is read at the run's training size (`finetune.image_size`) from its own store size, as
a fold reads its own dataset: another pixel spacing, slice count or matrix size is the store's
business (ingest resampled it to its `size`); the surface metrics scale the volume's spacing by
store size / training size, as the folds' do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ichbench.models.unet import unet_for
from ichbench.train import checkpoint as ckpt, task
from ichbench.train.data import load_store, volume_rows, with_channels
from ichbench.train.device import device_mode, select_device
from ichbench.train.predict import labels_of, mean_probability, probabilities, scored_row, to_mask


def _net(path: Path, cfg, device: torch.device) -> tuple[torch.nn.Module, list[str] | None]:
    """The fold model and its classes (None: a binary model)."""
    payload = ckpt.load_model(path)
    classes = payload.get("classes")
    net = unet_for(cfg.model, in_channels=cfg.input.channels, out_channels=task.head_outputs(classes))
    net.load_state_dict(payload["state"])
    return net.to(device).eval(), classes


def _ensemble(probs: dict, classes) -> torch.Tensor:
    """The fold ensemble's probability (binary) or label map (subtypes) of one volume."""
    mean = mean_probability([p.numpy() for p in probs.values()])
    return torch.from_numpy(labels_of(mean) if classes else mean)


def score_test_set(models: dict[int, Path], store_path: Path, cfg, cavity=None, device=None,
                   on_volume=None) -> dict:
    """{"folds": {fold: rows}, "ensemble": rows} over every volume of the store at `store_path`;
    `models` maps each fold to its model.pt. `on_volume(done, total)` reports progress."""
    from ichbench.store import open_store

    device = select_device(device)
    fc = cfg.finetune
    store = open_store(store_path)
    extra = ()
    if cavity is not None:   # a +ICM method: its cavity masks, from the test store as from its own
        extra = ("brain",) if cfg.icm.source == "shipped" else ("icm",) if cavity.stored_in(store) else ()
    with device_mode(device):
        loaded = {f: _net(p, cfg, device) for f, p in sorted(models.items())}
        nets = {f: net for f, (net, _) in loaded.items()}
        classes = next(iter(loaded.values()))[1] if loaded else None   # one run: every fold has its classes
        arrays = load_store(store_path, fc.image_size,
                            names=("images", "labels", "volume", *task.mask_names(classes), *extra))
        with_channels(arrays, cfg.input.context, cfg.input.windows)
        scale = int(store.attrs["settings"]["size"]) / fc.image_size
        ids = [v["id"] for v in store.volumes]
        out = {"folds": {f: [] for f in models}, "ensemble": []}

        def score(pred: torch.Tensor, vid: str, rows: torch.Tensor) -> dict:
            mask = to_mask(pred, fc.threshold, arrays, rows, cavity)
            return scored_row(arrays, vid, mask, scale, cfg.eval.nsd_mm, classes)

        for n, vid in enumerate(ids, start=1):
            rows = volume_rows(arrays, [vid])
            probs = {f: probabilities(net, arrays, rows, device, classes, ensemble=True) for f, net in nets.items()}
            for f, p in probs.items():
                out["folds"][f].append(score(torch.from_numpy(labels_of(p.numpy())) if classes else p, vid, rows))
            out["ensemble"].append(score(_ensemble(probs, classes), vid, rows))
            if on_volume is not None:
                on_volume(n, len(ids))
    return out
