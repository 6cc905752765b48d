"""`ichbench leaderboard reproduce` end to end: a real smoke run on Ray, logged to MLflow,
submitted as an entry, re-run from the entry and compared volume by volume."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
from typer.testing import CliRunner

from ichbench.cli.leaderboard import app
from ichbench.leaderboard.canonical import record_from_store
from ichbench.leaderboard.entries import ratios, rescore
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.render import render
from ichbench.leaderboard.reproductions import VOLUME_TOLERANCE, record_path, tolerance_for
from ichbench.leaderboard.validate import validate
from ichbench.datasets.base import IngestOptions, get_dataset
from ichbench.ingest import ingest
from ichbench.orchestrate.driver import Driver
from ichbench.orchestrate.external import plan_tests
from ichbench.orchestrate.plan import plan_method
from ichbench.tracking import Tracker, default_tracking_uri
from tests.test_leaderboard_support import copy_folder, recount

pytestmark = pytest.mark.slow   # a five-fold Ray run, then re-runs

runner = CliRunner()
# a baseline (no pretraining) with a few steps per fold: what is compared is the whole path
FAST = ["finetune.epochs=2", "finetune.steps_per_epoch=3"]
SHIFTED = {"volumes": 4, "slices": 8, "native_size": 64}


@pytest.fixture(scope="module")
def submitted(phantom_stores, ray_session, tmp_path_factory):
    """A five-fold smoke run of unet_mixed on the session phantom, submitted to a tmp
    leaderboard."""
    base = tmp_path_factory.mktemp("reproduce")
    home = base / "home"
    shutil.copytree(phantom_stores, home, symlinks=True)
    folder = copy_folder(base)
    record_from_store(folder, home, "phantom", [5])
    tracker = Tracker(default_tracking_uri(home), home)
    plan = plan_method("unet_mixed", "phantom", "smoke", home, k=5, overrides=FAST)
    first = Driver(tracker).run(plan)
    # then --test-on phantom_shifted (a small one): scored from the saved fold models, nothing retrained
    ingest(get_dataset("phantom_shifted"), home, options=IngestOptions(size=64, extra=SHIFTED))
    models = {f: (plan.fold_dir(f) / "model.pt").stat().st_mtime_ns for f in plan.folds}
    plan.tests = plan_tests(home, plan.method, plan.cfg, plan.store, ["phantom_shifted"])
    outcome = Driver(tracker).run(plan)
    assert outcome.parent_run_id == first.parent_run_id and not first.external
    assert {f: (plan.fold_dir(f) / "model.pt").stat().st_mtime_ns for f in plan.folds} == models
    out = runner.invoke(app, ["submit", "--run-id", outcome.parent_run_id,
                              "--tracking-uri", tracker.uri, "--root", str(folder.root)])
    assert out.exit_code == 0, out.output
    path = folder.root / "entries" / "phantom" / f"unet_mixed--{outcome.parent_run_id[:8]}.json"
    return {"home": home, "folder": folder, "entry": path, "plan": plan, "outcome": outcome, "tracker": tracker}


def reproduce(submitted, entry, monkeypatch, *args):
    monkeypatch.setenv("ICHBENCH_HOME", str(submitted["home"]))
    root = str(submitted["folder"].root)
    return runner.invoke(app, ["reproduce", str(entry), "--root", root, *args])


def test_entry_carries_the_fold_digests_of_the_run(submitted):
    entry = json.loads(submitted["entry"].read_text())
    plan = submitted["plan"]
    assert entry["schema_version"] == 3 and [f["fold"] for f in entry["folds"]] == [0, 1, 2, 3, 4]
    assert entry["nsd_mm"] == 1.0 and all(r["nsd"] is not None and "hd95_mm" in r for r in entry["per_volume"])
    for f in entry["folds"]:
        res = json.loads((plan.fold_dir(f["fold"]) / "result.json").read_text())
        assert f["model_sha256"] == res["model"]["sha256"]   # the model.pt digest the fold wrote
        assert f["predictions_sha256"] == res["predictions_sha256"]
        # a Ray fold worker runs one thread
        assert f["numerics"]["cpu_threads"] == res["cpu_threads"] == 1
    assert entry["config"] == plan.cfg.to_dict()


def test_the_run_scores_its_external_test_set(submitted, monkeypatch):
    """--test-on (issue 25 §1): each fold model and the ensemble on every phantom_shifted volume,
    in the parent run, the entry (validated at submit), `runs --json` and its matrix."""
    from ichbench.cli.main import app as main_app
    ext, plan = submitted["outcome"].external["phantom_shifted"], submitted["plan"]
    assert ext["ensemble"]["all"]["n"] == SHIFTED["volumes"] and ext["folds"]["all"]["n"] == 5 * SHIFTED["volumes"]
    assert sorted(ext["fold_dice"]) == plan.folds
    assert ext["folds"]["all"]["dice"]["mean"] == pytest.approx(sum(ext["fold_dice"].values()) / 5)
    metrics = submitted["tracker"].client.get_run(submitted["outcome"].parent_run_id).data.metrics
    assert metrics["test.phantom_shifted.ensemble.dice_all_mean"] == ext["ensemble"]["all"]["dice"]["mean"]
    assert metrics["test.phantom_shifted.folds.n_all"] == 5 * SHIFTED["volumes"]
    entry = json.loads(submitted["entry"].read_text())
    [item] = entry["external"]
    assert item["dataset"]["name"] == "phantom_shifted" and len(item["per_volume"]) == SHIFTED["volumes"]
    assert item["summary"]["all"]["dice"]["mean"] == pytest.approx(ext["ensemble"]["all"]["dice"]["mean"], abs=1e-12)
    monkeypatch.setenv("ICHBENCH_HOME", str(submitted["home"]))
    out = runner.invoke(main_app, ["runs", "--json"])
    assert out.exit_code == 0, out.output
    [row] = [r for r in json.loads(out.stdout) if r["run_id"] == submitted["outcome"].parent_run_id]
    assert row["external"]["phantom_shifted"]["ensemble"]["n"] == SHIFTED["volumes"]
    out = runner.invoke(main_app, ["runs", "--json", "--matrix"])
    cells = json.loads(out.stdout)["unet_mixed"]["phantom"]
    assert cells["phantom"]["kind"] == "cross-validation"
    assert cells["phantom_shifted"]["dice_all"] == ext["ensemble"]["all"]["dice"]["mean"]


def test_reproducing_one_fold_passes_and_is_recorded(submitted, monkeypatch):
    folder: Folder = submitted["folder"]
    entry = json.loads(submitted["entry"].read_text())
    own = submitted["plan"].fold_dir(2) / "result.json"
    own_mtime = own.stat().st_mtime_ns
    started = time.time_ns()
    out = reproduce(submitted, submitted["entry"], monkeypatch, "--folds", "2")
    assert out.exit_code == 0, out.output
    n = sum(r["fold"] == 2 for r in entry["per_volume"])
    assert f"{n} volumes re-scored: max |ΔDice| 0.00 points" in out.output
    assert "predictions bit-identical in folds 2" in out.output   # same machine, same numerics
    records = record_path(submitted["entry"]).name
    assert f"reproduced: recorded in leaderboard/entries/phantom/{records}" in out.output
    data = json.loads(record_path(submitted["entry"]).read_text())
    [rec] = data["records"]
    assert data["entry"] == submitted["entry"].name and rec["passed"] and rec["failures"] == []
    assert rec["who"] and rec["date"].endswith("Z") and rec["tolerance"] == tolerance_for(
        sum(r["has_ich"] for r in entry["per_volume"] if r["fold"] == 2))
    [fold] = rec["folds"]
    assert fold["fold"] == 2 and fold["predictions_identical"] is True
    assert fold["numerics"]["cpu_threads"] == 1 and fold["numerics"]["cpu_capability"]
    fold2 = sorted(r["volume_id"] for r in entry["per_volume"] if r["fold"] == 2)
    assert [v["volume_id"] for v in rec["volumes"]] == fold2
    assert all(v["delta"] == 0 for v in rec["volumes"])
    # it trained fold 2 anew in its own folder: the run's own fold results were not reused
    [again] = list((submitted["home"] / "reproductions" / "phantom").rglob("fold_2/result.json"))
    assert own.stat().st_mtime_ns == own_mtime and again.stat().st_mtime_ns > started
    redone = json.loads(again.read_text())
    assert len(redone["history"]) == 2 and redone["model"]["path"] != str(own.parent / "model.pt")
    assert not list((submitted["home"] / "reproductions").rglob("fold_[0134]/result.json"))
    report = validate(folder)
    assert report.ok, report.lines()
    render(folder)
    html = folder.index.read_text()
    row = next(x for x in html.split("<tr") if entry["mlflow_run_id"][:8] in x)
    assert '<span class="badge reproduced">reproduced</span>' in row and "(fold 2;" in row
    # the smoke run's HD95, HD and NSD on the page (issue 22), and its volume agreement plot
    surface = html.split('id="surface-phantom"', 1)[1].split("</table>", 1)[0]
    srow = next(x for x in surface.split("<tr") if entry["mlflow_run_id"][:8] in x)
    values = re.findall(r'<td class="s" data-value="([^"]*)"', srow)
    assert len(values) == 8 and all(v != "" for v in values[:3]), srow   # all volumes: HD95, HD, NSD
    assert 'id="va-phantom-1"' in html


def test_a_tampered_dice_fails_naming_the_volume(submitted, monkeypatch, tmp_path):
    entry = json.loads(submitted["entry"].read_text())
    # a copy of the entry with one volume of fold 2 made to look better (the summary follows, so the
    # copy is internally consistent: only a re-run can tell)
    row = next(r for r in entry["per_volume"] if r["fold"] == 2 and r["tp"] + r["fn"] > 0)
    before = ratios(row["tp"], row["fp"], row["fn"])["dice"]
    recount(row, row["tp"] + row["fn"], 0, 0)   # mL and surface metrics made to agree
    assert ratios(row["tp"], row["fp"], row["fn"])["dice"] - before > VOLUME_TOLERANCE
    entry["summary"] = rescore(entry["per_volume"])
    copy = tmp_path / submitted["entry"].name
    copy.write_text(json.dumps(entry, indent=2))
    out = reproduce(submitted, copy, monkeypatch, "--folds", "2")
    assert out.exit_code == 1, out.output
    fails = [x for x in out.output.splitlines() if x.startswith("FAIL")]
    assert fails[0].startswith(f"FAIL volume {row['volume_id']} (fold 2): Dice 100.00 % in the "
                               f"entry, {100 * before:.2f} % re-run")
    # the only volume named; the fold's mean moved with it
    assert [x.split()[2] for x in fails if x.startswith("FAIL volume")] == [row["volume_id"]]
    # its forged HD/NSD (made to agree with the forged counts) differ from what the bit-identical
    # predictions give
    assert [x for x in fails if x.startswith("FAIL surface metrics")] == [
        x for x in fails if x.startswith(f"FAIL surface metrics of volume {row['volume_id']} (fold 2), from "
                                         "predictions bit-identical to the entry's: hd_mm")]
    assert any(x.startswith("FAIL surface metrics") for x in fails)
    assert "NOT reproduced: recorded in" in out.output
    [rec] = json.loads(record_path(copy).read_text())["records"]
    assert rec["passed"] is False and row["volume_id"] in rec["failures"][0]


def test_refusals_are_one_line_naming_the_entry(submitted, monkeypatch, tmp_path):
    entry = json.loads(submitted["entry"].read_text())
    shown = submitted["folder"].rel(submitted["entry"])
    out = reproduce(submitted, submitted["entry"], monkeypatch, "--folds", "7")
    assert out.exit_code == 2
    assert out.output.strip() == (f"ichbench: error: {shown}: not reproduced: --folds 7 out of "
                                  "range for k = 5 (0..4)")
    # another store than the one the entry was scored on
    other = dict(entry, dataset={**entry["dataset"], "fingerprint": "e" * 64})
    copy = tmp_path / submitted["entry"].name
    copy.write_text(json.dumps(other))
    out = reproduce(submitted, copy, monkeypatch, "--folds", "0")
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
    want = f"{copy}: not reproduced: it does not validate: dataset fingerprint eeeeeeeeeeee…"
    assert want in out.output
