"""`ichbench leaderboard submit` against a real MLflow SQLite tracking store."""

from __future__ import annotations

import json
import shutil
import time

import mlflow
import pytest
from typer.testing import CliRunner

from ichbench.cli.leaderboard import app
from ichbench.evaluate import infjson
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.schema import SURFACE_KEYS
from ichbench.leaderboard.validate import validate
from ichbench.splits import make_split
from tests.test_leaderboard_support import (assert_same_summary, counts_for, fake_folds, flags_of, hand_summary,
                                            recorded_world)

runner = CliRunner()


def _log_run(uri, exp_id, flags, fingerprint, *, method="multilabel_dl", seed=0, status="FINISHED",
             kind="parent", summary_shift=0.0, split_hash=None, folds=None, tags=None, digests=True,
             surface=True, nsd_mm=1.0, config_nsd_mm=None):
    split = make_split("phantom", flags, 3)
    fold_of = {v: f["fold"] for f in split["folds"] for v in f["test"]}
    rows = []
    for r in counts_for(flags, seed):
        if folds is not None and fold_of[r["volume_id"]] not in folds:
            continue   # a run of some folds (`ichbench run --folds`) has rows for those only
        tp, fp, fn = r["tp"], r["fp"], r["fn"]
        # the full row `ichbench run` logs: ratios and has_ich too (submit keeps only the counts)
        rows.append({**r, "fold": fold_of[r["volume_id"]], "has_ich": tp + fn > 0,
                     "dice": (2 * tp + 1) / (2 * tp + fp + fn + 1), "precision": (tp + 1) / (tp + fp + 1),
                     "recall": (tp + 1) / (tp + fn + 1)})
    # summary.json as `ichbench run` logs it, from the hand oracle (not ichbench's scorer), so a
    # submit that accepts it has re-scored the counts to the same numbers
    summary = hand_summary(rows)
    summary["all"]["dice"]["mean"] += summary_shift
    if surface:   # as the driver logs them (issue 22): infinities as "inf", the tolerance in the summary
        rows, summary["nsd_mm"] = infjson.encode(rows), nsd_mm
    else:         # a run scored before the surface metrics
        rows = [{k: v for k, v in r.items() if k not in SURFACE_KEYS} for r in rows]
    config = {"finetune": {"epochs": 1, "lr": 1e-3}, "data": {"labeled_fraction": 1.0}}
    if config_nsd_mm is not None:
        config["eval"] = {"nsd_mm": config_nsd_mm}
    tags = {"ichbench.kind": kind, "ichbench.method": method, "ichbench.dataset": "phantom",
            "ichbench.profile": "smoke", "ichbench.dataset_fingerprint": fingerprint,
            "ichbench.split_hash": split_hash or split["hash"], "ichbench.k": "3", "ichbench.version": "0.1.0",
            "ichbench.plugin_dist": "ichbench", "ichbench.plugin_version": "0.1.0",
            "ichbench.git_commit": "0123456789abcdef", "ichbench.hardware": "1x test CPU",
            "ichbench.gpu_hours": "0.25", **(tags or {})}
    with mlflow.start_run(experiment_id=exp_id, tags=tags) as run:
        mlflow.log_dict(rows, "per_volume.json")
        mlflow.log_dict(config, "config.json")
        mlflow.log_dict(split, "split.json")
        mlflow.log_dict(summary, "summary.json")
        if digests:   # the driver's folds.json (runs logged before it existed have none)
            listed = [f for f in fake_folds("run", 3) if folds is None or f["fold"] in folds]
            mlflow.log_dict(listed, "folds.json")
    if status != "FINISHED":
        mlflow.MlflowClient(uri).set_terminated(run.info.run_id, status)
    time.sleep(0.01)  # distinct start times for "latest"
    return run.info.run_id


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    base, home, res, template = recorded_world(tmp_path_factory, "lb-submit", 3)
    flags = flags_of(res)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("ichbench/phantom", artifact_location=(base / "artifacts").as_uri())
        runs = {
            "older": _log_run(uri, exp, flags, res.fingerprint, seed=1),
            "latest": _log_run(uri, exp, flags, res.fingerprint, seed=2),
            "failed": _log_run(uri, exp, flags, res.fingerprint, seed=3, status="FAILED"),
            "fold": _log_run(uri, exp, flags, res.fingerprint, seed=4, kind="fold"),
            "tampered": _log_run(uri, exp, flags, res.fingerprint, method="unet_mixed", seed=5, summary_shift=0.01),
            "badsplit": _log_run(uri, exp, flags, res.fingerprint, method="unet_mixed", seed=6, split_hash="e" * 64),
        }
    finally:
        mlflow.set_tracking_uri(before)
    return {"uri": uri, "runs": runs, "template": template, "fingerprint": res.fingerprint, "home": home}


@pytest.fixture
def folder(tracking, tmp_path):
    dst = tmp_path / "leaderboard"
    shutil.copytree(tracking["template"].root, dst)
    return Folder(dst)


def submit(tracking, folder, *args):
    return runner.invoke(app, ["submit", "--tracking-uri", tracking["uri"], "--root", str(folder.root), *args])


def test_submit_by_run_id_writes_a_valid_entry(tracking, folder):
    rid = tracking["runs"]["older"]
    out = submit(tracking, folder, "--run-id", rid, "--code-url", "example.org/mine")
    assert out.exit_code == 0, out.output
    path = folder.root / "entries" / "phantom" / f"multilabel_dl--{rid[:8]}.json"
    assert f"wrote leaderboard/entries/phantom/{path.name}" in out.output
    e = json.loads(path.read_text())
    assert e["mlflow_run_id"] == rid and e["dataset"] == {"name": "phantom", "fingerprint": tracking["fingerprint"]}
    assert e["split"]["k"] == 3 and e["profile"] == "smoke" and e["gpu_hours"] == 0.25
    assert e["plugin"] == {"distribution": "ichbench", "version": "0.1.0"} and e["hardware"] == "1x test CPU"
    assert e["code"] == {"url": "example.org/mine", "commit": "0123456789abcdef"}   # a built-in: ichbench's code
    assert e["ichbench_commit"] == "0123456789abcdef"
    assert e["config"]["finetune"]["lr"] == 1e-3
    assert set(e["per_volume"][0]) == {"volume_id", "fold", "tp", "fp", "fn", "pred_ml", "true_ml", "subtypes",
                                       "has_ich", *SURFACE_KEYS}
    # the run's surface metrics, infinities as "inf", and the tolerance they were scored at
    assert e["schema_version"] == 3 and e["nsd_mm"] == 1.0
    got = {r["volume_id"]: r for r in e["per_volume"]}
    for r in counts_for(flags_of_home(tracking["home"]), 1):
        assert {k: got[r["volume_id"]][k] for k in SURFACE_KEYS} == infjson.encode({k: r[k] for k in SURFACE_KEYS})
    assert any(r["hd_mm"] == "inf" for r in e["per_volume"])
    assert e["per_volume"] == sorted(e["per_volume"], key=lambda r: r["volume_id"])
    # the counts are the run's (seed 1) and the summary is eqs. 1-3 over them, by hand
    flags = flags_of_home(tracking["home"])
    want = sorted(counts_for(flags, 1), key=lambda r: r["volume_id"])
    assert [(r["volume_id"], r["tp"], r["fp"], r["fn"]) for r in e["per_volume"]] == \
        [(r["volume_id"], r["tp"], r["fp"], r["fn"]) for r in want]
    assert [r["has_ich"] for r in e["per_volume"]] == [flags[r["volume_id"]] for r in want]
    assert_same_summary(e["summary"], hand_summary([{**r, "has_ich": flags[r["volume_id"]]} for r in want]))
    assert e["date"].endswith("Z")
    report = validate(folder)
    assert report.ok, report.lines()


def test_submit_latest_finished_parent(tracking, folder):
    out = submit(tracking, folder, "--method", "multilabel_dl", "--dataset", "phantom")
    assert out.exit_code == 0, out.output
    written = sorted(p.name for p in (folder.root / "entries" / "phantom").iterdir())
    # the newer FAILED run and the fold child run are passed over
    assert written == [f"multilabel_dl--{tracking['runs']['latest'][:8]}.json"]


def test_resubmitting_a_run_is_a_duplicate(tracking, folder):
    rid = tracking["runs"]["older"]
    assert submit(tracking, folder, "--run-id", rid).exit_code == 0
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1 and f"duplicate: MLflow run {rid} is already on the leaderboard" in out.output


@pytest.mark.parametrize("which, reason", [
    ("tampered", "summary.json all.dice.mean"),
    ("badsplit", "split.json does not match the run's split_hash/k tags"),
    ("failed", "status is FAILED"),
    ("fold", "not an ichbench parent run"),
])
def test_inconsistent_runs_are_not_written(tracking, folder, which, reason):
    rid = tracking["runs"][which]
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1, out.output
    assert f"REJECT MLflow run {rid}" in out.output and reason in out.output
    assert not (folder.root / "entries").exists()


def test_missing_store_and_run_are_one_line_errors(tracking, folder, tmp_path):
    out = runner.invoke(app, ["submit", "--run-id", "x" * 32, "--tracking-uri", f"sqlite:///{tmp_path}/none.db",
                              "--root", str(folder.root)])
    assert out.exit_code == 2 and "no MLflow tracking store here" in out.output
    out = submit(tracking, folder, "--run-id", "0" * 32)
    assert out.exit_code == 2 and f"no MLflow run {'0' * 32!r}" in out.output
    out = submit(tracking, folder, "--method", "nope", "--dataset", "phantom")
    assert out.exit_code == 2 and "no finished parent run of nope on phantom" in out.output


def log_another(tracking, **kw) -> str:
    """One more parent run in the module's tracking store (a method the other tests do not use)."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking["uri"])
    try:
        exp = mlflow.get_experiment_by_name("ichbench/phantom").experiment_id
        flags = flags_of_home(tracking["home"])
        return _log_run(tracking["uri"], exp, flags, tracking["fingerprint"], **kw)
    finally:
        mlflow.set_tracking_uri(before)


def flags_of_home(home):
    from ichbench.store import open_store, store_path
    return {v["id"]: bool(v["has_ich"]) for v in open_store(store_path(home, "phantom", "segmentation")).volumes}


def test_a_run_of_some_folds_is_refused_naming_the_missing_ones(tracking, folder):
    rid = log_another(tracking, method="context_restoration", seed=7, folds={1})
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1, out.output
    assert (f"REJECT MLflow run {rid}: run covers folds 1 of k = 3; missing 0, 2: an entry needs "
            "every fold; rerun the same `ichbench run` without --folds (finished folds are reused) and submit again"
            in " ".join(out.output.split()))
    # the consequences (another split hash, canonical volumes missing) are not listed as well
    assert "split hash" not in out.output and "missing canonical volumes" not in out.output
    assert not (folder.root / "entries").exists()


def _git(repo, *args) -> str:
    import subprocess
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_entry_of_a_plugin_method_names_the_plugins_code_not_ichbenchs(tracking, folder, tmp_path, monkeypatch):
    """ichbench-vicreg from its own git checkout, installed as version 0.3.0 (editable): the tags
    the driver writes for its run, and the entry submitted from them, name the plugin's version and
    commit as the method's code and keep ichbench's commit apart."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from ichbench.resolve import resolve
    from ichbench.plugins import get_registry, reset_registry
    from ichbench.tracking.records import base_tags, git_commit

    example = Path(__file__).resolve().parents[1] / "plugins" / "ichbench-vicreg"
    checkout = tmp_path / "ichbench-vicreg"
    shutil.copytree(example, checkout, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _git(checkout, "init", "-q")
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-q", "-m", "vicreg")
    head = _git(checkout, "rev-parse", "HEAD")
    site = tmp_path / "site"
    info = site / "ichbench_vicreg-0.3.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ichbench-vicreg\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[ichbench]\nvicreg = ichbench_vicreg.plugin\n")
    (info / "direct_url.json").write_text(json.dumps({"url": checkout.as_uri(), "dir_info": {"editable": True}}))
    monkeypatch.syspath_prepend(str(checkout / "src"))
    monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m.startswith("ichbench_vicreg")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-vicreg")
    reset_registry()
    try:
        reg = get_registry()
        method, owner = reg.methods()["vicreg"], reg.owner("methods", "vicreg")
        assert Path(sys.modules["ichbench_vicreg"].__file__).is_relative_to(checkout)
        plan = SimpleNamespace(method=method, cfg=resolve(method, "phantom", "smoke"), run_key="r" * 64,
                               store=SimpleNamespace(fingerprint=tracking["fingerprint"]),
                               split={"hash": "s" * 64, "k": 3}, icm=None)
        tags = base_tags(plan, owner, {"CPU": 2})
    finally:
        reset_registry()
    ours = git_commit()
    assert ours != head and not ours.startswith(head)
    assert (tags["ichbench.plugin_dist"], tags["ichbench.plugin_version"], tags["ichbench.plugin_commit"]) == \
        ("ichbench-vicreg", "0.3.0", head)
    assert tags["ichbench.git_commit"] == ours
    keep = ("plugin", "plugin_dist", "plugin_version", "plugin_commit", "git_commit", "version")
    rid = log_another(tracking, method="vicreg", seed=8, tags={f"ichbench.{k}": tags[f"ichbench.{k}"] for k in keep})
    out = submit(tracking, folder, "--run-id", rid, "--code-url", "https://example.org/ichbench-vicreg")
    assert out.exit_code == 0, out.output
    entry = json.loads((folder.root / "entries" / "phantom" / f"vicreg--{rid[:8]}.json").read_text())
    assert entry["plugin"] == {"distribution": "ichbench-vicreg", "version": "0.3.0"}
    assert entry["code"] == {"url": "https://example.org/ichbench-vicreg", "commit": head}
    assert entry["ichbench_commit"] == (None if ours == "unknown" else ours)
    assert validate(folder).ok


@pytest.mark.parametrize("tags, commit", [
    ({"ichbench.plugin_dist": "ichbench"}, "0123456789abcdef"),                     # a built-in: ichbench's code
    ({"ichbench.plugin_dist": "ichbench-other"}, None),                             # unknown, not ichbench's
    ({"ichbench.plugin_dist": "ichbench-other", "ichbench.plugin_commit": "c0ffee"}, "c0ffee"),
])
def test_code_commit_of_runs_logged_before_the_plugin_commit_tag(tags, commit):
    from ichbench.leaderboard.submit import method_commit
    assert method_commit({"ichbench.git_commit": "0123456789abcdef", **tags}) == commit


def test_the_same_numbers_under_another_run_are_a_duplicate(tracking, folder):
    first = tracking["runs"]["older"]
    assert submit(tracking, folder, "--run-id", first).exit_code == 0
    # another method's run that reports exactly the older run's per-volume counts
    rid = log_another(tracking, method="local_contrastive", seed=1)
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1
    assert (f"REJECT MLflow run {rid}: duplicate: the same per-volume counts as "
            f"leaderboard/entries/phantom/multilabel_dl--{first[:8]}.json (MLflow run {first}") in out.output
    assert not (folder.root / "entries" / "phantom" / f"local_contrastive--{rid[:8]}.json").exists()


def test_a_run_without_fold_digests_is_refused_with_what_to_do(tracking, folder):
    rid = log_another(tracking, method="global_contrastive", seed=9, digests=False)
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1
    assert "artifact folds.json missing: the run was logged before entries carried each fold's model" \
        in out.output and "rerun the same `ichbench run`" in out.output


@pytest.mark.parametrize("kw, reason", [
    ({"surface": False}, "has no surface metrics: the run was scored before per-volume rows carried HD"),
    ({"nsd_mm": None}, "summary.json does not say the NSD tolerance its rows were scored at (nsd_mm = None)"),
    ({"config_nsd_mm": 0.42}, "nsd_mm = 1.0 but its config scores NSD at eval.nsd_mm = 0.42"),
])
def test_a_run_without_surface_metrics_or_their_tolerance_is_refused(tracking, folder, kw, reason):
    rid = log_another(tracking, method="context_restoration", seed=11, **kw)
    out = submit(tracking, folder, "--run-id", rid)
    assert out.exit_code == 1 and reason in out.output, out.output
    assert not list((folder.root / "entries").rglob("*.json"))
