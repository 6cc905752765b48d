"""Ctrl-C while `ichbench run` starts its local Ray cluster: exit 130, one "interrupted" line, and
no process of that cluster left behind (issue 15 §5: agents orphaned for minutes, once a crash)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")
import psutil  # noqa: E402

from tests.procs import sigint_at_default  # noqa: E402

pytestmark = pytest.mark.slow   # Ctrl-C through real Ray start-ups

# Moments of Ray's start-up, seen from outside: its first process (the GCS) is up; the raylet is
# up; the raylet has started its agents (the processes that were orphaned).


def _agents_started(tree) -> bool:
    raylets = {pid for pid, _, cmd in tree if "raylet/raylet" in cmd}
    return any(ppid in raylets and "agent" in cmd for _, ppid, cmd in tree)


def _raylet_started(tree) -> bool:
    return any("raylet/raylet" in cmd for _, _, cmd in tree)


POINTS = {
    "gcs": lambda tree: any("gcs_server" in cmd for _, _, cmd in tree),
    "raylet": _raylet_started,
    "agents": _agents_started,
    "twice": _raylet_started,   # a second Ctrl-C stops the start at once
}


def _tree(pid: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of each descendant of `pid`."""
    out = []
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return out
    for p in kids:
        try:
            out.append((p.pid, p.ppid(), " ".join(p.cmdline())))
        except psutil.Error:
            continue
    return out


def _leftovers(driver_pid: int, home) -> list[str]:
    """Processes of that run's Ray session: named by its session (which ends in the driver's pid)
    or started with its ICHBENCH_HOME."""
    session = re.compile(rf"session_[\d_-]+_{driver_pid}(?!\d)")
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or ())
            if session.search(cmd) or p.environ().get("ICHBENCH_HOME") == str(home):
                out.append(f"{p.pid} {cmd[:120]}")
        except psutil.Error:
            continue
    return out


def test_ctrl_c_during_ray_start_up_stops_the_cluster(phantom_stores, tmp_path):
    """Four runs at once, each interrupted at another moment of Ray's start-up, one of them twice
    (in parallel, to keep the test near a minute on a loaded two-core machine)."""
    runs = {}
    for name in POINTS:
        home = tmp_path / name
        shutil.copytree(phantom_stores, home, symlinks=True)
        env = {**os.environ, "ICHBENCH_HOME": str(home), "RAY_ADDRESS": "",
               "ICHBENCH_LOAD_PLUGINS": ""}
        log = open(tmp_path / f"{name}.log", "w+")
        cmd = [sys.executable, "-m", "ichbench.cli.main", "run", "-m", "unet_mixed",
               "-d", "phantom", "--profile", "smoke", "--folds", "0"]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=sigint_at_default)
        runs[name] = (proc, home, log)
    sent: dict[str, float] = {}
    deadline = time.time() + 150
    while len(sent) < len(runs) and time.time() < deadline:
        for name, (proc, _, _) in runs.items():
            if name in sent or proc.poll() is not None:
                continue
            if POINTS[name](_tree(proc.pid)):
                os.killpg(proc.pid, signal.SIGINT)   # as the terminal's Ctrl-C: the whole group
                sent[name] = time.time()
                if name == "twice":
                    time.sleep(0.5)
                    os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
    for name, (proc, home, log) in runs.items():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{name}: still running 60 s after Ctrl-C")
        log.seek(0)
        out = log.read()
        assert name in sent, f"never reached the {name!r} point of Ray's start-up:\n{out[-2000:]}"
        assert proc.returncode == 130, (name, proc.returncode, out[-2000:])
        assert "interrupted" in out and "Traceback" not in out, (name, out[-2000:])
    time.sleep(3)
    for name, (proc, home, _) in runs.items():
        assert _leftovers(proc.pid, home) == [], name
