"""Starting or joining Ray: a run's local cluster is its own, whatever Ray's address file says;
a joined cluster is named on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ichbench.orchestrate.cluster import joined

ROOT = Path(__file__).resolve().parents[1]
CONNECT = """
import sys
from ichbench.orchestrate.cluster import connect
import ray
resources = connect(sys.argv[1] or None, num_cpus=1, num_gpus=0)
print("CPUS", resources.get("CPU"), ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


def _connect(address: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CONNECT, address], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=env)


@pytest.mark.slow   # starts a Ray cluster in a process
def test_a_stale_cluster_file_cannot_hijack_the_local_cluster():
    """`ray.cluster_utils.Cluster` and `ray start` write Ray's address file; a test or a cluster
    killed before shutdown leaves it naming a cluster that is gone. A plain `ray.init()` would
    join that address and refuse `num_cpus`; ichbench starts its own cluster instead."""
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as tmp:   # short: Ray's socket paths
        ray_dir = Path(tmp) / "ray"
        ray_dir.mkdir()
        stale = ray_dir / "ray_current_cluster"
        stale.write_text("127.0.0.1:9")        # the discard port: nothing there
        env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_ADDRESS": ""}
        out = _connect("", env)
        assert out.returncode == 0, out.stderr[-3000:]
        [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("CPUS ")]
        cpus, address = line.split()[1:]
        assert float(cpus) == 1.0 and address != "127.0.0.1:9"
        assert "joined" not in out.stderr          # it started a cluster, it did not join one
        assert stale.read_text() == "127.0.0.1:9"  # and left the user's file alone


@pytest.mark.slow
def test_joining_a_cluster_says_which(ray_session):
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c",
                          "import sys, ray\nfrom ichbench.orchestrate.cluster import connect\n"
                          "connect(sys.argv[1])\nray.shutdown()", address],
                         cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ichbench: joined the Ray cluster at {address}: 1 node, 2 CPUs, 0 GPUs" in out.stderr.splitlines()


def test_the_joined_line_counts_live_nodes_only():
    nodes = [{"Alive": True}, {"Alive": False}, {"Alive": True}]
    assert joined("10.0.0.1:6379", nodes, {"CPU": 16.0, "GPU": 2.0}) == \
        "joined the Ray cluster at 10.0.0.1:6379: 2 nodes, 16 CPUs, 2 GPUs"
    assert joined("h:1", [{"Alive": True}], {"CPU": 0.5}) == "joined the Ray cluster at h:1: 1 node, 0.5 CPUs, 0 GPUs"
