"""`ichbench icm apply`: write a trained ICM's masks into an existing store, without re-ingesting.

The new version of the store is built beside it and published atomically (`store.atomic`): the
ingested arrays' shard files are hard-linked (never rewritten, so sharing them is safe; metadata
files are copied; on object storage the server copies them), the `icm` array is written and
hashed, and the group attributes record it under `derived.icm` (model key, digest, threshold,
where the model learned and how well). Until the new version is complete the old one stays in
place and readable; a killed apply leaves it untouched.

The store's `fingerprint` names its ingested content (what splits, canonical leaderboard records
and caches key on) and does not change: a derived array is a model's output, identified by the
model's key and checked by its own digest (`SliceStore.verify`).
"""

from __future__ import annotations

import numpy as np
import zarr

from ichbench.icm.masker import IcmUNets
from ichbench.store import atomic, open_store
from ichbench.store.location import Location, zarr_store
from ichbench.store.layout import SHARD_SLICES, array_digest, shard_digest
from ichbench.store.writer import create_slice_array

ICM_ARRAY = "icm"


def taught_volumes(store, payload: dict) -> list[str]:
    """Volumes of `store` whose cavity masks taught the ICM of `payload` (its checkpoint): the ICM
    was trained on this dataset and these are its training volumes. Its masks there are fitted,
    not predicted, so they say nothing about how it does on unseen scans."""
    if payload.get("dataset") != store.attrs.get("dataset"):
        return []
    return sorted(set(payload.get("train_volumes") or ()) & {v["id"] for v in store.volumes})


def taught_warning(store, payload: dict) -> str | None:
    """The one-line warning `ichbench icm apply` prints when the ICM learned from this store's volumes."""
    taught = taught_volumes(store, payload)
    if not taught:
        return None
    return (f"warning: {len(taught)} of the {len(store.volumes)} volumes of {store.attrs.get('dataset')} taught this "
            f"ICM (e.g. {taught[0]}); its masks there are fitted, not predicted")


def apply_icm(store_path: Location | str, unets: IcmUNets, threshold: float, progress=None) -> dict:
    """Write `unets`' masks as the store's `icm` array; returns its `derived.icm` record."""
    store = open_store(store_path)
    final = store.path
    atomic.recover(final)
    tmp = atomic.clone(final)
    try:
        group = zarr.open_group(zarr_store(tmp, "r+"), mode="r+")
        if ICM_ARRAY in group:
            del group[ICM_ARRAY]
        n, size = store.n_slices, int(store.attrs["settings"]["size"])
        arr = create_slice_array(group, ICM_ARRAY, "uint8", size, rows=n)
        digests = []
        for start in range(0, n, SHARD_SLICES):
            images = store.read("images", np.arange(start, min(start + SHARD_SLICES, n)))
            masks = unets(images, threshold).astype(np.uint8)
            with zarr.config.set({"codec_pipeline.batch_size": SHARD_SLICES}):
                arr[start:start + len(masks)] = masks
            digests.append(shard_digest(masks))
            if progress is not None:
                progress(len(masks))
        record = {"model": unets.key, "digest": array_digest(digests), "shard_digests": digests, "threshold": threshold,
                  "trained_on": unets.payload.get("dataset"),
                  "trained_on_fingerprint": unets.payload.get("store_fingerprint"), **unets.metrics}
        group.attrs.update({"derived": {**store.attrs.get("derived", {}), ICM_ARRAY: record}})
    except BaseException:
        atomic.discard(tmp)
        raise
    atomic.publish(tmp, final)
    return record
