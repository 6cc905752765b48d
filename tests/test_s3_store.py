"""Stores addressed by URL (issue 10 §4), against a real S3-compatible HTTP server.

moto's standalone server runs as a subprocess on 127.0.0.1 (no in-process patching); ichbench
reaches it only through the standard AWS_* environment. The phantom is ingested to
s3://BUCKET/shared once; tests that damage or replace a store work on a server-side copy of it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ichbench.errors import IchbenchError
from ichbench.store import atomic, open_store, store_path
from ichbench.store.location import ENV as STORE_ENV, ObjectPath, parse
from ichbench.store.reader import StoreDamagedError
from tests.conftest import PHANTOM_SMALL

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "ichbench-test"


@dataclass
class S3:
    endpoint: str
    log: Path      # the server's request log: one line per HTTP request

    def requests(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def client(self):
        import boto3
        return boto3.client("s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto_server on a free port, a bucket, and the AWS_* environment pointing at it for this
    module's tests (restored after them: no other test file sees it)."""
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    exe = Path(sys.executable).parent / "moto_server"
    saved = {k: os.environ.get(k) for k in
             ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    proc = None
    try:
        # A free port is free only until someone binds it (another worker's Ray, say): when the
        # server dies on a taken port, take another.
        for _ in range(3):
            port = _free_port()
            with open(log, "w") as out:
                proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                        stderr=subprocess.STDOUT)
            if _serving(proc, port):
                break
            proc.wait(timeout=10)
        else:
            raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        os.environ.update(env)
        server = S3(env["AWS_ENDPOINT_URL"], log)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _serving(proc: subprocess.Popen, port: int, wait: float = 30) -> bool:
    """True once `proc` (still running) accepts connections on `port`; False when it exits."""
    deadline = time.time() + wait
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc.poll() is None
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def s3_phantom(s3, tmp_path_factory):
    """(home with the phantom's raw sources, store root URL) with the phantom ingested there."""
    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.ingest import ingest
    from ichbench.plugins import reset_registry
    home, url = tmp_path_factory.mktemp("s3_home"), f"s3://{BUCKET}/shared"
    reset_registry()
    os.environ[STORE_ENV] = url
    try:
        ingest(get_dataset("phantom"), home, options=IngestOptions(size=64, extra=dict(PHANTOM_SMALL)))
    finally:
        os.environ.pop(STORE_ENV)
    assert not (home / "stores").exists()
    return home, url


def _copy_root(src: str, dst: str) -> str:
    parse(src).copy_to(parse(dst))
    return dst


def _builds(store: ObjectPath) -> list[str]:
    return sorted(n for n in store.children() if n.startswith(atomic.BUILD_PREFIX))


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ichbench.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_the_store_root_is_a_folder_or_a_url_and_names_stay_plain(tmp_path, monkeypatch):
    from ichbench.names import PathEscapeError
    assert store_path(tmp_path, "phantom", "segmentation") == tmp_path / "stores" / "phantom" / "segmentation.zarr"
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "elsewhere"))
    assert store_path(tmp_path, "phantom", "segmentation") == tmp_path / "elsewhere" / "phantom" / "segmentation.zarr"
    monkeypatch.setenv(STORE_ENV, f"s3://{BUCKET}/a/b/")
    remote = store_path(tmp_path, "phantom", "segmentation")
    assert remote == ObjectPath(f"s3://{BUCKET}/a/b/phantom/segmentation.zarr") == parse(str(remote))
    with pytest.raises(PathEscapeError):
        store_path(tmp_path, "..", "segmentation")
    with pytest.raises(IchbenchError, match=r"^nope://x: store URLs of protocol 'nope' cannot be opened"):
        parse("nope://x")


@pytest.mark.slow
def test_ingest_publishes_one_build_and_data_info_verify_work_through_the_url(s3, s3_phantom, tmp_path):
    _, url = s3_phantom
    seg = parse(f"{url}/phantom/segmentation.zarr")
    assert isinstance(seg, ObjectPath) and _builds(seg) == [(seg / atomic.POINTER).read_text()]
    empty_home = tmp_path / "home"      # nothing local: every read goes to the server
    env = {"ICHBENCH_HOME": str(empty_home), STORE_ENV: url}
    info = _cli("data", "info", "phantom", "--json", env=env)
    assert info.returncode == 0, info.stderr
    roles = json.loads(info.stdout)["roles"]
    assert roles["segmentation"]["path"] == str(seg) and roles["segmentation"]["n_volumes"] == PHANTOM_SMALL["volumes"]
    assert roles["pretraining"]["n_slices"] > 0
    verify = _cli("--store-root", url, "data", "verify", "phantom", env={"ICHBENCH_HOME": str(empty_home)})
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{seg}: OK" in verify.stdout and f"{url}/phantom/pretraining.zarr: OK" in verify.stdout
    assert not (empty_home / "stores").exists()
    # a store root that cannot be a store URL is one line naming where it came from
    bad = _cli("--store-root", "s3://", "data", "info", "phantom", env={"ICHBENCH_HOME": str(empty_home)})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ichbench: error: --store-root s3://: no bucket in the store URL (expected s3://BUCKET/PREFIX)"]


@pytest.mark.slow
def test_a_flipped_byte_in_an_object_is_caught_naming_the_shard(s3, s3_phantom):
    url = _copy_root(s3_phantom[1], f"s3://{BUCKET}/damaged")
    seg = parse(f"{url}/phantom/segmentation.zarr")
    key = f"{atomic.published(seg).url.split('/', 3)[3]}/images/c/1/0/0"
    body = bytearray(s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    for i in range(len(body) // 2, len(body) // 2 + 16):
        body[i] ^= 0xFF
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    with pytest.raises(StoreDamagedError) as err:
        open_store(str(seg)).load(["images"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{seg}: array images, shard 1 (slices 64-127)")
    assert open_store(seg).verify() == [msg.split(": ", 1)[1].split("; the store is damaged")[0]]
    out = _cli("data", "verify", "phantom", "--role", "segmentation", env={STORE_ENV: url})
    assert out.returncode == 1 and f"{seg}: array images, shard 1 (slices 64-127)" in out.stdout


# The phantom's segmentation ingest into the store root that ICHBENCH_STORE_ROOT names, run as a
# script so that the test can kill it: its reader stops for good after `stop` volumes (their shards
# are on the server by then, the rest never come) and says so in a flag file.
KILLED_INGEST = """
import json, os, sys, time
from pathlib import Path
from ichbench.datasets.base import SEGMENTATION, IngestOptions
from ichbench.datasets.phantom.plugin import PhantomDataset
from ichbench.ingest.pipeline import ingest_role

home, flag, stop, extra = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])


class StopsMidway(PhantomDataset):
    def read(self, source, role, options, report):
        for i, vol in enumerate(super().read(source, role, options, report)):
            if i == stop:   # mid-ingest: wait here for the kill
                flag.write_text(str(os.getpid()))
                while True:
                    time.sleep(60)
            yield vol


ds = StopsMidway()
ingest_role(ds, home, ds.default_source(home), SEGMENTATION, IngestOptions(size=64, extra=extra), force=True)
"""


@pytest.mark.slow
def test_a_killed_ingest_leaves_the_previous_store_and_its_build_is_refused(s3, s3_phantom, tmp_path, monkeypatch):
    from ichbench.datasets.base import SEGMENTATION, IngestOptions, get_dataset
    from ichbench.ingest import pipeline
    from ichbench.store.layout import SHARD_SLICES
    home, shared = s3_phantom
    url = _copy_root(shared, f"s3://{BUCKET}/killed")
    monkeypatch.setenv(STORE_ENV, url)
    seg = store_path(home, "phantom", SEGMENTATION)
    before = open_store(seg).fingerprint
    [old_build] = _builds(seg)
    # a real kill -9 of an ingest that has written the first shard of every array of its build
    script, flag = tmp_path / "killed_ingest.py", tmp_path / "stopped"
    script.write_text(KILLED_INGEST)
    stop = SHARD_SLICES // PHANTOM_SMALL["slices"] + 2     # volumes past the first shard
    with open(tmp_path / "ingest.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(home), str(flag), str(stop),
                                 json.dumps(PHANTOM_SMALL)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), STORE_ENV: url})
    try:
        deadline = time.monotonic() + 300   # against a hang only: the flag comes within seconds
        while proc.poll() is None and not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, f"the ingest ended (exit {proc.returncode}) before it could be killed: " + \
            (tmp_path / "ingest.log").read_text()[-2000:]
        assert flag.exists(), "the ingest never reached the volume it stops at"
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # readers still get the previous store, whole
    assert (seg / atomic.POINTER).read_text() == old_build
    assert open_store(seg).fingerprint == before and open_store(seg).verify() == []
    # the half-built one is left as the kill left it: its first shards, no metadata saying it is complete
    [partial] = [b for b in _builds(seg) if b != old_build]
    assert (seg / partial / "images" / "c" / "0" / "0" / "0").exists()
    # the unpublished build, opened directly, is refused in one line
    with pytest.raises(IchbenchError) as err:
        open_store(seg / partial)
    assert str(err.value) == (f"{seg / partial}: not a complete ichbench store (format or fingerprint missing); "
                              "re-ingest it (`ichbench data ingest phantom --force`)")
    # the next complete ingest is published and the builds the pointer does not name are gone
    ds, opts = get_dataset("phantom"), IngestOptions(size=64, extra=dict(PHANTOM_SMALL))
    res = pipeline.ingest_role(ds, home, ds.default_source(home), SEGMENTATION, opts, force=True)
    assert res.fingerprint == before and not res.skipped_as_unchanged
    assert _builds(seg) == [(seg / atomic.POINTER).read_text()]
    assert old_build not in _builds(seg) and partial not in _builds(seg)


class Threshold:
    """A stand-in for the ICM U-Nets (`apply_icm` needs their call, key and provenance): what is
    tested here is how the derived array reaches object storage, not the model."""
    key, payload, metrics = "threshold-0hu", {"dataset": "phantom"}, {}

    def __init__(self, fail_after: int | None = None):
        self.fail_after, self.calls = fail_after, 0

    def __call__(self, hu, threshold):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("killed")
        return hu > 0


@pytest.mark.slow
def test_icm_apply_publishes_a_new_build_on_object_storage(s3, s3_phantom):
    from ichbench.icm.apply import apply_icm
    url = _copy_root(s3_phantom[1], f"s3://{BUCKET}/icm")
    seg = parse(f"{url}/phantom/segmentation.zarr")
    before = open_store(seg)
    [old_build] = _builds(seg)
    with pytest.raises(RuntimeError, match="killed"):
        apply_icm(str(seg), Threshold(fail_after=1), 0.5)
    assert "icm" not in open_store(seg).derived and _builds(seg) == [old_build]   # the copy was discarded
    record = apply_icm(str(seg), Threshold(), 0.5)
    after = open_store(seg)
    assert after.fingerprint == before.fingerprint and after.derived["icm"]["digest"] == record["digest"]
    assert after.verify() == [] and _builds(seg) != [old_build] and len(_builds(seg)) == 1
    data = after.load(["icm", "images"])   # (the previous build is gone: a publish deletes it)
    np.testing.assert_array_equal(data["icm"], data["images"] > 0)


TWO_NODE = """
import json, os, subprocess, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
home, url = sys.argv[1], sys.argv[2]
# the nodes started without the store root: workers can only learn it from their task arguments
cmd = [sys.executable, "-m", "ichbench.cli.main", "--home", home, "--store-root", url, "run", "-m", "unet_mixed",
       "-d", "phantom", "--profile", "smoke", "--folds", "0,1", "--address", cluster.address,
       "--set", "finetune.epochs=1", "--set", "finetune.steps_per_epoch=2"]
out = subprocess.run(cmd, capture_output=True, text=True)
sys.stderr.write(out.stderr[-3000:])
import mlflow, ray
ray.init(address=cluster.address)
nodes = [n["NodeID"] for n in ray.nodes()]
ray.shutdown()
cluster.shutdown()
mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
folds = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list",
                           filter_string="tags.`ichbench.kind` = 'fold'")
print("RESULT", json.dumps({"rc": out.returncode, "cluster": nodes,
                            "fold_nodes": [r.data.tags["ichbench.node"] for r in folds]}))
"""


@pytest.mark.slow
def test_two_node_run_reads_the_store_only_through_the_url(s3, s3_phantom, tmp_path):
    _, url = s3_phantom
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "two_node.py"
    script.write_text(TWO_NODE)
    seen = len(s3.requests())
    env = {k: v for k, v in os.environ.items() if k not in (STORE_ENV, "ICHBENCH_HOME")}
    cache = tmp_path / "node-cache"   # empty: the folds' node cache must be built from the URL
    out = subprocess.run([sys.executable, str(script), str(home), url], capture_output=True, text=True,
                         timeout=400, env={**env, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT),
                                           "ICHBENCH_NODE_CACHE": str(cache)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("RESULT ")][0][7:])
    assert result["rc"] == 0, out.stderr[-3000:]
    assert len(result["cluster"]) == 2 and sorted(result["fold_nodes"]) == sorted(result["cluster"])
    assert not (home / "stores").exists() and not (home / "raw").exists()
    build = atomic.published(parse(f"{url}/phantom/segmentation.zarr")).url.split("/", 3)[3]
    image_reads = [r for r in s3.requests()[seen:] if f"GET /{BUCKET}/{build}/images/c/" in r]
    # the two "nodes" share this machine's disk, so one node cache: built once, from the 4 image shards
    assert len(image_reads) >= 4, image_reads[-5:]
    assert list(cache.rglob("images-*.npy"))
