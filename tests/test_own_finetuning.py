"""Plugin API 2: a method that runs its own fine-tuning (`Method.finetune_fold`). The engine
hands it the fold (training volumes with masks, test volumes without), scores what it returns
with the shared recipe's scoring, and refuses a malformed answer in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ichbench.api as api
from ichbench.evaluate.digest import fold_digest, volume_digest
from ichbench.resolve import resolve
from ichbench.errors import IchbenchError
from ichbench.splits import split_for_store, train_ids
from ichbench.store import open_store
from ichbench.train.engine import finetune


# unet_mixed / phantom / smoke's finetune_hash as ichbench computed it before API 2 existed
BEFORE_API_2 = "d2a7e35170babb1ec4c7f6583b6b87cef4facec6c914aa2ac1ea51a61af021cd"


class OwnLoop(api.Method):
    """Predicts with `rule(fold, volume)`; records the Fold it was handed."""
    name = "own_loop_test"
    label_needs = api.LabelNeeds(segmentation=True)

    def __init__(self, rule, output=None):
        self.rule, self.output, self.seen = rule, output, None

    def finetune_overrides(self, profile):
        return {"epochs": 3, "params": {"knob": 7}}

    def finetune_fold(self, fold):
        self.seen = fold
        if self.output is not None:
            return self.output(fold)
        vols = list(fold.volumes(fold.test_ids))
        return api.FoldOutput(predictions={v.id: self.rule(fold, v) for v in vols},
                              history=[{"epoch": 1, "loss": 0.5, "lr": 0.1}], info={"knob": 7})


def empty(fold, vol):
    return np.zeros(vol.hu.shape, bool)


def truth_of(store_path):
    """The store's own masks per volume (an oracle, read past the Fold, for the scoring test)."""
    store = open_store(store_path)
    data = store.load(["masks", "volume"])
    return {v["id"]: data["masks"][data["volume"] == i].astype(bool)
            for i, v in enumerate(store.volumes)}


def run(method, store_path, tmp_path, fold=0):
    split = split_for_store(open_store(store_path), 5)
    cfg = resolve(method, "phantom", "smoke")
    return finetune(method, store_path, split, fold, cfg, tmp_path / f"fold_{fold}", device="cpu",
                    progress=False), split


def test_api_version_2_and_a_method_that_owns_its_fine_tuning():
    assert api.API_VERSION == 2 and not api.get_method("unet_mixed").owns_finetuning
    assert OwnLoop(empty).owns_finetuning and not OwnLoop(empty).has_pretext
    cfg = resolve(OwnLoop(empty), "phantom", "smoke")
    assert cfg.finetune.epochs == 3 and cfg.to_dict()["finetune"]["params"] == {"knob": 7}
    # the shared recipe's configs carry no `params`, so run identities made before API 2 hold
    plain = resolve("unet_mixed", "phantom", "smoke")
    assert "params" not in plain.to_dict()["finetune"]
    assert plain.finetune_hash(None) == BEFORE_API_2


def test_fold_hands_over_training_masks_and_hides_test_masks(phantom_store, tmp_path):
    m = OwnLoop(empty)
    result, split = run(m, phantom_store, tmp_path, fold=1)
    fold = m.seen
    assert fold.index == 1 and fold.k == 5
    assert fold.split == {"dataset": "phantom", "k": 5, "seed": split["seed"], "hash": split["hash"],
                          "store_fingerprint": split["store_fingerprint"],
                          "folds": [{"fold": f["fold"], "test": f["test"]} for f in split["folds"]]}
    assert fold.test_ids == split["folds"][1]["test"] and fold.train_ids == train_ids(split, 1)
    assert fold.work_dir == tmp_path / "fold_1" and fold.device == "cpu" and fold.image_size == 64
    truth = truth_of(phantom_store)
    store_vols = {v["id"]: v for v in open_store(phantom_store).volumes}
    for vol in fold.volumes():
        assert vol.hu.dtype == np.int16 and vol.hu.shape == truth[vol.id].shape
        assert vol.spacing == pytest.approx(tuple(store_vols[vol.id]["spacing"]))
        if vol.id in fold.test_ids:
            assert vol.mask is None and vol.has_ich is None and vol.subtypes is None
        else:
            np.testing.assert_array_equal(vol.mask, truth[vol.id])
            assert vol.has_ich == bool(store_vols[vol.id]["has_ich"])
            assert vol.subtypes == store_vols[vol.id]["subtypes"]
    with pytest.raises(IchbenchError, match="not in fold 1"):
        list(fold.volumes(["no_such_volume"]))
    assert result["own_finetuning"] and result["method_info"] == {"knob": 7}
    assert result["history"] == [{"epoch": 1, "loss": 0.5, "lr": 0.1}] and result["model"] is None


def test_predictions_are_scored_like_the_shared_recipes(phantom_store, tmp_path):
    truth = truth_of(phantom_store)
    oracle, _ = run(OwnLoop(lambda fold, v: truth[v.id]), phantom_store, tmp_path / "oracle")
    blank, split = run(OwnLoop(empty), phantom_store, tmp_path / "blank")
    test = split["folds"][0]["test"]
    assert [r["volume_id"] for r in oracle["volumes"]] == test
    assert all(r["dice"] == 1.0 and r["fp"] == r["fn"] == 0 for r in oracle["volumes"])
    spacing = {v["id"]: v["spacing"] for v in open_store(phantom_store).volumes}
    for r in blank["volumes"]:
        vid = r["volume_id"]
        want = api.per_volume_row(vid, np.zeros_like(truth[vid]), truth[vid], spacing[vid],
                                  r["subtypes"], has_ich=r["has_ich"])
        # plus the digest of the predicted mask, as the shared recipe's rows carry it
        assert r == {**want, "pred_sha256": volume_digest(np.zeros_like(truth[vid]))}
    assert blank["predictions_sha256"] == fold_digest(blank["volumes"])
    assert blank["summary"] == api.summarize(blank["volumes"], nsd_mm=1.0)   # the run's eval.nsd_mm
    saved = json.loads((tmp_path / "blank" / "fold_0" / "result.json").read_text())
    assert saved["summary"] == blank["summary"] and saved["split_hash"] == split["hash"]
    # the same keys as a result of the shared recipe, so the driver and the leaderboard take it
    for key in ("method", "fold", "k", "split_hash", "store_fingerprint", "train_volumes",
                "test_volumes", "config", "finetune_hash", "history", "volumes", "summary",
                "model"):
        assert key in saved


def each_test_volume(fold, make):
    return {v.id: make(v) for v in fold.volumes(fold.test_ids)}


@pytest.mark.parametrize("answer, message", [
    (lambda f: api.FoldOutput(predictions={}),
     r"own_loop_test.finetune_fold: no prediction for test volumes"),
    (lambda f: api.FoldOutput(predictions={v: np.zeros((2, 64, 64), bool) for v in f.test_ids}),
     r"prediction for \S+ has shape \(2, 64, 64\), the volume is"),
    (lambda f: api.FoldOutput(predictions=each_test_volume(f, lambda v: np.full(v.hu.shape, 0.7))),
     "is not a binary mask"),
    (lambda f: {"predictions": {}}, "returned dict, expected an ichbench.api.FoldOutput"),
    (lambda f: api.FoldOutput(predictions=each_test_volume(f, lambda v: np.zeros(v.hu.shape, bool)),
                              model=f.work_dir / "missing.pt"),
     "names this model file, but it does not exist"),
])
def test_a_malformed_answer_is_one_line_naming_the_method(phantom_store, tmp_path, answer, message):
    with pytest.raises(IchbenchError, match=message) as err:
        run(OwnLoop(empty, output=answer), phantom_store, tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "fold_0" / "result.json").exists()


def test_fold_task_gives_the_fold_a_run_would(phantom_home, registry, tmp_path):
    m = OwnLoop(empty)
    hooks = type("P", (), {"register_methods": api.hookimpl(lambda register: register(m))})
    registry.add_plugin(hooks, "own-loop", distribution="test-own-loop", version="0.0")
    fold = api.fold_task("own_loop_test", "phantom", 2, phantom_home, work_dir=tmp_path / "w")
    split = split_for_store(open_store(api.store_path(phantom_home, "phantom", "segmentation")), 5)
    assert fold.split["hash"] == split["hash"] and fold.test_ids == split["folds"][2]["test"]
    assert fold.cfg.finetune.params == {"knob": 7} and fold.work_dir == tmp_path / "w"
