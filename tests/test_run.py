"""`ichbench run` end to end on a real local Ray cluster and a real MLflow SQLite store."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from ichbench.errors import IchbenchError
from ichbench.orchestrate.driver import Driver
from ichbench.orchestrate.plan import plan_method
from ichbench.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow   # end to end: real Ray runs, CLI processes, the MLflow UI server

ROOT = Path(__file__).resolve().parents[1]
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
    assert {"per_volume.json", "per_volume.csv", "config.json", "split.json", "summary.json"} <= arts
    folds = runs_of(phantom_home, kind="fold")
    assert sorted(r.data.tags["ichbench.fold"] for r in folds) == ["0", "1"]
    for r in folds:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        hist = tracker.client.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in hist] == [1, 2]
        assert {"per_volume.json", "checkpoints"} <= {a.path for a in tracker.client.list_artifacts(r.info.run_id)}
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


def test_killed_fold_worker_is_retried_and_resumes_to_the_same_result(phantom_home, ray_session, tmp_path):
    from ichbench.orchestrate.tasks import finetune_task
    overrides = ["finetune.epochs=4", "finetune.steps_per_epoch=4"]
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0], overrides=overrides)
    fold_dir = plan.fold_dir(0)
    killed = {}

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline:
            state, pid = fold_dir / "state.pt", fold_dir / "worker.pid"
            if state.exists() and pid.exists():
                killed["pid"] = int(pid.read_text())
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    out = Driver(Tracker(default_tracking_uri(phantom_home), phantom_home)).run(plan)
    t.join()
    assert "pid" in killed, "the fold never checkpointed"
    assert int((fold_dir / "attempts").read_text()) == 2
    res = json.loads((fold_dir / "result.json").read_text())
    assert len(res["history"]) == 4
    # the epochs the killed worker finished were kept, not trained again: each epoch names the
    # process that trained it
    pids = [h["pid"] for h in res["history"]]
    done = pids.count(killed["pid"])
    assert done >= 1 and pids[:done] == [killed["pid"]] * done
    assert killed["pid"] not in pids[done:] and len(set(pids[done:])) <= 1
    # an uninterrupted run of the same fold on a Ray worker (same threads as the killed one: float
    # reductions depend on the thread count) gives the same metrics
    ref = ray_session.get(finetune_task.remote(plan.method, str(plan.store.path), plan.split, 0, plan.cfg,
                                               str(tmp_path / "ref"), None))
    assert ref["attempts"] == 1
    assert [r["dice"] for r in ref["volumes"]] == [r["dice"] for r in res["volumes"]]
    assert [h["loss"] for h in ref["history"]] == [h["loss"] for h in res["history"]]
    assert out.summary == ref["summary"]


TWO_NODE = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
from ichbench.orchestrate.driver import Driver
from ichbench.orchestrate.plan import plan_method
from ichbench.tracking import Tracker, default_tracking_uri
home = Path(sys.argv[1])
plan = plan_method("unet_mixed", "phantom", "smoke", home, folds=[0, 1],
                   overrides=["finetune.epochs=2", "finetune.steps_per_epoch=3"])
out = Driver(Tracker(default_tracking_uri(home), home)).run(plan)
print("NODES", json.dumps({{"folds": out.fold_nodes, "cluster": [n["NodeID"] for n in ray.nodes()]}}))
ray.shutdown()
cluster.shutdown()
"""


def test_folds_are_placed_on_both_nodes_of_a_two_node_cluster(phantom_home, tmp_path):
    script = tmp_path / "two_node.py"
    script.write_text(TWO_NODE.format(root=str(ROOT)))
    out = subprocess.run([sys.executable, str(script), str(phantom_home)], capture_output=True, text=True,
                         timeout=400, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("NODES ")][0]
    info = json.loads(line[6:])
    assert len(info["cluster"]) == 2
    assert set(info["folds"].values()) == set(info["cluster"])


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


def test_ctrl_c_stops_workers_and_marks_runs_killed(phantom_home):
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed", "-d", "phantom",
                             "--profile", "smoke", "--folds", "0", "--set", "finetune.epochs=50"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    runs_dir = phantom_home / "runs" / "phantom" / "unet_mixed"
    while time.time() < deadline and not list(runs_dir.glob("*/fold_0/state.pt")):
        time.sleep(0.2)
    assert list(runs_dir.glob("*/fold_0/state.pt")), "the fold never started"
    pid = int(next(runs_dir.glob("*/fold_0/worker.pid")).read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err or "interrupted" in _
    statuses = sorted(r.info.status for r in runs_of(phantom_home))
    assert statuses and set(statuses) == {"KILLED"}
    deadline = time.time() + 30  # the fold's worker process is gone too
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"fold worker {pid} still running after Ctrl-C")


def test_driver_killed_then_rerun_finishes_without_redoing_work(phantom_home):
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": ""}
    cmd = [sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke",
           "--folds", "0", "--set", "finetune.epochs=20", "--set", "finetune.steps_per_epoch=4"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs_dir = phantom_home / "runs" / "phantom" / "unet_mixed"
    deadline = time.time() + 180
    while time.time() < deadline and not list(runs_dir.glob("*/fold_0/state.pt")):
        time.sleep(0.1)
    assert list(runs_dir.glob("*/fold_0/state.pt")), "the fold never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its process group, at once
    proc.wait()
    fold_dir = next(runs_dir.glob("*/fold_0"))
    # Ray reaps the dead driver's workers on its own schedule; make sure this one is gone (as it
    # would be after a machine failure) before the rerun, so the rerun must do the rest itself.
    worker = int((fold_dir / "worker.pid").read_text())
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    assert not (fold_dir / "result.json").exists(), "the fold finished before the driver was killed"
    import torch
    done_before = torch.load(fold_dir / "state.pt", weights_only=False)["epoch"]
    worker_pid = worker
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # what the user sees: the fold's result as it lands, and no noise they cannot act on
    assert "unet_mixed fold 0: mean volume Dice" in out.stderr
    for noise in ("Token authentication", "Warning", "Traceback"):
        assert noise not in out.stderr + out.stdout, (noise, out.stderr[-3000:])
    res = json.loads((fold_dir / "result.json").read_text())
    assert len(res["history"]) == 20 and (fold_dir / "attempts").read_text() == "2"
    # the rerun resumed after the epochs the killed driver's fold finished: those keep the killed
    # worker's pid (trained once, not again), the rest were trained by the rerun's worker
    pids = [h["pid"] for h in res["history"]]
    assert done_before >= 1 and pids[:done_before] == [worker_pid] * done_before
    assert worker_pid not in pids[done_before:] and len(set(pids[done_before:])) == 1
    parents = runs_of(phantom_home, kind="parent")
    assert [p.info.status for p in parents] == ["FINISHED"]  # the interrupted parent, reopened
    assert [r.info.status for r in runs_of(phantom_home, kind="fold")] == ["FINISHED"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_serves_the_tracking_store_on_loopback(home, tmp_path, sig):
    """`ichbench ui` serves on 127.0.0.1, and one SIGTERM (`kill PID`) or SIGINT (Ctrl-C) to ichbench
    stops the MLflow server with all its workers and frees the port."""
    import socket
    import urllib.request

    from tests.procs import alive_in_session, children
    log = tmp_path / "ui.log"
    server = proc = None
    try:
        # A free port is only free until someone takes it: another worker's Ray may, between the
        # probe and the server's bind. Then `ichbench ui` refuses it in one line; take another.
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "ichbench.cli.main", "ui", "--port", str(port)],
                                        env={**os.environ, "ICHBENCH_HOME": str(home)}, start_new_session=True,
                                        stdout=out, stderr=subprocess.STDOUT)
            deadline, body = time.time() + 120, None
            while time.time() < deadline and body is None and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search"
                                                "?max_results=10", timeout=2) as r:
                        body = json.loads(r.read())
                except (OSError, ValueError):
                    time.sleep(0.5)
            if body is not None or "is in use" not in log.read_text():
                break
        assert body is not None, "the MLflow UI never answered: " + log.read_text()[-2000:]
        assert "experiments" in body
        # mlflow runs in a session of its own, out of reach of the terminal's Ctrl-C
        [(server, session)] = children(proc.pid)
        assert session == server and len(alive_in_session(server)) > 1  # its workers too
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == 128 + sig
        with pytest.raises(ProcessLookupError):
            os.killpg(server, 0)
        assert alive_in_session(server) == [] and alive_in_session(proc.pid) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        lines = log.read_text().splitlines()
        assert f"ichbench ui: stopped the MLflow UI ({sig.name})" in lines
    finally:
        for pgid in (server, proc.pid if proc else None):
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            proc.wait(timeout=30)


def test_ui_refuses_a_port_in_use(home):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "ichbench.cli.main", "ui", "--port", str(port)],
                             env={**os.environ, "ICHBENCH_HOME": str(home)}, capture_output=True, text=True,
                             timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"ichbench: error: port {port} on 127.0.0.1 is in use; choose another with --port"
