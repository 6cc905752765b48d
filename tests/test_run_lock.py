"""Two `ichbench run` of one config at once (issue 26 §3): the second waits for the first, says so,
and then reuses what it finished; one parent MLflow run, each metric logged once, each fold
trained once. The lock is a real `flock` on `<run folder>/run.lock`, held by real processes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ichbench.orchestrate.lock import LOCK_NAME, run_lock
from tests.procs import children, sigint_at_default

OVERRIDES = ["finetune.epochs=2", "finetune.steps_per_epoch=3"]
RUN = [sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke",
       "--folds", "0", *[a for o in OVERRIDES for a in ("--set", o)]]


def _holder(run_dir, seconds: float) -> subprocess.Popen:
    """Another process that takes the lock of `run_dir` and holds it for `seconds`."""
    code = textwrap.dedent(f"""
        import sys, time
        from ichbench.orchestrate.lock import run_lock
        with run_lock({str(run_dir)!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def _wait_for(path, text: str, proc, seconds: float = 120) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if text in path.read_text():
            return path.read_text()
        time.sleep(0.1)
    pytest.fail(f"never said {text!r}: {path.read_text()[-2000:]}")


def test_a_second_holder_waits_says_who_holds_it_then_gets_it(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    holder = _holder(run_dir, 1.5)
    said = []
    t0 = time.monotonic()
    with run_lock(run_dir, say=said.append) as waited:
        assert waited and time.monotonic() - t0 > 0.5
        assert holder.wait(timeout=10) == 0
        assert f'"pid": {os.getpid()}' in (run_dir / LOCK_NAME).read_text()   # now names this process
    assert said[0].startswith(f"another ichbench run (pid {holder.pid}, started ")
    assert said[0].endswith(f"is working on {run_dir}; waiting for it to finish (Ctrl-C stops waiting)")
    assert said[1] == f"the other run on {run_dir} has ended; going on with what it finished"


@pytest.mark.timeout(30)   # a lock that is not re-entrant waits for itself for ever
def test_a_killed_holder_leaves_no_stale_lock_and_the_lock_is_reentrant(tmp_path):
    run_dir = tmp_path / "r"
    holder = _holder(run_dir, 300)
    holder.kill()
    holder.wait(timeout=10)
    said = []
    with run_lock(run_dir, say=said.append) as waited:
        with run_lock(run_dir, say=said.append) as again:   # the CLI's lock, then the driver's
            assert not waited and not again
    assert said == []


@pytest.mark.slow
def test_ctrl_c_while_waiting_exits_130_with_nothing_started(phantom_home, tmp_path):
    from ichbench.orchestrate.plan import plan_method
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0], overrides=OVERRIDES)
    err = tmp_path / "err"
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": ""}
    with run_lock(plan.run_dir), open(err, "w") as err_file:
        proc = subprocess.Popen(RUN, env=env, stdout=subprocess.DEVNULL, stderr=err_file,
                                preexec_fn=sigint_at_default)
        try:
            _wait_for(err, f"is working on {plan.run_dir}; waiting", proc)
            assert children(proc.pid) == []   # it waits before starting Ray: no cluster held meanwhile
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            proc.kill()
    lines = err.read_text().splitlines()
    assert lines[0].startswith(f"ichbench: another ichbench run (pid {os.getpid()}, started "), lines
    assert lines[1:] == ["ichbench: interrupted before any training started; nothing was left running"], lines
    assert not (plan.run_dir / "fold_0").exists()


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_train_each_fold_once(phantom_home, tmp_path):
    from tests.test_run import runs_of
    from ichbench.tracking import Tracker, default_tracking_uri
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": ""}
    outs, errs, procs = [tmp_path / f"out{i}" for i in (0, 1)], [tmp_path / f"err{i}" for i in (0, 1)], []
    for out, err in zip(outs, errs):   # started together: whichever locks first works, the other waits
        with open(out, "w") as o, open(err, "w") as e:
            procs.append(subprocess.Popen(RUN, env=env, stdout=o, stderr=e))
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    stderr = [e.read_text() for e in errs]
    assert codes == [0, 0], stderr
    waiting = [i for i, text in enumerate(stderr) if "waiting for it to finish" in text]
    assert len(waiting) == 1, stderr
    second, first = waiting[0], 1 - waiting[0]
    assert f"another ichbench run (pid {procs[first].pid}, started " in stderr[second]
    trained = [text.count("unet_mixed fold 0: mean volume Dice") for text in stderr]
    assert trained[first] == 1 and trained[second] == 0, stderr
    assert "unet_mixed: folds [0] already finished, reused" in stderr[second]
    assert outs[0].read_text() == outs[1].read_text()   # the same table, parent run and folder
    [parent] = runs_of(phantom_home, kind="parent")
    assert parent.info.status == "FINISHED"
    assert len(runs_of(phantom_home, kind="fold")) == 1
    client = Tracker(default_tracking_uri(phantom_home), phantom_home).client
    assert parent.data.metrics and {len(client.get_metric_history(parent.info.run_id, k))
                                    for k in parent.data.metrics} == {1}


@pytest.mark.slow
def test_finetune_of_a_fold_waits_while_a_run_holds_its_folder(phantom_home, tmp_path):
    """`ichbench finetune` trains in `ichbench run`'s fold folder: it takes the same lock."""
    from ichbench.orchestrate.plan import plan_method
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0], overrides=OVERRIDES)
    cmd = [sys.executable, "-m", "ichbench.cli.main", "finetune", "-m", "unet_mixed", "-d", "phantom",
           "--profile", "smoke", "--fold", "0", "--device", "cpu", *[a for o in OVERRIDES for a in ("--set", o)]]
    err = tmp_path / "err"
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home)}
    with open(err, "w") as err_file:
        with run_lock(plan.run_dir):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
            try:
                _wait_for(err, f"is working on {plan.run_dir}; waiting", proc)
                time.sleep(1)   # it would have started training by now, were it not waiting
                assert not (plan.fold_dir(0) / "result.json").exists()
            except BaseException:
                proc.kill()
                raise
        assert proc.wait(timeout=300) == 0, err.read_text()
    assert (plan.fold_dir(0) / "result.json").is_file()
    assert "going on with what it finished" in err.read_text()
