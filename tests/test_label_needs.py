"""What a method needs of its stores' labels (ichbench/train/label_needs.py), refused before any
training: subtypes for the multi-label pretexts, known ICH labels for the classifiers, masks for
fine-tuning, the shipped cavity masks for icm.source=shipped."""

from pathlib import Path

import numpy as np
import pytest

from ichbench.errors import IchbenchError
from ichbench.icm import check_shipped
from ichbench.methods.base import LabelNeeds, Method
from ichbench.resolve import resolve
from ichbench.store import open_store
from ichbench.store.writer import StoreWriter
from ichbench.train.engine import pretrain
from ichbench.train.label_needs import check_finetuning_store, check_pretraining_store
from tests.test_engine import PRE_TINY, FakeDenoising


def write_store(path: Path, labels: np.ndarray, *, masks: bool = False, brain: bool = True) -> Path:
    n = len(labels)
    w = StoreWriter(path, size=16, with_masks=masks, with_brain=brain)
    rng = np.random.default_rng(0)
    w.add({"id": "V0", "spacing": [5.0, 1.0, 1.0], "subtypes": None}, rng.integers(-100, 100, (n, 16, 16)),
          labels, masks=np.zeros((n, 16, 16), np.uint8) if masks else None,
          brain=np.ones((n, 16, 16), np.uint8) if brain else None)
    w.close({"dataset": "fake", "role": "pretraining"}, {"size": 16})
    return path


def classifier(name: str, **needs) -> Method:
    m = Method()
    m.name, m.label_needs, m.transfers = name, LabelNeeds(**needs), ("encoder",)
    return m


def labels_of(anyich, subtypes=None) -> np.ndarray:
    n = len(anyich)
    out = np.zeros((n, 7), np.uint8)
    out[:, 1] = anyich
    out[:, 0] = np.where(np.asarray(anyich) == 255, 255, 1 - np.asarray(anyich))
    out[:, 2:] = 0 if subtypes is None else subtypes
    return out


def test_label_needs_refuse_before_training(tmp_path):
    binary = classifier("binary_like", binary=True)
    multi = classifier("multilabel_like", multilabel=True)
    unlabeled = classifier("unlabeled_like", unlabeled=True)
    anyich = [1, 1, 0, 0, 0, 0]

    with_subtypes = labels_of(anyich)
    with_subtypes[0, 2] = with_subtypes[1, 5] = 1
    full = open_store(write_store(tmp_path / "full.zarr", with_subtypes))
    for m in (binary, multi, unlabeled):
        check_pretraining_store(m, full)

    unknown_sub = labels_of(anyich)
    unknown_sub[:2, 2:] = 255            # ICH slices whose subtype is unknown (Seg-CQ500-like)
    store = open_store(write_store(tmp_path / "unknown_sub.zarr", unknown_sub))
    with pytest.raises(IchbenchError, match="2 of 6 labeled slices have unknown subtypes"):
        check_pretraining_store(multi, store)
    check_pretraining_store(binary, store)

    no_sub = open_store(write_store(tmp_path / "no_sub.zarr", labels_of(anyich)))
    with pytest.raises(IchbenchError, match="no slice is labeled with any ICH subtype"):
        check_pretraining_store(multi, no_sub)

    unlabeled_store = open_store(write_store(tmp_path / "unlabeled.zarr", np.full((6, 7), 255, np.uint8)))
    for m in (binary, multi):
        with pytest.raises(IchbenchError, match="no slice has a known ICH label"):
            check_pretraining_store(m, unlabeled_store)
    check_pretraining_store(unlabeled, unlabeled_store)

    one_class = open_store(write_store(tmp_path / "one_class.zarr", labels_of([0] * 6)))
    with pytest.raises(IchbenchError, match="all non-ICH"):
        check_pretraining_store(binary, one_class)

    # pretrain() refuses before it writes anything
    with pytest.raises(IchbenchError, match="unknown subtypes"):
        pretrain(multi, store.path, resolve(FakeDenoising(), "phantom", "smoke", PRE_TINY), tmp_path / "out",
                 device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def test_finetuning_store_needs(tmp_path):
    from ichbench.methods.base import get_method
    no_masks = open_store(write_store(tmp_path / "pre.zarr", labels_of([1, 0, 0])))
    with pytest.raises(IchbenchError, match="no hemorrhage masks"):
        check_finetuning_store(get_method("unet_mixed"), no_masks)
    no_brain = open_store(write_store(tmp_path / "seg.zarr", labels_of([1, 0, 0]), masks=True, brain=False))
    check_finetuning_store(get_method("unet_mixed"), no_brain)
    # a +ICM method needs the store's cavity masks only for icm.source=shipped (the others compute them)
    check_finetuning_store(get_method("unet_mixed_icm"), no_brain)
    with pytest.raises(IchbenchError, match="icm.source=shipped"):
        check_shipped(no_brain)
