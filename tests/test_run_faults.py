"""A run survives what goes wrong around it: a fold worker killed mid-epoch (Ray retries it and it
resumes), the driver killed (a rerun finishes without redoing finished epochs), Ctrl-C (workers
stop, runs marked KILLED); and folds are placed across a two-node cluster. Real Ray, real MLflow."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ichbench.orchestrate.driver import Driver
from ichbench.orchestrate.plan import plan_method
from ichbench.tracking import Tracker, default_tracking_uri
from tests.procs import sigint_at_default
from tests.test_run import runs_of

pytestmark = pytest.mark.slow   # end to end: Ray runs killed and interrupted, a two-node cluster

ROOT = Path(__file__).resolve().parents[1]


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


def test_ctrl_c_stops_workers_and_marks_runs_killed(phantom_home):
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed", "-d", "phantom",
                             "--profile", "smoke", "--folds", "0", "--set", "finetune.epochs=50"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_at_default)
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
