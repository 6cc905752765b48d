"""The steps every fine-tuning of a fold shares, whoever trains it (the shared recipe in
`train.engine`, or a method's own loop in `train.own_loop`): the checks made before anything
loads, the fold's training and test volumes, and the keys of the result.json both write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.evaluate import summarize
from ichbench.evaluate.digest import fold_digest
from ichbench.evaluate.infjson import decode, encode
from ichbench.files import write_json_atomic
from ichbench.train import task
from ichbench.train.device import numerics


@dataclass
class FoldSetup:
    store: object            # the segmentation store (a SliceStore)
    train_ids: list[str]     # the volumes trained on (the labeled fraction of the fold's training set)
    test_ids: list[str]      # the fold's test volumes, in the split's order
    classes: list[str] | None = None   # the subtypes task's class names (`train.task`); None: binary

    @property
    def store_size(self) -> int:
        return int(self.store.attrs["settings"]["size"])


def setup_fold(m, store_path: Path, split: dict, fold: int, cfg, pretrained) -> FoldSetup:
    """Refuse what cannot be fine-tuned (no masks, a pretext method without its checkpoint, a fold
    out of range, a split made for another store), else the fold's volumes."""
    from ichbench.splits import labeled_subset, train_ids
    from ichbench.store import open_store
    from ichbench.train.label_needs import check_finetuning_store

    store = open_store(store_path)
    check_finetuning_store(m, store)
    classes = task.class_names(cfg, store)
    if classes and m.owns_finetuning and task.SUBTYPES not in m.tasks:
        raise IchbenchError(f"finetune.task=subtypes: {m.name} runs its own fine-tuning (plugin API 2), which "
                            "predicts the binary mask only (its Method.tasks name no 'subtypes')")
    if m.has_pretext and pretrained is None:
        raise IchbenchError(f"{m.name} fine-tunes from its pretraining: pass a pretrained checkpoint "
                            "(`ichbench pretrain` makes one)")
    n = len(split["folds"])
    if not 0 <= fold < n:
        raise IchbenchError(f"fold {fold} out of range: the split has {n} folds (0..{n - 1})")
    if split.get("store_fingerprint") not in (None, store.fingerprint):
        raise IchbenchError(f"{store_path}: the split was made for another version of this store "
                            "(fingerprints differ); make the split again")
    has_ich = {v["id"]: bool(v.get("has_ich")) for v in store.volumes}
    train = labeled_subset(train_ids(split, fold), has_ich, cfg.finetune.labeled_fraction, seed=fold)
    return FoldSetup(store, train, list(split["folds"][fold]["test"]), classes)


def fold_result(m, cfg, split: dict, fold: int, setup: FoldSetup, store_path: Path, *, rows: list[dict],
                n_train_slices: int, history: list, identity: str, train_seconds: float, device,
                **specific) -> dict:
    """The result.json of a fold: the keys both trainers share (which the driver, MLflow, the
    results table and `leaderboard submit` read), then the trainer's own (`specific`)."""
    return {
        "method": m.name, "dataset": cfg.dataset, "profile": cfg.profile, "fold": fold,
        "k": len(split["folds"]), "split_hash": split.get("hash"), "store": str(store_path),
        "store_fingerprint": setup.store.fingerprint, "train_volumes": setup.train_ids,
        "n_labeled_volumes": len(setup.train_ids), "test_volumes": setup.test_ids,
        "n_train_slices": int(n_train_slices), **specific,
        "predictions_sha256": fold_digest(rows),   # of the scored masks: ichbench.evaluate.digest
        "config": cfg.to_dict(), "finetune_hash": identity.split(":")[0],
        "history": list(history), "volumes": rows,
        "summary": summarize(rows, cfg.eval.nsd_mm, cfg.eval.hd_cap_mm), "device": str(device),
        **({"classes": setup.classes} if setup.classes else {}),
        "train_seconds": round(train_seconds, 3), "ichbench_version": __version__,
        "torch_version": torch.__version__, **numerics(device),
    }


def write_fold_result(result: dict, path: Path) -> Path:
    """result.json, atomically, infinite distances as "inf" (`evaluate.infjson`)."""
    return write_json_atomic(encode(result), path)


def read_fold_result(path: Path) -> dict:
    """A result.json as `write_fold_result` wrote it: "inf" read back as float('inf')."""
    import json
    return decode(json.loads(Path(path).read_text()))
