"""A method with its own fine-tuning in the subtypes task (`finetune.task=subtypes`, issue 23 §2;
how nnunet_2d runs it): the Fold hands over the class names and the training volumes' class maps,
the label maps it returns are scored by the shared recipe's per-class code (the union's metrics at
the top of the row, `classes`, `pred_labels_sha256`), and a method that does not declare the task,
or a label map holding other ids, is refused in one line. No training: the method answers by rule."""

from __future__ import annotations

import numpy as np
import pytest

import ichbench.api as api
from ichbench.errors import IchbenchError
from ichbench.evaluate.digest import label_map_digest, volume_digest
from ichbench.resolve import resolve
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune

SUBTYPES = ["finetune.task=subtypes"]


class OwnSubtypes(api.Method):
    """Answers `rule(volume)` for every test volume; records the Fold it was handed."""
    name = "own_subtypes_test"
    label_needs = api.LabelNeeds(segmentation=True)
    tasks = ("binary", "subtypes")

    def __init__(self, rule):
        self.rule, self.seen = rule, None

    def finetune_fold(self, fold):
        self.seen = fold
        return api.FoldOutput(predictions={v.id: self.rule(v) for v in fold.volumes(fold.test_ids)})


def store_maps(store_path):
    """The store's class maps per volume (an oracle read past the Fold)."""
    store = open_store(store_path)
    data = store.load(["classes", "volume"])
    return store.class_names, {v["id"]: data["classes"][data["volume"] == i] for i, v in enumerate(store.volumes)}


def run(method, store_path, tmp_path, overrides=SUBTYPES):
    split = split_for_store(open_store(store_path), 5)
    cfg = resolve(method, "phantom", "smoke", overrides)
    return finetune(method, store_path, split, 0, cfg, tmp_path / "fold_0", device="cpu", progress=False), split


def test_the_fold_carries_the_classes_and_the_training_class_maps(phantom_store, tmp_path):
    names, maps = store_maps(phantom_store)
    m = OwnSubtypes(lambda v: np.zeros(v.hu.shape, np.uint8))
    run(m, phantom_store, tmp_path)
    fold = m.seen
    assert fold.classes == names == ["iph", "ivh", "sah", "sdh", "edh"]
    for vol in fold.volumes():
        if vol.id in fold.test_ids:
            assert vol.classes is None and vol.mask is None
        else:
            assert vol.classes.dtype == np.uint8
            np.testing.assert_array_equal(vol.classes, maps[vol.id], err_msg=vol.id)
            np.testing.assert_array_equal(vol.mask, maps[vol.id] > 0, err_msg=vol.id)


def mistaken(truth: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    """The truth with every voxel of class a called b, and one background voxel called c."""
    pred = truth.copy()
    pred[truth == a] = b
    assert truth[0, 0, 0] == 0
    pred[0, 0, 0] = c
    return pred


def test_label_maps_are_scored_per_class_against_hand_counts(phantom_store, tmp_path):
    names, maps = store_maps(phantom_store)
    test = split_for_store(open_store(phantom_store), 5)["folds"][0]["test"]
    # a: a class some test volume holds, called b; c: a stray false positive of a third class
    a = min(int(k) for vid in test for k in np.unique(maps[vid]) if k)
    b, c = a % 5 + 1, (a + 1) % 5 + 1
    result, _ = run(OwnSubtypes(lambda v: mistaken(maps[v.id], a, b, c)), phantom_store, tmp_path)
    assert result["classes"] == names and [r["volume_id"] for r in result["volumes"]] == test
    for row in result["volumes"]:
        truth = maps[row["volume_id"]]
        n = [int((truth == k).sum()) for k in range(6)]   # voxels of each id, by hand
        # the union: every hemorrhage voxel found, the one stray voxel a false positive
        assert (row["tp"], row["fp"], row["fn"]) == (sum(n[1:]), 1, 0)
        want = {names[k - 1]: (n[k], 0, 0) for k in range(1, 6)}
        want[names[a - 1]] = (0, 0, n[a])           # none found: all called b
        want[names[b - 1]] = (n[b], n[a], 0)        # a's voxels are b's false positives
        want[names[c - 1]] = (n[c], 1, 0)
        got = {name: (m["tp"], m["fp"], m["fn"]) for name, m in row["classes"].items()}
        assert got == want, row["volume_id"]
        pred = mistaken(truth, a, b, c)
        assert row["pred_sha256"] == volume_digest(pred > 0)
        assert row["pred_labels_sha256"] == label_map_digest(pred)
    assert set(result["summary"]["classes"]) == set(names) and "macro" in result["summary"]


def test_a_method_that_does_not_declare_subtypes_is_refused_in_one_line(phantom_store, tmp_path):
    class BinaryOnly(OwnSubtypes):
        tasks = ("binary",)
    with pytest.raises(IchbenchError) as err:
        run(BinaryOnly(lambda v: np.zeros(v.hu.shape, np.uint8)), phantom_store, tmp_path)
    assert str(err.value).startswith("finetune.task=subtypes: own_subtypes_test runs its own fine-tuning")
    assert "\n" not in str(err.value) and not (tmp_path / "fold_0" / "result.json").exists()
    # `ichbench methods --json` says so beforehand
    assert BinaryOnly(None).describe()["tasks"] == ["binary"]
    assert OwnSubtypes(None).describe()["tasks"] == ["binary", "subtypes"]


def test_a_label_map_with_foreign_ids_is_refused_in_one_line(phantom_store, tmp_path):
    with pytest.raises(IchbenchError) as err:
        run(OwnSubtypes(lambda v: np.full(v.hu.shape, 6, np.uint8)), phantom_store, tmp_path)
    assert "is not a label map of ids 0..5 (iph, ivh, sah, sdh, edh" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "fold_0" / "result.json").exists()
