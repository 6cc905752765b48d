"""A method never sees what it is scored against (docs/plugins.md, "What a method can see").

A method with its own fine-tuning gets a `Fold`; a cheating method walks everything it can reach
from it and recovers nothing of the test volumes' truth: no mask, label, subtype, flag or count,
no store object, no path to a store. While it runs, its process holds no copy of the test masks
at all. A pretext that pretrains on the run's own segmentation slices gets no labels either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ichbench import UNKNOWN_LABEL
from ichbench.errors import IchbenchError
from ichbench.resolve import resolve
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune
from tests.cheating_method import Cheater


def truth_of(store_path):
    store = open_store(store_path)
    data = store.load(["masks", "volume"])
    return {v["id"]: data["masks"][data["volume"] == i].astype(bool) for i, v in enumerate(store.volumes)}


def secrets(store_path) -> list[str]:
    return [str(store_path), os.path.realpath(store_path), "segmentation.zarr",
            os.environ["ICHBENCH_NODE_CACHE"]]


@pytest.mark.parametrize("fold_index", [0, 3])
def test_a_cheating_method_recovers_nothing_from_its_fold(phantom_store, tmp_path, fold_index):
    cheater = Cheater(secrets(phantom_store))
    split = split_for_store(open_store(phantom_store), 5)
    epochs = []
    finetune(cheater, phantom_store, split, fold_index, resolve(cheater, "phantom", "smoke"), tmp_path,
             device="cpu", progress=False, on_epoch=lambda e, h: epochs.append(e))
    assert epochs == [1] and cheater.n_reached > 50
    assert cheater.leaks == []
    truth = truth_of(phantom_store)
    test, train = split["folds"][fold_index]["test"], [v for v in truth if v not in split["folds"][fold_index]["test"]]
    hidden = [truth[v] for v in test if truth[v].any()]
    assert hidden, "the fold has no hemorrhage to hide: pick another fold"
    found = [np.asarray(a) for a in cheater.arrays]
    # it reached every volume's image and every training mask, so the walk went everywhere ...
    assert sum(a.dtype == np.int16 for a in found) == len(test) + len(train)
    masks = [a for a in found if a.dtype != np.int16]
    assert len(masks) == len(train)
    assert all(any(np.array_equal(m, truth[v]) for v in train) for m in masks)
    # ... and none of it is a test volume's mask, nor holds one
    for secret in hidden:
        for a in found:
            assert not (a.shape == secret.shape and np.array_equal(a.astype(bool), secret))
            assert not (a.ndim == 3 and a.shape[0] > secret.shape[0] and a.shape[1:] == secret.shape[1:]
                        and a.dtype != np.int16), "a stack of masks larger than any volume"


def test_a_folds_test_volumes_and_split_carry_no_labels_flags_or_counts(phantom_store, tmp_path):
    cheater = Cheater(secrets(phantom_store))
    split = split_for_store(open_store(phantom_store), 5)
    assert "n_ich" in split["folds"][0]          # the canonical split file counts them ...
    finetune(cheater, phantom_store, split, 1, resolve(cheater, "phantom", "smoke"), tmp_path, device="cpu",
             progress=False)
    fold = cheater.fold
    assert all("n_ich" not in f for f in fold.split["folds"])    # ... the fold's copy does not
    assert fold.split["hash"] == split["hash"] and fold.split_hash == split["hash"]
    assert [f["test"] for f in fold.split["folds"]] == [f["test"] for f in split["folds"]]
    for vol in fold.volumes(fold.test_ids):
        assert (vol.mask, vol.subtypes, vol.has_ich) == (None, None, None)
    store = {v["id"]: v for v in open_store(phantom_store).volumes}
    for vol in fold.volumes(fold.train_ids):
        assert vol.has_ich == bool(store[vol.id]["has_ich"]) and vol.subtypes == store[vol.id]["subtypes"]
    assert "_arrays" not in vars(fold) and "store_path" not in vars(fold)
    with pytest.raises(IchbenchError, match=r"Fold.store_path was withdrawn .* fold.volumes\(ids\)"):
        fold.store_path


SCRIPT = """
import json, sys
import numpy as np
from ichbench.resolve import resolve
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune
from tests.cheating_method import Cheater
store, out = sys.argv[1], sys.argv[2]
cheater = Cheater([], scan_memory=True)
split = split_for_store(open_store(store), 5)
finetune(cheater, store, split, 0, resolve(cheater, "phantom", "smoke"), out, device="cpu", progress=False)
np.savez(out + "/memory.npz", *cheater.memory)
json.dump(split["folds"][0]["test"], open(out + "/test.json", "w"))
"""


@pytest.mark.slow
def test_while_a_method_runs_its_process_holds_no_test_mask(phantom_store, tmp_path):
    """In a fresh process (so no other test's arrays are about): every array any object refers
    to, and every frame's locals, while `finetune_fold` runs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(phantom_store), str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    memory = list(np.load(tmp_path / "memory.npz").values())
    truth = truth_of(phantom_store)
    hidden = [truth[v] for v in json.loads((tmp_path / "test.json").read_text()) if truth[v].any()]
    assert hidden and len(memory) > 10          # it saw the fold's images and training masks
    for secret in hidden:
        n = len(secret)
        for a in memory:
            if a.dtype == np.int16 or a.shape[1:] != secret.shape[1:] or len(a) < n:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(a.astype(bool), n, axis=0)
            assert not any(np.array_equal(np.moveaxis(w, -1, 0), secret) for w in windows)


def test_a_pretext_on_the_runs_own_slices_sees_no_labels(phantom_store, tmp_path):
    """Pretraining on the segmentation store the folds are cut from: a pretext that needs no
    labels gets batches whose labels are all unknown, over every slice (no ICH-based selection)."""
    from ichbench.methods.context_restoration import METHODS
    from ichbench.train.engine import pretrain

    base = next(m for m in METHODS if m.name == "context_restoration")
    seen = []

    class Spy(type(base)):
        def pretext_loss(self, model, batch, cfg, generator):
            seen.append(batch["labels"].clone())
            return super().pretext_loss(model, batch, cfg, generator)

    spy = Spy()
    cfg = resolve(spy, "phantom", "smoke", ["pretrain.epochs=1", "pretrain.steps_per_epoch=3",
                                            "pretrain_dataset=phantom"])
    cfg.pretrain_role = "segmentation"
    labels = np.asarray(open_store(phantom_store).load(["labels"])["labels"])
    assert (labels[:, 1] == 1).any() and (labels[:, 1] != UNKNOWN_LABEL).all()   # the store knows them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = pretrain(spy, phantom_store, cfg, tmp_path, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(seen) >= 3 and all(bool((b == UNKNOWN_LABEL).all()) for b in seen)
    pre = torch.load(path, weights_only=False)
    hold = min(cfg.pretrain.holdout, len(labels) // 10)
    assert (pre["n_train_slices"], pre["n_holdout_slices"]) == (len(labels) - hold, hold)
