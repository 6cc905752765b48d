"""Surface metrics on the leaderboard (issue 22 §2): how an entry's HD, HD95 and NSD are checked
(they cannot be re-scored from counts), how they are shown, and the "predicts nothing" floor.
Pure functions on hand-made entries: no store, no browser (test_leaderboard_browser.py renders them)."""

from __future__ import annotations

import copy
import math
import statistics

import pytest

from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.floor import floor, understatement
from ichbench.leaderboard.model import build
from ichbench.leaderboard.reproductions import surface_failures
from ichbench.leaderboard.schema import SURFACE_KEYS, entry_problems
from ichbench.leaderboard.surface_checks import surface_problems
from tests.test_leaderboard_support import make_entry, surface_for

# V0..V5: even ones with ICH; k = 2. (tp, fp, fn, HD mm): one row under each empty-case rule
FLAGS = {f"V{i}": i % 2 == 0 for i in range(6)}
COUNTS = {"V0": (100, 10, 20, 5.0),   # both hold voxels
          "V1": (0, 0, 0, 0.0),       # both empty
          "V2": (0, 0, 50, 0.0),      # the prediction empty
          "V3": (0, 7, 0, 0.0),       # the truth empty
          "V4": (80, 0, 0, 0.0),      # the same masks
          "V5": (0, 0, 0, 0.0)}


def entry(**kw) -> dict:
    rows = [{"volume_id": v, "tp": tp, "fp": fp, "fn": fn, "pred_ml": (tp + fp) * 0.001,
             "true_ml": (tp + fn) * 0.001, "subtypes": [], **surface_for(tp, fp, fn, hd)}
            for v, (tp, fp, fn, hd) in COUNTS.items()]
    return make_entry(FLAGS, k=2, rows=rows, **kw)


def row(e: dict, pred: str) -> dict:
    """The first row of `e` whose empty-case label is `pred`."""
    return next(r for r in e["per_volume"] if r["empty"] == pred)


def test_a_consistent_entry_has_no_surface_problems_and_older_ones_none_to_check():
    e = entry()
    assert e["schema_version"] == 3 and e["nsd_mm"] == 1.0
    assert [r["empty"] for r in e["per_volume"]] == ["none", "both", "pred", "truth", "none", "both"]
    assert any(r["hd_mm"] == "inf" for r in e["per_volume"])                   # infinity as JSON holds it
    assert surface_problems(e) == [] and entry_problems(e) == []
    old = {**{k: v for k, v in e.items() if k != "nsd_mm"}, "schema_version": 2,
           "per_volume": [{k: v for k, v in r.items() if k not in SURFACE_KEYS} for r in e["per_volume"]]}
    assert entry_problems(old) == [] and surface_problems(old) == []


def _set(e, pred, **values):
    r = row(e, pred)
    r.update(values)
    return r["volume_id"]


# Each rule of surface_checks.py, broken on one row of an otherwise consistent entry; the line
# names the volume. (Mutation check: deleting a rule's branch in `_row_breaks` fails its case.)
@pytest.mark.parametrize("pred, values, rule", [
    ("none", {"empty": "both"}, "`empty` disagrees with the counts"),
    ("pred", {"hd_mm": 12.0}, "exactly one mask is empty but HD and HD95 are not \"inf\" with NSD 0"),
    ("pred", {"nsd": 0.25}, "exactly one mask is empty but HD and HD95 are not \"inf\" with NSD 0"),
    ("both", {"hd95_mm": 3.0}, "prediction and truth are the same (FP = FN = 0, or both empty) but HD, HD95"),
    ("both", {"nsd": 0.0}, "prediction and truth are the same"),
    ("none", {"hd_mm": "inf", "hd95_mm": "inf"}, "both masks hold voxels but HD or HD95 is infinite"),
    ("none", {"hd95_mm": 1e3}, "HD95 is larger than HD"),
    ("none", {"nsd": 1.0}, "NSD disagrees with HD and nsd_mm (NSD = 1 exactly where HD <= nsd_mm)"),
    ("none", {"hd_mm": 0.5, "hd95_mm": 0.4}, "NSD disagrees with HD and nsd_mm"),   # NSD 0.5 with HD < 1 mm
    ("none", {"pred_ml": 0.0}, "pred_ml and true_ml disagree with the counts"),
    ("none", {"abs_rvd": 0.0}, "rvd, abs_rvd, vol_err_ml or abs_vol_err_ml is not what pred_ml and true_ml give"),
    ("none", {"vol_err_ml": 1.0}, "rvd, abs_rvd, vol_err_ml or abs_vol_err_ml"),
])
def test_each_consistency_rule_refuses_naming_the_volume(pred, values, rule):
    e = entry()
    vid = _set(e, pred, **values)
    problems = surface_problems(e)
    assert len([p for p in problems if rule in p]) == 1, problems
    assert next(p for p in problems if rule in p).endswith(f": {vid}")
    # and validation says so: the rules run inside check_entry
    lines = check_entry(e, canon.Expectation("phantom", known=False))
    assert any(rule in line for line in lines), lines


def test_ml_of_another_voxel_volume_is_refused():
    """pred_ml and true_ml come from one mask grid: their ratio is the ratio of the counts."""
    e = entry()
    r = row(e, "none")
    r["pred_ml"] *= 1.5            # RVD and errors made to agree, so only the voxel volume betrays it
    r["vol_err_ml"] = r["pred_ml"] - r["true_ml"]
    r["abs_vol_err_ml"] = abs(r["vol_err_ml"])
    r["rvd"] = r["vol_err_ml"] / r["true_ml"]
    r["abs_rvd"] = abs(r["rvd"])
    assert surface_problems(e) == [f"surface metrics: pred_ml and true_ml disagree with the counts (zero "
                                   f"exactly where TP + FP or TP + FN is, and one voxel volume for both): "
                                   f"{r['volume_id']}"]


def test_nsd_tolerance_must_be_the_configs():
    e = entry(config={"finetune": {"epochs": 1}, "eval": {"nsd_mm": 0.42}})
    assert surface_problems(e)[0] == "nsd_mm = 1.0 but its config scores NSD at eval.nsd_mm = 0.42"
    # no eval section: the default tolerance, 1 mm
    assert surface_problems(entry()) == []


@pytest.mark.parametrize("change, message", [
    (lambda e: e["per_volume"][0].update(hd_mm="Infinity"),
     "at per_volume/0/hd_mm: Infinity is neither a number within [0, 10,000] nor \"inf\""),
    (lambda e: e["per_volume"][0].update(nsd=1.5), "at per_volume/0/nsd: 1.5 is greater than the maximum of 1"),
    (lambda e: e["per_volume"][0].pop("hd95_mm"), "at per_volume/0: 'hd95_mm' is a required property"),
    (lambda e: e.pop("nsd_mm"), "'nsd_mm' is a required property"),
    (lambda e: e.update(schema_version=2), "at per_volume/0: holds nsd_mm or a row's surface metrics"),
    # an older version with only the tolerance: refused too
    (lambda e: e.update(schema_version=2, per_volume=[{k: v for k, v in r.items() if k not in SURFACE_KEYS}
                                                      for r in e["per_volume"]]),
     "at (top level): holds nsd_mm or a row's surface metrics (hd_mm, hd95_mm, nsd, rvd, abs_rvd, vol_err_ml, "
     "abs_vol_err_ml, empty), which only entries of schema version 3 carry"),
])
def test_schema_refuses_malformed_surface_metrics(change, message):
    e = entry()
    change(e)
    assert any(message in p for p in entry_problems(e)), entry_problems(e)


def _fold_record(fold, identical):
    return {"fold": fold, "predictions_identical": identical}


def test_reproduce_compares_surface_metrics_where_predictions_are_bit_identical():
    e = entry()
    rerun = copy.deepcopy(e["per_volume"])   # as the re-run logs them: floats, inf as float
    for r in rerun:
        r.update({k: math.inf if r[k] == "inf" else r[k] for k in SURFACE_KEYS})
    folds = [_fold_record(0, True), _fold_record(1, True)]
    assert surface_failures(e, rerun, folds) == []
    changed = next(r for r in rerun if r["empty"] == "none")
    changed["hd95_mm"] += 0.5
    [line] = surface_failures(e, rerun, folds)
    assert line.startswith(f"surface metrics of volume {changed['volume_id']} (fold {changed['fold']}), from "
                           f"predictions bit-identical to the entry's: hd95_mm ")
    # a fold whose predictions differ is not compared (no measured tolerance), nor an old entry
    other = [_fold_record(f["fold"], f["fold"] != changed["fold"]) for f in folds]
    assert surface_failures(e, rerun, other) == []
    old = {**e, "per_volume": [{k: v for k, v in r.items() if k not in SURFACE_KEYS} for r in e["per_volume"]]}
    assert surface_failures(old, rerun, folds) == []


# -- the "predicts nothing" floor -----------------------------------------------------------------

@pytest.mark.parametrize("n, n_ich, dice_all", [(75, 36, 0.52), (60, 36, 0.40), (51, 51, 0.0)])
def test_the_floor_is_the_healthy_share(n, n_ich, dice_all):
    """Issue 22's figures: Hssayeni 39 of 75 healthy = 52 %, the phantom's 24 of 60 = 0.40,
    Seg-CQ500 (all ICH) 0."""
    f = floor(n, n_ich)
    healthy = [1.0] * (n - n_ich) + [0.0] * n_ich
    assert f["groups"]["all"]["dice"]["mean"] == pytest.approx(dice_all, abs=1e-12)
    assert f["groups"]["all"]["dice"]["std"] == pytest.approx(statistics.stdev(healthy))
    assert f["groups"]["all"]["recall"]["mean"] == pytest.approx(dice_all, abs=1e-12)
    assert f["groups"]["all"]["precision"] == {"mean": 1.0, "std": 0.0}
    assert f["groups"]["ich"]["n"] == n_ich and f["groups"]["ich"]["dice"]["mean"] == 0.0
    for g, count in (("all", n), ("ich", n_ich)):
        hd = f["surface"][g]["hd95_mm"]
        assert hd["n"] == count and hd["n_infinite"] == n_ich   # infinite on every ICH volume
    assert f["surface"]["all"]["hd_mm"]["mean"] == (0.0 if n > n_ich else None)
    assert f["surface"]["all"]["nsd"]["mean"] == pytest.approx(dice_all, abs=1e-12)
    assert f["surface"]["ich"]["nsd"]["mean"] == 0.0 and f["surface"]["ich"]["abs_rvd"]["mean"] == 1.0
    assert floor(None, 36) is None and floor(75, None) is None


def test_the_floors_understatement_from_voxel_counts():
    # ICH volumes of 1, 3 and 9 voxels score 1/2, 1/4, 1/10 Dice when nothing is predicted
    gap = understatement([1, 3, 9], n_volumes=10)
    assert gap["all"] == pytest.approx((0.5 + 0.25 + 0.1) / 10)
    assert gap["ich"] == pytest.approx((0.5 + 0.25 + 0.1) / 3)


def test_the_floor_is_shown_apart_from_the_ranked_rows():
    e = entry(fingerprint="1" * 64)
    exp = canon.Expectation("phantom", True, n_volumes=6, n_ich_volumes=3)
    [view] = build([], {"entries/phantom/x.json": e}, {"phantom": exp}, {})
    assert view.floor is not None and view.floor.kind == "reference"
    assert view.floor.groups["all"]["dice"]["mean"] == pytest.approx(50.0)
    assert view.floor not in view.rows and all(r.kind != "reference" for r in view.rows)
    assert all(view.floor.label not in m.labels for m in view.matrices)
    # understated by at most the mean of 1/(n + 1) over the entry's own hemorrhage voxels (tp + fn)
    ich = [r["tp"] + r["fn"] for r in e["per_volume"] if r["has_ich"]]
    assert view.floor_gap["all"] == pytest.approx(sum(1 / (n + 1) for n in ich) / 6)


def test_entry_surface_stats_are_the_rows_by_hand():
    e = entry()
    [view] = build([], {"entries/phantom/x.json": e}, {}, {})
    [r] = view.entries
    ich = [x for x in e["per_volume"] if x["has_ich"]]
    finite = [x["hd95_mm"] for x in ich if x["hd95_mm"] != "inf"]
    got = r.surface["ich"]["hd95_mm"]
    assert got["n_infinite"] == sum(x["hd95_mm"] == "inf" for x in ich)
    assert got["mean"] == pytest.approx(statistics.fmean(finite))
    # |RVD| recomputed from the mL, whatever the entry's version
    rvd = [abs(x["pred_ml"] - x["true_ml"]) / x["true_ml"] for x in ich]
    assert r.surface["ich"]["abs_rvd"]["mean"] == pytest.approx(statistics.fmean(rvd))
    # volume agreement of the mL: Bland-Altman bias is the mean difference
    diffs = [x["pred_ml"] - x["true_ml"] for x in e["per_volume"]]
    assert r.agreement["bias_ml"] == pytest.approx(statistics.fmean(diffs))
    # an entry before schema version 3: HD, HD95 and NSD unknown, |RVD| still from its mL
    old = {**e, "schema_version": 2,
           "per_volume": [{k: v for k, v in x.items() if k not in SURFACE_KEYS} for x in e["per_volume"]]}
    [view] = build([], {"entries/phantom/x.json": old}, {}, {})
    [r2] = view.entries
    assert r2.surface["ich"]["hd95_mm"] is None and r2.surface["ich"]["nsd"] is None
    assert r2.surface["ich"]["abs_rvd"] == r.surface["ich"]["abs_rvd"]


def test_fold_results_scored_before_surface_metrics_are_evaluated_again(tmp_path):
    """What makes `submit`'s advice true: rerunning the same `ichbench run` does not reuse a fold
    result without surface metrics (its finished training state is evaluated again)."""
    import json
    from types import SimpleNamespace

    from ichbench.orchestrate.driver import _done_result
    plan = SimpleNamespace(fold_dir=lambda f: tmp_path, split={"hash": "h"}, store=SimpleNamespace(fingerprint="f"))
    res = {"split_hash": "h", "store_fingerprint": "f", "predictions_sha256": "d",
           "volumes": [{"volume_id": "V0", "hd_mm": "inf"}]}
    (tmp_path / "result.json").write_text(json.dumps(res))
    assert _done_result(plan, 0)["volumes"][0]["hd_mm"] == math.inf
    res["volumes"] = [{"volume_id": "V0"}]
    (tmp_path / "result.json").write_text(json.dumps(res))
    assert _done_result(plan, 0) is None
