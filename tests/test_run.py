"""`ichbench run` end to end on a real local Ray cluster and a real MLflow SQLite store."""

import json
import subprocess
import sys

import mlflow
import pytest

from ichbench.errors import IchbenchError
from ichbench.orchestrate.driver import Driver
from ichbench.orchestrate.plan import plan_method
from ichbench.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow   # end to end: real Ray runs and CLI processes

FAST = ["finetune.epochs=2", "finetune.steps_per_epoch=3", "pretrain.epochs=1", "pretrain.steps_per_epoch=3"]


def run_method(home, method, folds=(0, 1), overrides=FAST, dataset="phantom", **kw):
    tracker = Tracker(default_tracking_uri(home), home)
    plan = plan_method(method, dataset, "smoke", home, folds=list(folds), overrides=list(overrides), **kw)
    return Driver(tracker).run(plan), tracker


def runs_of(home, **tags):
    mlflow.set_tracking_uri(default_tracking_uri(home))
    flt = " and ".join(f"tags.`ichbench.{k}` = '{v}'" for k, v in tags.items())
    return mlflow.search_runs(experiment_names=["ichbench/phantom"], filter_string=flt, output_format="list")


def test_smoke_run_is_tracked_in_mlflow(phantom_home, ray_session):
    out, tracker = run_method(phantom_home, "multilabel_dl")
    [parent] = runs_of(phantom_home, kind="parent")
    assert parent.info.status == "FINISHED" and parent.info.run_id == out.parent_run_id
    tags, metrics = parent.data.tags, parent.data.metrics
    store_fp = out.plan.store.fingerprint
    assert tags["ichbench.dataset_fingerprint"] == store_fp
    assert tags["ichbench.split_hash"] == out.plan.split["hash"]
    assert tags["ichbench.plugin_dist"] == "ichbench" and tags["ichbench.version"]
    assert float(tags["ichbench.gpu_hours"]) == 0.0 and "CPU" in tags["ichbench.hardware"]
    assert parent.data.params["finetune.epochs"] == "2"
    # the parent's means are those of the per-volume rows of both folds together
    rows = out.rows
    assert len(rows) == sum(len(out.plan.split["folds"][f]["test"]) for f in (0, 1))
    assert metrics["dice_all_mean"] == pytest.approx(sum(r["dice"] for r in rows) / len(rows))
    assert metrics["n_all"] == len(rows) and "dice_ich_mean" in metrics
    arts = {a.path for a in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"per_volume.json", "per_volume.csv", "config.json", "split.json", "summary.json",
            "volume_agreement.png"} <= arts
    # issue 22: the surface metrics and the mL agreement, from the same rows (means over finite values)
    from ichbench.evaluate.agreement import volume_agreement
    from ichbench.evaluate.infjson import decode
    from ichbench.evaluate.summary import metric_stats
    for key in ("hd95_mm", "hd_mm", "nsd", "abs_rvd"):
        want = metric_stats([r[key] for r in rows])
        assert metrics.get(f"{key}_all_mean") == pytest.approx(want["mean"]), key
    assert {"hd95_mm_all_mean", "nsd_all_mean", "nsd_ich_mean", "volume_icc_2_1", "volume_loa_low_ml"} <= set(metrics)
    assert metrics["hd_mm_all_n_infinite"] == sum(r["hd_mm"] == float("inf") for r in rows)
    agreement = volume_agreement([r["pred_ml"] for r in rows], [r["true_ml"] for r in rows])
    assert metrics["volume_bias_ml"] == pytest.approx(agreement["bias_ml"])
    assert metrics.get("volume_ccc") == pytest.approx(agreement["ccc"])
    logged = tracker.client.download_artifacts(parent.info.run_id, "per_volume.json", str(phantom_home))
    text = open(logged).read()
    assert "Infinity" not in text and decode(json.loads(text)) == rows   # inf as "inf", read back
    folds = runs_of(phantom_home, kind="fold")
    assert sorted(r.data.tags["ichbench.fold"] for r in folds) == ["0", "1"]
    for r in folds:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        hist = tracker.client.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in hist] == [1, 2]
        assert {"per_volume.json", "checkpoints"} <= {a.path for a in tracker.client.list_artifacts(r.info.run_id)}
        assert {"nsd_all_mean", "hd_mm_all_n_infinite", "volume_bias_ml"} <= set(r.data.metrics)   # per fold too
    [pre] = runs_of(phantom_home, kind="pretrain")
    assert pre.data.tags["ichbench.cached"] == "false"
    assert pre.data.tags["ichbench.data_path"] == "in-memory"   # the phantom fits: loaded, not streamed
    assert (out.plan.pretrain_dir / "pretrained.pt").exists()
    # `ichbench runs` lists it
    from typer.testing import CliRunner
    from ichbench.cli.main import app
    listed = CliRunner().invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["run_id"], row["method"], row["folds"]) == (parent.info.run_id, "multilabel_dl", "0,1")
    assert row["dice_all"] == pytest.approx(metrics["dice_all_mean"])
    assert row["hd95_mm_all"] == pytest.approx(metrics["hd95_mm_all_mean"])
    assert row["nsd_all"] == pytest.approx(metrics["nsd_all_mean"])
    assert row["hd_mm_all_n_infinite"] == metrics["hd_mm_all_n_infinite"]
    assert row["volume_ccc"] == pytest.approx(metrics.get("volume_ccc"))


def test_multilabel_ce_weights_are_logged_with_its_pretraining(phantom_home, ray_session):
    """The seven class weights fixed from the selection (§2.6.2.2, the authors' script) are in the
    pretraining's MLflow run: as params and as the artifact pretext_setup.json."""
    out, tracker = run_method(phantom_home, "multilabel_ce", folds=(0,))
    [pre] = runs_of(phantom_home, kind="pretrain")
    logged = json.loads(pre.data.params["pretext_setup.pos_weight.values"])
    recorded = json.loads((out.plan.pretrain_dir / "pretext_setup.json").read_text())["pos_weight"]
    assert len(logged) == 7 and logged == recorded["values"]
    assert pre.data.params["pretext_setup.pos_weight.source"].startswith("selection_frequency: (N - n_pos) / n_pos")
    assert "pretext_setup.json" in {a.path for a in tracker.client.list_artifacts(pre.info.run_id)}


def test_rerun_redoes_nothing_and_second_dataset_reuses_pretraining(phantom_home, ray_session, capsys):
    first, _ = run_method(phantom_home, "binary_classification", folds=(0,))
    ckpt = first.plan.pretrain_dir / "pretrained.pt"
    mtime = ckpt.stat().st_mtime_ns
    result = first.plan.fold_dir(0) / "result.json"
    rmtime = result.stat().st_mtime_ns
    again, _ = run_method(phantom_home, "binary_classification", folds=(0,))
    assert again.parent_run_id == first.parent_run_id
    assert ckpt.stat().st_mtime_ns == mtime and result.stat().st_mtime_ns == rmtime
    assert len(runs_of(phantom_home, kind="fold", method="binary_classification")) == 1
    assert again.summary == first.summary
    # a second dataset (Seg-CQ500-shaped files made from phantom volumes) fine-tunes from the
    # same pretraining: the cached checkpoint is reused, no second pretraining runs
    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.ingest import ingest
    from tests.nifti_fixtures import phantom, write_segcq500
    vols = {f"CQ500-CT-{i}": phantom(i, ["iph"] if i % 2 else [], slices=6, size=64, marker=False) for i in range(6)}
    src = write_segcq500(phantom_home / "raw_cq", vols)
    ingest(get_dataset("segcq500"), phantom_home, src, options=IngestOptions(size=64))
    other, _ = run_method(phantom_home, "binary_classification", folds=(0,), dataset="segcq500",
                          pretrain_dataset="phantom", k=3)
    assert other.pretrain_cached and other.pretrain_run_id == first.pretrain_run_id
    assert ckpt.stat().st_mtime_ns == mtime
    # and says so on the console, naming the run it came from
    said = f"binary_classification: pretraining reused from MLflow run {first.pretrain_run_id}"
    assert said in capsys.readouterr().err
    mlflow.set_tracking_uri(default_tracking_uri(phantom_home))
    cached = mlflow.search_runs(experiment_names=["ichbench/segcq500"], output_format="list",
                                filter_string="tags.`ichbench.kind` = 'pretrain'")
    assert [r.data.tags["ichbench.cached"] for r in cached] == ["true"]
    assert cached[0].data.tags["ichbench.pretrain_source_run"] == first.pretrain_run_id


def test_unreachable_tracking_store_fails_before_training(phantom_home):
    out = subprocess.run([sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed", "-d", "phantom",
                          "--profile", "smoke", "--tracking-uri", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        "ichbench: error: MLflow tracking store http://127.0.0.1:9 is unreachable")
    assert not (phantom_home / "runs").exists()


def test_label_needs_are_checked_before_training(phantom_home):
    # fine-tuning needs masks: a pretraining store (no masks) is refused with the reason
    from ichbench.methods import get_method
    from ichbench.store import open_store, store_path
    from ichbench.train.label_needs import check_finetuning_store
    with pytest.raises(IchbenchError, match="has no hemorrhage masks"):
        check_finetuning_store(get_method("unet_mixed"), open_store(store_path(phantom_home, "phantom", "pretraining")))
    # and an unknown method never gets as far as a plan
    with pytest.raises(IchbenchError, match="unknown method 'nope'; known: .*unet_mixed"):
        plan_method("nope", "phantom", "smoke", phantom_home)


def test_tune_scores_every_sample_on_every_fold(phantom_home, ray_session):
    from ichbench.orchestrate.search import parse_space, run_search
    tracker = Tracker(default_tracking_uri(phantom_home), phantom_home)
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0, 1],
                       overrides=["finetune.epochs=1", "finetune.steps_per_epoch=2"])
    space = parse_space(["finetune.lr=loguniform(1e-4,1e-2)", "finetune.batch_size=choice(4,8)"])
    out = run_search(plan, tracker, Driver(tracker), num_samples=2, space=space, seed=1)
    assert len(out["samples"]) == 2 and all(sorted(s["fold_dice"]) == [0, 1] for s in out["samples"])
    for s in out["samples"]:
        assert s["mean_dice"] == pytest.approx(sum(s["fold_dice"].values()) / 2)
        assert 1e-4 <= s["params"]["finetune.lr"] <= 1e-2 and s["params"]["finetune.batch_size"] in (4, 8)
    assert out["best_dice"] == max(s["mean_dice"] for s in out["samples"])
    [parent] = runs_of(phantom_home, kind="tune")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_mean_dice"] == pytest.approx(out["best_dice"])
    assert len(runs_of(phantom_home, kind="tune_sample")) == 2
    # seeded: a rerun draws the same samples (and reuses their finished folds)
    again = run_search(plan, tracker, Driver(tracker), num_samples=2, space=space, seed=1)
    drawn = lambda res: sorted(map(str, (s["params"] for s in res["samples"])))  # noqa: E731
    assert drawn(again) == drawn(out)


def test_tune_with_optuna_and_asha(phantom_home, ray_session):
    """Optuna proposes, ASHA may stop a sample after one fold; the best is one scored on all folds."""
    from ichbench.orchestrate.search import parse_space, run_search
    tracker = Tracker(default_tracking_uri(phantom_home), phantom_home)
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0, 1],
                       overrides=["finetune.epochs=1", "finetune.steps_per_epoch=2"])
    space = parse_space(["finetune.lr=loguniform(1e-4,1e-2)"])
    out = run_search(plan, tracker, Driver(tracker), num_samples=3, space=space, seed=2, search="optuna",
                     scheduler="asha")
    assert len(out["samples"]) == 3
    full = [s for s in out["samples"] if not s["stopped_early"]]
    assert full and all(sorted(s["fold_dice"]) == [0, 1] for s in full)
    assert all(sorted(s["fold_dice"]) == [0] for s in out["samples"] if s["stopped_early"])
    assert out["best_dice"] == max(s["mean_dice"] for s in full)


def test_unknown_searcher_or_scheduler_is_refused_before_a_run_opens(phantom_home, ray_session):
    from ichbench.orchestrate.search import parse_space, run_search
    tracker = Tracker(default_tracking_uri(phantom_home), phantom_home)
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0, 1])
    space = parse_space([])
    before = len(runs_of(phantom_home, kind="tune"))
    with pytest.raises(IchbenchError, match="--search hyperopt: unknown searcher; known: random, optuna"):
        run_search(plan, tracker, Driver(tracker), num_samples=1, space=space, search="hyperopt")
    with pytest.raises(IchbenchError, match="--scheduler pbt: unknown scheduler; known: fifo, asha"):
        run_search(plan, tracker, Driver(tracker), num_samples=1, space=space, scheduler="pbt")
    with pytest.raises(IchbenchError, match="unknown config key 'finetune.lrr'"):
        run_search(plan, tracker, Driver(tracker), num_samples=1, space=parse_space(["finetune.lrr=uniform(0,1)"]))
    assert len(runs_of(phantom_home, kind="tune")) == before


def test_bad_search_space_is_one_line_error():
    from ichbench.orchestrate.search import parse_space
    with pytest.raises(IchbenchError, match="finetune.lr=normal\\(1,2\\): expected uniform"):
        parse_space(["finetune.lr=normal(1,2)"])
    with pytest.raises(IchbenchError, match="two increasing bounds"):
        parse_space(["finetune.lr=loguniform(0,1)"])
