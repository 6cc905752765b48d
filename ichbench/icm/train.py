"""Training the two ICM U-Nets (§2.3.3) on a store's hand-labelled cavity masks.

Only volumes whose `brain` mask was shipped with the data (the volumes table says
`"brain": "shipped"`) are used: learning the classical masker's output back would be pointless.
A seeded share of them (`icm.holdout`) is held out, and the held-out volumes measure the ICM Dice
per window and for the union (eq. 1 with ε = 1, per volume, averaged). Each U-Net trains with the
engine's loop (Adam, exponential decay, L2, per-epoch resumable state) on the Dice loss (eq. 4),
with the §2.3.2 augmentation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.evaluate.metrics import volume_metrics
from ichbench.icm.masker import ICM_NAME, WINDOWS, IcmUNets, icm_unet, windowed
from ichbench.train import checkpoint as ckpt
from ichbench.transforms import augment_batch
from ichbench.train.data import EpochSampler, load_store, volume_rows
from ichbench.train.device import device_mode, gather, numerics, prepare_model, select_device
from ichbench.train.loop import fit, generators
from ichbench.losses import dice_loss


def shipped_volumes(store) -> list[str]:
    """Ids of the volumes whose cavity mask came with the data."""
    if "brain" not in store.arrays:
        raise IchbenchError(f"{store.path}: the store has no `brain` array, nothing to learn the ICM from")
    ids = [v["id"] for v in store.volumes if v.get("brain") == "shipped"]
    if not ids:
        known = any("brain" in v for v in store.volumes)
        raise IchbenchError(f"{store.path}: no volume has a shipped (hand-labelled) cavity mask"
                            + ("; its `brain` masks were computed by the classical masker" if known else
                               "; re-ingest it with this version of ichbench to record where its masks come from"))
    return ids


def holdout_split(ids: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held out): a seeded `share` of the volumes (at least one) held out, at least one kept."""
    if len(ids) < 2:
        raise IchbenchError("the ICM needs at least 2 volumes with shipped cavity masks (one to hold out), "
                            f"got {len(ids)}")
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_hold = min(len(ids) - 1, max(1, int(round(share * len(ids)))))
    hold = sorted(ids[i] for i in order[:n_hold])
    return [v for v in ids if v not in set(hold)], hold


def _train_one(win: str, cfg, arrays, train_pos, out_dir: Path, identity: str, device, progress, on_epoch):
    batch = cfg.batch_size_tissue if win == "tissue" else cfg.batch_size_bone
    bounds = cfg.tissue_window if win == "tissue" else cfg.bone_window
    torch.manual_seed(cfg.seed)
    net = prepare_model(icm_unet(cfg.base_channels), device, False)
    gens = generators(cfg.seed + (0 if win == "tissue" else 1), device)
    sampler = EpochSampler(lambda g: train_pos, batch, cfg.steps_per_epoch, gens["sampler"])

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        images = windowed(gather(arrays.images, idx, device), bounds)
        masks = gather(arrays.brain, idx, device)[:, None].float()
        if cfg.augment:
            images, masks = augment_batch(images, masks, cfg.augment, gens["device"])
        return dice_loss(net(images).float(), masks)

    history = fit(model=net, loss_fn=loss_fn, sampler=sampler, epochs=cfg.epochs, lr=cfg.lr,
                  lr_decay=cfg.lr_decay, weight_decay=cfg.weight_decay,
                  state_path=out_dir / f"state_{win}.pt", identity=f"{identity}:{win}", generators=gens,
                  device=device, desc=f"icm {win} window", progress=progress,
                  on_epoch=(lambda e, h: on_epoch(win, e, h)) if on_epoch else None)
    return net, history


def held_out_dice(icm: IcmUNets, arrays, hold: list[str], threshold: float) -> dict:
    """Mean per-volume Dice of each window's mask and of the union against the shipped masks."""
    per = {w: [] for w in (*WINDOWS, "union")}
    for vid in hold:
        rows = volume_rows(arrays, [vid])
        p = icm.probabilities(arrays.images[rows].numpy())
        truth = arrays.brain[rows].numpy().astype(bool)
        masks = {w: (p[w] > threshold).numpy() for w in WINDOWS}
        masks["union"] = masks["tissue"] | masks["bone"]
        for w, m in masks.items():
            per[w].append(volume_metrics(m, truth)["dice"])
    return {f"icm_dice_{w}": float(np.mean(v)) for w, v in per.items()}


def train_icm(store_path: Path, cfg, out_dir: Path, device=None, progress: bool = True,
              on_epoch=None) -> Path:
    """Train (or reuse, or resume) the ICM U-Nets of `cfg` on the store; returns `out_dir/icm.pt`."""
    from ichbench.store import open_store

    store = open_store(store_path)
    key = cfg.model_key(store.fingerprint)
    out_dir = Path(out_dir)
    final = out_dir / ICM_NAME
    if final.exists():
        done = ckpt.load(final)
        if done.get("kind") == "icm" and done.get("model_key") == key:
            return final
    train_ids, hold = holdout_split(shipped_volumes(store), cfg.holdout, cfg.seed)
    device = select_device(device)
    arrays = load_store(store_path, cfg.image_size, names=("images", "labels", "volume", "brain"))
    train_pos = volume_rows(arrays, train_ids)
    t0 = time.perf_counter()
    states, histories = {}, {}
    with device_mode(device):
        for win in WINDOWS:
            net, histories[win] = _train_one(win, cfg, arrays, train_pos, out_dir, key, device, progress, on_epoch)
            states[win] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        payload = {"kind": "icm", "model_key": key, "config": cfg.identity(), "threshold": cfg.threshold,
                   "base_channels": cfg.base_channels, "image_size": cfg.image_size,
                   "windows": {"tissue": list(cfg.tissue_window), "bone": list(cfg.bone_window)},
                   **states, "dataset": store.attrs.get("dataset"), "store_fingerprint": store.fingerprint,
                   "train_volumes": train_ids, "holdout_volumes": hold, "history": histories,
                   "device": str(device), "ichbench_version": __version__, **numerics(device)}
        payload["metrics"] = held_out_dice(IcmUNets(payload, device), arrays, hold, cfg.threshold)
    payload["seconds"] = round(time.perf_counter() - t0, 3)
    return ckpt.save_atomic(payload, final)


def icm_dirname(cfg, store_fingerprint: str) -> str:
    """Folder of a trained ICM under `<home>/icm/<dataset>/`."""
    return f"icm-{cfg.model_key(store_fingerprint)[:12]}"
