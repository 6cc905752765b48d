"""Entries of the subtypes task (issue 23 §2): `leaderboard submit` of a run whose rows carry
per-class results writes an entry that keeps them, validation re-scores and checks them against the
union's counts, reproduce compares them where the label maps are bit-identical, and the page and
README show a per-class table. Rows come from real label maps scored by `evaluate.classes`; runs
live in a real MLflow SQLite store."""

from __future__ import annotations

import copy
import json
import math
import shutil
import statistics

import mlflow
import pytest
from typer.testing import CliRunner

from ichbench import SUBTYPES
from ichbench.cli.leaderboard import app
from ichbench.evaluate import infjson
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.classes import reproduction_failures
from ichbench.leaderboard.page import _traintest_cell
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.render import render
from ichbench.leaderboard.test_sets import build, matrix_items
from ichbench.splits import make_split
from tests.test_leaderboard_support import (SUBTYPES_CONFIG, class_rows, fake_folds, flags_of, hand_summary,
                                            make_entry, recorded_world, recount, surface_for,
                                            with_external, write_entry)

runner = CliRunner()
K = 3


def _oracle(rows: list[dict]) -> dict:
    """Per class, the mean Dice over all rows and over the rows whose truth holds the class, from
    the Dice `evaluate.classes` computed on the label maps (not from the entry's counts)."""
    out = {}
    for n in SUBTYPES:
        everyone = [r["classes"][n]["dice"] for r in rows]
        present = [r["classes"][n]["dice"] for r in rows if r["classes"][n]["true_ml"] > 0]
        out[n] = {"all": statistics.fmean(everyone), "present": statistics.fmean(present) if present else None,
                  "n": len(present)}
    return out


def _summary(rows: list[dict]) -> dict:
    """summary.json as a run logs it: the union's groups, the NSD tolerance and the per-class means."""
    out = hand_summary(rows)
    out["nsd_mm"] = 1.0
    out["classes"] = {n: {"all": {"dice": {"mean": o["all"]}}, "present": {"dice": {"mean": o["present"]}}}
                      for n, o in _oracle(rows).items()}
    return out


def _truth_moved(rows):   # the union gains two true voxels no class holds
    r = next(r for r in rows if r["has_ich"])
    recount(r, r["tp"], r["fp"], r["fn"] + 2)
    return r["volume_id"], "classes (iph, ivh, sah, sdh, edh)", "TP + FN do not sum"


def _pred_moved(rows):    # the union loses three predicted voxels the classes still hold
    r = next(r for r in rows if r["fp"] >= 3)
    recount(r, r["tp"], r["fp"] - 3, r["fn"])
    return r["volume_id"], "classes (iph, ivh, sah, sdh, edh)", "TP + FP do not sum"


def _unknown_class(rows):  # every row scores a class the phantom does not have (zero counts: sums hold)
    for r in rows:
        r["classes"]["chronic"] = {"tp": 0, "fp": 0, "fn": 0, "pred_ml": 0.0, "true_ml": 0.0,
                                   **surface_for(0, 0, 0, 0.0)}
    return None, "class chronic", "is not a class of dataset phantom"


def _class_surface(rows):  # a class absent from both masks with a finite, nonzero HD
    r, n = next((r, n) for r in rows for n in SUBTYPES if r["classes"][n]["empty"] == "both")
    r["classes"][n].update(hd_mm=3.0, hd95_mm=2.0)
    return r["volume_id"], f"class {n}", "HD, HD95 are not 0 with NSD 1"


CORRUPT = {"truth": _truth_moved, "pred": _pred_moved, "unknown": _unknown_class, "surface": _class_surface}


def _log(exp, flags, fingerprint, rows, config=SUBTYPES_CONFIG, external=None) -> str:
    split = make_split("phantom", flags, K)
    fold_of = {v: f["fold"] for f in split["folds"] for v in f["test"]}
    rows = [{**r, "fold": fold_of[r["volume_id"]]} for r in rows]
    tags = {**({"ichbench.test_on": SHIFTED} if external else {}),
            "ichbench.kind": "parent", "ichbench.method": "unet_mixed", "ichbench.dataset": "phantom",
            "ichbench.profile": "smoke", "ichbench.dataset_fingerprint": fingerprint,
            "ichbench.split_hash": split["hash"], "ichbench.k": str(K), "ichbench.version": "0.1.0",
            "ichbench.plugin_dist": "ichbench", "ichbench.plugin_version": "0.1.0",
            "ichbench.git_commit": "0123456789abcdef", "ichbench.hardware": "1x test CPU", "ichbench.gpu_hours": "0.1"}
    with mlflow.start_run(experiment_id=exp, tags=tags) as run:
        mlflow.log_dict(infjson.encode(rows), "per_volume.json")
        mlflow.log_dict(config, "config.json")
        mlflow.log_dict(split, "split.json")
        mlflow.log_dict(infjson.encode(_summary(rows)), "summary.json")
        mlflow.log_dict(fake_folds(run.info.run_id, K), "folds.json")
        if external:   # as orchestrate.external logs a --test-on set
            mlflow.log_dict(infjson.encode(external), f"external/{SHIFTED}.json")
    return run.info.run_id


SHIFTED = "phantom_shifted"   # carries the phantom's class map, so a subtypes run tests on it
SHIFTED_FLAGS = {f"SH{i:03d}": i % 3 != 1 for i in range(5)}


def _test_set() -> dict:
    """external/phantom_shifted.json of a subtypes run: the ensemble's and each fold model's rows,
    scored from real label maps (`class_rows`)."""
    return {"dataset": SHIFTED, "store_fingerprint": "e" * 64, "ensemble": class_rows(SHIFTED_FLAGS, 11),
            "folds": {str(f): class_rows(SHIFTED_FLAGS, 12 + f) for f in range(K)}}


def _corrupt_test_set(art: dict) -> tuple[str, str]:
    """One class count of fold model 1 on the test set: one more FN (its mL and surface metrics following,
    as a careful forger writes them), so the classes' true voxels are no longer the union's. (volume, class)"""
    r, n = next((r, n) for r in art["folds"]["1"] for n in SUBTYPES if r["classes"][n]["tp"] > 0)
    tp, fp, fn = r["classes"][n]["tp"], r["classes"][n]["fp"], r["classes"][n]["fn"] + 1
    r["classes"][n].update(tp=tp, fp=fp, fn=fn, pred_ml=(tp + fp) * 0.001, true_ml=(tp + fn) * 0.001,
                           **{k: "inf" if v == math.inf else v for k, v in surface_for(tp, fp, fn, 5.0).items()})
    return r["volume_id"], n


@pytest.fixture(scope="module")
def tracking(tmp_path_factory, mlflow_template):
    base, home, res, template = recorded_world(tmp_path_factory, "lb-classes", K)
    flags = flags_of(res)
    shutil.copy(mlflow_template, base / "mlflow.db")   # migrated once a session
    uri = f"sqlite:///{base / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    runs, found = {}, {}
    try:
        exp = mlflow.create_experiment("ichbench/phantom", artifact_location=(base / "artifacts").as_uri())
        good = class_rows(flags, 0)
        runs["good"] = _log(exp, flags, res.fingerprint, good)
        for name, corrupt in CORRUPT.items():
            rows = copy.deepcopy(good)
            found[name] = (corrupt(rows), rows)
            runs[name] = _log(exp, flags, res.fingerprint, rows)
        runs["tested"] = _log(exp, flags, res.fingerprint, good, external=_test_set())
        bad = _test_set()
        found["tested"] = _corrupt_test_set(bad)
        runs["tested_bad"] = _log(exp, flags, res.fingerprint, good, external=bad)
    finally:
        mlflow.set_tracking_uri(before)
    return {"uri": uri, "runs": runs, "template": template, "flags": flags, "fingerprint": res.fingerprint,
            "rows": good, "corrupt": found}


@pytest.fixture
def folder(tracking, tmp_path):
    dst = tmp_path / "leaderboard"
    shutil.copytree(tracking["template"].root, dst)
    return Folder(dst)


def _submit(tracking, folder, name):
    return runner.invoke(app, ["submit", "--tracking-uri", tracking["uri"], "--root", str(folder.root),
                               "--run-id", tracking["runs"][name]])


def _snapshot(folder: Folder) -> dict:
    return {p.relative_to(folder.root): p.read_bytes() for p in sorted(folder.root.rglob("*")) if p.is_file()}


def test_a_subtypes_run_submits_an_entry_with_its_classes_that_validates(tracking, folder):
    out = _submit(tracking, folder, "good")
    assert out.exit_code == 0, out.output
    [path] = folder.root.glob("entries/phantom/unet_mixed--*.json")
    e = json.loads(path.read_text())
    assert e["schema_version"] == 3 and e["task"] == "subtypes" and e["classes"] == list(SUBTYPES)
    run_rows = {r["volume_id"]: r for r in tracking["rows"]}
    for r in e["per_volume"]:
        mine = run_rows[r["volume_id"]]
        assert r["pred_labels_sha256"] == mine["pred_labels_sha256"]
        for n in SUBTYPES:   # the counts and mL as the label maps gave them; ratios are not stored
            c = r["classes"][n]
            assert {k: c[k] for k in ("tp", "fp", "fn", "pred_ml", "true_ml")} == \
                {k: mine["classes"][n][k] for k in ("tp", "fp", "fn", "pred_ml", "true_ml")}
            assert "dice" not in c and c["empty"] == mine["classes"][n]["empty"]
    for n, o in _oracle(tracking["rows"]).items():   # re-scored from the counts, as evaluate.classes scored
        s = e["class_summary"][n]
        assert s["all"]["n"] == len(run_rows) and s["present"]["n"] == o["n"]
        assert s["all"]["dice"]["mean"] == pytest.approx(o["all"], abs=1e-12)
        assert (s["present"]["dice"]["mean"] is None) == (o["present"] is None)
        assert o["present"] is None or s["present"]["dice"]["mean"] == pytest.approx(o["present"], abs=1e-12)
    check = runner.invoke(app, ["validate", "--root", str(folder.root)])
    assert check.exit_code == 0 and "2 file(s) checked, 0 rejected" in check.output, check.output


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_per_class_results_the_union_contradicts_are_refused_in_one_line(tracking, folder, case):
    (volume, cls, rule), rows = tracking["corrupt"][case]
    before = _snapshot(folder)
    out = _submit(tracking, folder, case)
    assert out.exit_code != 0
    [line] = out.output.splitlines()   # one REJECT line, no traceback
    assert line.startswith(f"REJECT MLflow run {tracking['runs'][case]}: "), line
    assert rule in line and cls in line and (volume is None or volume in line), line
    assert _snapshot(folder) == before
    # the same rows as an entry in the folder: `validate` rejects that file in one line
    entry = make_entry(tracking["flags"], rows=rows, k=K, fingerprint=tracking["fingerprint"], method="unet_mixed",
                       config=SUBTYPES_CONFIG)
    path = write_entry(folder, entry)
    check = runner.invoke(app, ["validate", "--root", str(folder.root)])
    rejects = [x for x in check.output.splitlines() if x.startswith("REJECT")]
    assert check.exit_code != 0 and len(rejects) == 1, check.output
    assert path.name in rejects[0] and rule in rejects[0] and cls in rejects[0]
    assert volume is None or volume in rejects[0]


def _entry(tracking, **kw) -> dict:
    return make_entry(tracking["flags"], rows=copy.deepcopy(tracking["rows"]), k=K, method="unet_mixed",
                      fingerprint=tracking["fingerprint"], **{"config": SUBTYPES_CONFIG, **kw})


def _problems(tracking, entry) -> list[str]:
    data = canon.load(tracking["template"])
    return check_entry(entry, canon.expectation(data, "phantom"))


def test_per_class_keys_belong_to_subtypes_entries_of_version_3(tracking):
    assert _problems(tracking, _entry(tracking)) == []
    binary_config = _entry(tracking, config={"finetune": {"epochs": 1}})
    assert _problems(tracking, binary_config) == ["task subtypes but its config ran finetune.task = binary"]
    # a binary entry whose rows carry classes: the schema names the row and the key
    binary = _entry(tracking)
    del binary["task"], binary["classes"], binary["class_summary"]
    problems = _problems(tracking, binary)
    assert problems[-1].endswith("more problems"), problems
    assert all("only rows of an entry of task subtypes carry" in p for p in problems[:-1]), problems
    assert "per_volume/0/classes" in problems[0]
    old = _entry(tracking)
    old["schema_version"] = 2
    problems = _problems(tracking, old)
    assert any("holds task, which only entries of schema version 3 carry" in p for p in problems), problems
    # the stored per-class summary is checked against the counts, as the binary one is
    edited = _entry(tracking)
    edited["class_summary"]["sah"]["all"]["dice"]["mean"] += 0.01
    [line] = _problems(tracking, edited)
    assert line.startswith("class_summary sah.all.dice.mean = ") and "per-volume counts give" in line
    twice = _entry(tracking)
    twice["classes"] = ["iph", "iph", "sah", "sdh", "edh"]
    assert any("non-unique" in p for p in _problems(tracking, twice))


def test_reproduce_compares_classes_where_the_label_map_is_bit_identical(tracking):
    entry = _entry(tracking)
    again = copy.deepcopy(tracking["rows"])
    assert reproduction_failures(entry, again) == []
    r = next(r for r in again if r["classes"]["sah"]["tp"] > 0)
    r["classes"]["sah"]["tp"] -= 1
    [line] = reproduction_failures(entry, again)
    assert f"volume {r['volume_id']}" in line and "sah tp" in line and "bit-identical" in line
    r["pred_labels_sha256"] = "0" * 64   # another map: its classes may differ, not compared
    assert reproduction_failures(entry, again) == []
    binary = make_entry(tracking["flags"], k=K)
    assert reproduction_failures(binary, again) == []


def test_readme_and_page_show_the_per_class_table_of_subtypes_entries_only(tracking, folder):
    write_entry(folder, _entry(tracking, run_id="c" * 32))
    write_entry(folder, make_entry(tracking["flags"], k=K, run_id="b" * 32, fingerprint=tracking["fingerprint"]))
    render(folder)
    readme = folder.readme.read_text()
    table = readme[readme.index("Per class (entries of task subtypes"):].split("\n\n")[1].splitlines()
    assert table[0].startswith("| Method | IPH Dice [%] (volumes with it) | IPH Dice [%] (all volumes) |")
    assert table[0].endswith("| Macro Dice [%] (volumes with it) | Macro Dice [%] (all volumes) |")
    [row] = table[2:]   # the subtypes entry; the binary one and the paper's rows have no classes
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "run cccccccc" in cells[0]
    oracle = _oracle(tracking["rows"])
    for i, n in enumerate(SUBTYPES):
        present, everyone = cells[1 + 2 * i], cells[2 + 2 * i]
        want = "–" if oracle[n]["present"] is None else f"{100 * oracle[n]['present']:.2f}"
        assert present.startswith(want) and present.endswith(f"(n = {oracle[n]['n']})"), (n, present)
        assert everyone.startswith(f"{100 * oracle[n]['all']:.2f} ± "), (n, everyone)
    means = [100 * o["present"] for o in oracle.values() if o["present"] is not None]
    assert cells[-2] == f"{statistics.fmean(means):.2f} ({len(means)} classes)"
    assert cells[-1] == f"{statistics.fmean(100 * o['all'] for o in oracle.values()):.2f} (5 classes)"
    page = folder.index.read_text()
    assert page.count('id="classes-') == 1 and 'id="classes-phantom"' in page


def _relabel(row: dict, c: str, d: str) -> dict:
    """`row` with one true voxel of class c predicted as class d instead: the union unchanged, c one TP
    fewer and one FN more, d one FP more, mL and surface metrics following (`surface_for`)."""
    for name, (dtp, dfp, dfn) in ((c, (-1, 0, 1)), (d, (0, 1, 0))):
        k = row["classes"][name]
        tp, fp, fn = k["tp"] + dtp, k["fp"] + dfp, k["fn"] + dfn
        row["classes"][name] = {"tp": tp, "fp": fp, "fn": fn, "pred_ml": (tp + fp) * 0.001,
                                "true_ml": (tp + fn) * 0.001, **{k: "inf" if v == math.inf else v
                                                                 for k, v in surface_for(tp, fp, fn, 5.0).items()}}
    return row


def test_a_subtypes_entry_over_seeds_checks_and_shows_every_seeds_classes(tracking):
    from ichbench.leaderboard.class_table import row_classes
    entry = _entry(tracking)
    again = copy.deepcopy(entry["per_volume"])
    r = next(r for r in again if r["classes"]["sah"]["tp"] > 0)
    _relabel(r, "sah", "ivh")
    entry["seeds"] = {"pretrain": "shared", "per_volume": [dict(x, seed=4) for x in again],
                      "runs": [{"seed": 0, "mlflow_run_id": "b" * 32, "folds": entry["folds"]},
                               {"seed": 4, "mlflow_run_id": "4" * 32, "folds": fake_folds("seed4", K)}]}
    assert _problems(tracking, entry) == []
    # the page: each volume's class Dice averaged over the two seeds, then over volumes
    dice = {n: [statistics.fmean(100 * (2 * x["classes"][n]["tp"] + 1) / (
        2 * x["classes"][n]["tp"] + x["classes"][n]["fp"] + x["classes"][n]["fn"] + 1) for x in pair)
        for pair in zip(entry["per_volume"], again)] for n in ("sah", "ivh")}
    cells = row_classes(entry)["cells"]
    assert cells["sah"]["all"]["mean"] == pytest.approx(statistics.fmean(dice["sah"]), abs=1e-9)
    assert cells["ivh"]["all"]["mean"] == pytest.approx(statistics.fmean(dice["ivh"]), abs=1e-9)
    # another seed's rows are held to the same rules, named by seed and volume
    wrong = next(x for x in entry["seeds"]["per_volume"] if x["volume_id"] == r["volume_id"])
    wrong["classes"]["sah"]["fn"] += 1
    problems = _problems(tracking, entry)
    assert any(f"seed 4 volume {r['volume_id']}" in p and "TP + FN do not sum" in p for p in problems), problems


def test_a_subtypes_entrys_test_set_keeps_its_classes_checked_and_shown(tracking, folder):
    out = _submit(tracking, folder, "tested")
    assert out.exit_code == 0, out.output
    [path] = folder.root.glob("entries/phantom/unet_mixed--*.json")
    e = json.loads(path.read_text())
    [item] = e["external"]
    art = _test_set()
    logged = {("ensemble", r["volume_id"]): r for r in art["ensemble"]}
    logged.update({(int(f), r["volume_id"]): r for f, rows in art["folds"].items() for r in rows})
    kept = [(("ensemble", r["volume_id"]), r) for r in item["per_volume"]]
    kept += [((r["fold"], r["volume_id"]), r) for r in item["fold_rows"]]
    assert len(kept) == len(logged) == 4 * len(SHIFTED_FLAGS)
    for key, r in kept:   # every row its label map's digest and per-class counts, ratios not stored
        mine = logged[key]
        assert r["pred_labels_sha256"] == mine["pred_labels_sha256"]
        assert {n: {k: c[k] for k in ("tp", "fp", "fn", "true_ml")} for n, c in r["classes"].items()} == \
            {n: {k: mine["classes"][n][k] for k in ("tp", "fp", "fn", "true_ml")} for n in SUBTYPES}
    check = runner.invoke(app, ["validate", "--root", str(folder.root)])
    assert check.exit_code == 0 and "0 rejected" in check.output, check.output
    # the train × test matrix: the test set's macro Dice over classes, from the Dice evaluate.classes gave
    [(_, _, diag, cells)] = matrix_items({path.name: e})
    for c, rows in ((cells[SHIFTED], art["ensemble"]), (diag, tracking["rows"])):
        means = [o["present"] for o in _oracle(rows).values() if o["present"] is not None]
        assert c["macro_dice_pct"] == pytest.approx(100 * statistics.fmean(means), abs=1e-9)
        assert _traintest_cell(c)["text"].endswith(f"; macro {100 * statistics.fmean(means):.1f}")
    # a binary entry's test set has no classes: union Dice only
    binary = with_external(make_entry(tracking["flags"], k=K, fingerprint=tracking["fingerprint"]), SHIFTED_FLAGS)
    [(_, _, diag, cells)] = matrix_items({"b.json": binary})
    assert diag["macro_dice_pct"] is None and cells[SHIFTED]["macro_dice_pct"] is None
    # a subtypes entry's test-set rows carry classes, a binary entry's never do (the schema names the row)
    del e["external"][0]["fold_rows"][2]["classes"]
    assert _problems(tracking, e) == ["schema: at external/0/fold_rows/2: 'classes' is a required property"]
    binary["external"][0]["per_volume"][1]["classes"] = item["per_volume"][1]["classes"]
    [line] = _problems(tracking, binary)
    assert line.startswith("schema: at external/0/per_volume/1/classes: holds classes, which only rows"), line


def test_a_corrupted_test_set_class_count_is_refused_in_one_line(tracking, folder):
    (volume, cls), rule = tracking["corrupt"]["tested"], "TP + FN do not sum to the union's TP + FN"
    before = _snapshot(folder)
    out = _submit(tracking, folder, "tested_bad")
    assert out.exit_code != 0
    [line] = out.output.splitlines()   # one REJECT line, no traceback
    assert line.startswith(f"REJECT MLflow run {tracking['runs']['tested_bad']}: "), line
    assert f"external {SHIFTED}: classes (" in line and rule in line and f"fold 1 volume {volume}" in line, line
    assert _snapshot(folder) == before
    # the same test set in an entry in the folder: `validate` rejects that file in one line, writing nothing
    art = _test_set()
    _corrupt_test_set(art)
    entry = {**_entry(tracking), "external": [build(SHIFTED, "e" * 64, art)]}
    path = write_entry(folder, entry)
    before = _snapshot(folder)
    check = runner.invoke(app, ["validate", "--root", str(folder.root)])
    rejects = [x for x in check.output.splitlines() if x.startswith("REJECT")]
    assert check.exit_code != 0 and len(rejects) == 1, check.output
    assert path.name in rejects[0] and rule in rejects[0] and f"fold 1 volume {volume}" in rejects[0]
    assert _snapshot(folder) == before
    # a class's mL off its counts names the class; a test set of other classes is named as such
    entry = {**_entry(tracking), "external": [build(SHIFTED, "e" * 64, _test_set())]}
    r = entry["external"][0]["per_volume"][0]
    r["classes"][cls]["true_ml"] += 0.5
    lines = _problems(tracking, entry)   # its mL rule and the surface rule of RVD from the mL
    assert any(f"class {cls}: pred_ml or true_ml" in line for line in lines), lines
    assert all(line.startswith(f"external {SHIFTED}: class {cls}: ") and
               line.endswith(f"ensemble volume {r['volume_id']}") for line in lines), lines
    entry["external"] = [build("rsna", "e" * 64, _test_set())]
    assert _problems(tracking, entry) == [
        "external rsna: its classes (none: a binary dataset) are not the entry's (iph, ivh, sah, sdh, edh) in id order"]
