"""External test sets (`ichbench run --test-on`, issue 25 §1) without training: the entry field's
validation, the train × test matrix, the refusals made before anything trains, the cache, and
the shifted phantom. The end-to-end run is in test_leaderboard_reproduce (its session run)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from ichbench.errors import IchbenchError
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.orchestrate import external
from ichbench.evaluate.matrix import from_runs
from tests.test_leaderboard_support import counts_for, make_entry, with_external

FLAGS = {f"PH{i:03d}": i % 2 == 0 for i in range(6)}
UNKNOWN = canon.Expectation("phantom", known=False)


def _problems(entry):
    return [p for p in check_entry(entry, UNKNOWN) if "no record in canonical.json" not in p]


@pytest.fixture(scope="module")
def entry():
    return with_external(make_entry(FLAGS, k=2), FLAGS)


def test_an_entry_with_external_results_is_valid(entry):
    assert _problems(entry) == []


def test_external_summaries_are_rescored_from_the_counts(entry):
    bad = copy.deepcopy(entry)
    bad["external"][0]["summary"]["all"]["dice"]["mean"] += 0.01
    assert any(p.startswith("external phantom_shifted ensemble: summary all.dice.mean") for p in _problems(bad))
    bad = copy.deepcopy(entry)
    bad["external"][0]["fold_rows"][0]["tp"] += 1   # a fold model's count: its fold mean no longer adds up
    assert any(p.startswith("external phantom_shifted fold mean: summary") for p in _problems(bad))


def test_every_fold_model_scores_the_ensembles_volumes(entry):
    bad = copy.deepcopy(entry)
    bad["external"][0]["fold_rows"].pop()           # fold 1 missed a volume
    assert any("fold model(s) [1] did not score exactly the ensemble's volumes" in p for p in _problems(bad))
    bad = copy.deepcopy(entry)
    bad["external"][0]["dataset"]["name"] = "phantom"
    assert any("the entry's own dataset is its cross-validation" in p for p in _problems(bad))


def test_older_schema_versions_cannot_carry_external(entry):
    old = {**copy.deepcopy(entry), "schema_version": 2}
    assert any(p.startswith("schema: at (top level)") for p in _problems(old))


def test_the_runs_matrix_has_cross_validation_on_the_diagonal():
    ext = {"phantom_shifted": {"folds": {"dice_all": 0.5}, "ensemble": {"dice_all": 0.6, "n": 20}}}
    rows = [{"run_id": "new", "method": "m", "dataset": "phantom", "dice_all": 0.7, "external": ext},
            {"run_id": "old", "method": "m", "dataset": "phantom", "dice_all": 0.1},   # older: not shown
            {"run_id": "b", "method": "m", "dataset": "bhsd", "dice_all": 0.3}]
    m = from_runs(rows)["m"]
    assert m["phantom"]["phantom"]["dice_all"] == 0.7 and m["phantom"]["phantom"]["kind"] == "cross-validation"
    assert m["phantom"]["phantom_shifted"] == {"dice_all": 0.6, "kind": "external ensemble", "n": 20,
                                               "fold_mean": 0.5, "run_id": "new"}
    assert list(m["bhsd"]) == ["bhsd"]


def _stores(classes=None):
    return SimpleNamespace(class_names=classes, arrays=("images", "masks"), path="/s", fingerprint="f" * 64)


def test_refusals_before_anything_trains(home):
    method = SimpleNamespace(name="unet_mixed", owns_finetuning=False)
    cfg = SimpleNamespace(dataset="phantom", finetune=SimpleNamespace())
    with pytest.raises(IchbenchError, match="that is the dataset the run trains on"):
        external.plan_tests(home, method, cfg, _stores(), ["phantom"])
    with pytest.raises(IchbenchError, match="'rsna' has no segmentation store"):
        external.plan_tests(home, method, cfg, _stores(), ["rsna"])
    with pytest.raises(IchbenchError, match="unknown dataset 'nosuch'"):
        external.plan_tests(home, method, cfg, _stores(), ["nosuch"])
    own = SimpleNamespace(name="nnunet_2d", owns_finetuning=True)
    with pytest.raises(IchbenchError, match="trains its own models"):
        external.plan_tests(home, own, cfg, _stores(), ["phantom_shifted"])
    with pytest.raises(IchbenchError, match="names no dataset"):
        external.parse_test_on(" , ")


def test_cached_scores_are_keyed_by_store_and_models(tmp_path):
    plan = SimpleNamespace(run_dir=tmp_path, fold_dir=lambda f: tmp_path / f"fold_{f}")
    test = external.TestSet("phantom_shifted", SimpleNamespace(fingerprint="a" * 64))
    rows = counts_for(FLAGS, 0)
    scored = {"folds": {0: rows, 1: rows}, "ensemble": rows}
    digests = {0: "0" * 64, 1: "1" * 64}
    assert external.cached(plan, test, digests) is None
    external.save(plan, test, digests, scored)
    again = external.cached(plan, test, digests)
    assert again["ensemble"] == rows and again["folds"] == {0: rows, 1: rows}
    assert external.cached(plan, test, {0: "0" * 64, 1: "2" * 64}) is None            # fold 1 retrained
    other = external.TestSet("phantom_shifted", SimpleNamespace(fingerprint="b" * 64))  # store re-ingested
    assert external.cached(plan, other, digests) is None


def test_the_shifted_phantom_is_deterministic_and_shifted():
    from ichbench.datasets.phantom.generator import generate_volume
    from ichbench.datasets.phantom.shifted import FOV_ZOOM, SLICE_MM, shift_volume
    vol = generate_volume(3, slices=6, size=48, subtypes=["sdh"])
    a, b = shift_volume(vol), shift_volume(vol)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.mask, b.mask)
    assert a.spacing == (SLICE_MM, vol.spacing[1] / FOV_ZOOM, vol.spacing[2] / FOV_ZOOM)
    assert 0 < a.mask.sum() < vol.mask.sum()           # the head (and its bleed) is smaller in the field
    assert a.mask.any(axis=(1, 2)).tolist() == a.slice_labels.any(axis=1).astype(bool).tolist()
    brain = lambda v: float(np.median(v.hu[v.brain & ~v.mask]))   # noqa: E731 (the zoom blurs skull into edges)
    assert brain(a) - brain(vol) > 3                         # the HU calibration shifted the parenchyma
