"""`ichbench data export-folds`: a dataset's canonical folds as files any tool trains from.

    OUT/
      folds.json          the canonical split: dataset, k, seed, hash, store fingerprint, per fold
                          its test (held-out) and train ids, per volume its grid (shape, spacing)
      folds.csv           volume_id,fold: the fold whose model holds each volume out
      fold_<i>/train.txt  one volume id a line
      fold_<i>/test.txt
      splits_final.json   nnU-Net v2's shape: per fold {"train": [...], "val": [its test ids]}
      nnUNet_raw/Dataset<ID>_<dataset>/   every volume in imagesTr/labelsTr (without --no-images)

Labels are the binary hemorrhage masks (0/1), the paper's task. With `task="subtypes"` (`--task
subtypes`, a store with a class map) they are the store's class maps (0 background, k its class
k) and dataset.json names the classes; folds.json then records "task" and "labels". Binary stays
the default so an export of any store means what it meant before class maps existed.

Images are the store's: its grid (slices resampled to the ingest size) and spacing, int16 HU,
written by `ichbench.export.nifti.write_nifti_volume`. Predictions made on these files come back on
the grid `ichbench leaderboard submit --predictions` scores on. The whole folder is written
beside OUT and renamed into place: an interrupted export leaves no OUT.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ichbench.errors import IchbenchError
from ichbench.export.nifti import write_nifti_volume
from ichbench.export.nnunet_raw import (nnunet_dataset_name, nnunet_image_path, nnunet_label_path, nnunet_labels,
                                        write_nnunet_dataset_json)

NNUNET_ID = 502   # 501 is the plugin's per-fold dataset; any free id works (--nnunet-id)
TASKS = ("binary", "subtypes")


def canonical_split(store, dataset: str, k: int | None) -> dict:
    """The canonical split of the store's volumes for k folds (the dataset's default k when None),
    with each fold's training ids."""
    from ichbench.splits import fold_count, split_for_store, train_ids
    split = split_for_store(store, fold_count(k, dataset))
    for f in split["folds"]:
        f["train"] = train_ids(split, f["fold"])
    return split


def volume_rows(store) -> dict[str, np.ndarray]:
    """Store rows (slices) of each volume, in store order."""
    volume = store.read("volume")
    return {v["id"]: np.flatnonzero(volume == i) for i, v in enumerate(store.volumes)}


def export_folds(store, dataset: str, out: Path, k: int | None = None, images: bool = True,
                 nnunet_id: int = NNUNET_ID, on_volume=None, task: str = "binary") -> dict:
    """Write the export (module docstring) to `out`, which must not exist or be empty; returns
    folds.json's content. `on_volume(volume_id)` after each volume's files are written. `task`:
    "binary" (hemorrhage masks) or "subtypes" (the store's class maps)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IchbenchError(f"--out {out}: already exists and is not an empty folder; choose a new one")
    if task not in TASKS:
        raise IchbenchError(f"--task {task}: not a task; choose {' or '.join(TASKS)}")
    if task == "subtypes" and not store.class_names:
        raise IchbenchError(f"--task subtypes: {store.path} has no class map (a binary store); subtypes need a "
                            "dataset with per-voxel classes (bhsd, phantom)")
    split = canonical_split(store, dataset, k)
    meta = {v["id"]: v for v in store.volumes}
    rows = volume_rows(store)
    doc = {"dataset": dataset, "k": split["k"], "seed": split["seed"], "hash": split["hash"],
           "store_fingerprint": store.fingerprint,
           "grid": "the store's: slices resampled to its ingest size, spacing (z, y, x) in mm for that grid",
           "folds": [{"fold": f["fold"], "test": f["test"], "train": f["train"]} for f in split["folds"]],
           "volumes": {vid: {"shape": [len(rows[vid]), *store["images"].shape[1:]],
                             "spacing_mm": [float(s) for s in meta[vid]["spacing"]]} for vid in sorted(meta)}}
    if task == "subtypes":   # binary exports keep folds.json as it was
        doc.update(task=task, labels=nnunet_labels(store.class_names))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_lists(tmp, doc)
        if images:
            _write_nnunet(tmp, doc, store, rows, nnunet_id, on_volume)
        if out.exists():
            out.rmdir()   # empty, checked above
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _write_lists(root: Path, doc: dict) -> None:
    root.mkdir(parents=True)
    (root / "folds.json").write_text(json.dumps(doc, indent=2) + "\n")
    with open(root / "folds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["volume_id", "fold"])
        for vid, fold in sorted((v, f["fold"]) for f in doc["folds"] for v in f["test"]):
            w.writerow([vid, fold])
    for f in doc["folds"]:
        for part in ("train", "test"):
            path = root / f"fold_{f['fold']}" / f"{part}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(f"{v}\n" for v in f[part]))
    nnunet = [{"train": f["train"], "val": f["test"]} for f in doc["folds"]]
    (root / "splits_final.json").write_text(json.dumps(nnunet, indent=2) + "\n")


def _write_nnunet(root: Path, doc: dict, store, rows: dict, nnunet_id: int, on_volume) -> None:
    name = nnunet_dataset_name(nnunet_id, doc["dataset"])
    ds = root / "nnUNet_raw" / name
    for vid in sorted(rows):
        spacing = doc["volumes"][vid]["spacing_mm"]
        image = store.read("images", rows[vid]).astype(np.int16)
        write_nifti_volume(nnunet_image_path(ds / "imagesTr", vid), image, spacing)
        if "labels" in doc:   # the subtypes task: the class map itself
            labels = store.read("classes", rows[vid]).astype(np.uint8)
        else:
            labels = (store.read("masks", rows[vid]) > 0).astype(np.uint8)
        write_nifti_volume(nnunet_label_path(ds / "labelsTr", vid), labels, spacing)
        if on_volume:
            on_volume(vid)
    write_nnunet_dataset_json(ds, name, len(rows), f"ichbench {doc['dataset']}, every volume; its {doc['k']} canonical "
                                            f"folds are splits_final.json (split {doc['hash'][:12]})",
                              doc.get("labels"))
