"""Ingest that scales with workers (issue 10 §1): worker processes compress, hash and write whole
shards; the store is the same whatever the number of workers; `verify --workers` checks shards in
parallel and names the damaged ones; a killed ingest leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ichbench.datasets.base import IngestOptions
from ichbench.datasets.rsna import RsnaDataset
from ichbench.errors import InputError
from ichbench.ingest import ingest
from ichbench.parallel import OrderedPool
from ichbench.store import open_store, store_path
from tests.synthetic import SyntheticDataset
from tests.test_integrity import cli, flip, shard_file
from tests.test_rsna import synthetic_series, write_csv

ROOT = Path(__file__).resolve().parents[1]


def _same_store(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    assert sa.fingerprint == sb.fingerprint and sa.volumes == sb.volumes
    assert sa.attrs["shard_digests"] == sb.attrs["shard_digests"]
    da, db = sa.load(), sb.load()
    assert da.keys() == db.keys()
    for name in da:
        assert np.array_equal(da[name], db[name]), name


def test_two_workers_write_the_store_one_worker_writes(tmp_path, monkeypatch):
    """300 slices (5 shards, 5 arrays): the same fingerprint and arrays, and every shard written by
    a worker process of the ingest's 2-worker pool, none by the driver. (Which worker writes which
    shard is the scheduler's choice: one of them may write them all.)"""
    pool_workers: list[set[int]] = []   # the processes of each pool with workers, when it closes
    real_close = OrderedPool.close

    def close(self):
        if self._ex is not None:
            pool_workers.append(set(self._ex._processes))
        real_close(self)

    monkeypatch.setattr(OrderedPool, "close", close)
    results = {}
    for w in (1, 2):
        home = tmp_path / f"w{w}"
        home.mkdir()
        [results[w]] = ingest(SyntheticDataset(n=60), home, source=home,
                              options=IngestOptions(size=96, workers=w))
    _same_store(results[1].path, results[2].path)
    assert results[1].shard_writers == {os.getpid(): 25}
    writers = results[2].shard_writers
    [workers] = pool_workers   # the 2-worker ingest's pool (the 1-worker one has no processes)
    assert sum(writers.values()) == 25 and os.getpid() not in writers
    assert 1 <= len(workers) <= 2 and os.getpid() not in workers and set(writers) <= workers, (writers, workers)
    assert open_store(results[2].path).verify() == []


def test_rsna_decode_and_write_in_workers_match_one_process(tmp_path):
    """The rsna reader (decoding in its workers) with 2 workers gives the 1-worker store, byte for
    byte in its decoded arrays, across three shards and two series."""
    src = tmp_path / "rsna"
    img = src / "stage_2_train"
    img.mkdir(parents=True)
    rows = synthetic_series(img, 80, ich=("iph",))
    rows += synthetic_series(img, 70, uid="1.2.826.0.1.3680043.8.498.78", prefix="ID_two", ich=("sdh",))
    write_csv(src, rows)
    paths = {}
    for w in (1, 2):
        [res] = ingest(RsnaDataset(), tmp_path / f"home{w}", src,
                       options=IngestOptions(size=32, selection="all", holdout=10, workers=w))
        paths[w] = res.path
        assert open_store(res.path).n_slices == 150
    _same_store(paths[1], paths[2])


def test_a_failed_strict_ingest_with_workers_keeps_the_previous_store(home):
    [res] = ingest(SyntheticDataset(n=30), home, source=home, options=IngestOptions(size=32, workers=2))
    before = open_store(res.path).fingerprint

    def nan(v):
        v.hu[0, 0, 0] = np.nan

    with pytest.raises(InputError, match="/fake/V028: CT contains NaN"):
        ingest(SyntheticDataset(n=30, offset=3, bad={25: nan}), home, source=home,
               options=IngestOptions(size=32, workers=2, strict=True), force=True)
    assert open_store(res.path).fingerprint == before and open_store(res.path).verify() == []
    assert not list(res.path.parent.glob(".segmentation.zarr.tmp-*"))


@pytest.fixture
def damaged_store(home):
    """A 150-slice store (3 shards per array) with two damaged shards."""
    [res] = ingest(SyntheticDataset(n=30), home, source=home, options=IngestOptions(size=32, workers=2))
    flip(shard_file(res.path, "images", 1))
    shard_file(res.path, "masks", 2).unlink()
    return res.path


def test_verify_with_workers_names_each_damaged_shard_as_serial_does(damaged_store):
    expected = ["array images, shard 1 (slices 64-127) differs from the digest recorded when it was written",
                "array masks, shard 2 (slices 128-149) differs from the digest recorded when it was written"]
    assert open_store(damaged_store).verify() == expected
    assert open_store(damaged_store).verify(workers=2) == expected


def test_data_verify_workers_on_the_command_line(phantom_home):
    seg = phantom_home / "stores" / "phantom" / "segmentation.zarr"
    assert cli(phantom_home, "data", "verify", "phantom", "--workers", "2").returncode == 0
    flip(shard_file(seg, "images", 0))
    out = cli(phantom_home, "data", "verify", "phantom", "--workers", "2")
    assert out.returncode == 1
    lines = [ln for ln in out.stdout.splitlines() if "shard" in ln]
    assert lines == [f"{seg}: array images, shard 0 (slices 0-63) differs from the digest recorded when it was "
                     "written"]


KILL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from ichbench.datasets.base import IngestOptions
from ichbench.ingest import ingest
from tests.synthetic import SyntheticDataset
if __name__ == "__main__":   # the pools' fork server imports this file as __main__ too
    ingest(SyntheticDataset(n=400, delay=0.03, offset=7), Path(sys.argv[1]), source=Path(sys.argv[1]),
           options=IngestOptions(size=32, workers=2), force=True)
"""


def _descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc (parent links)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_kill_9_mid_ingest_with_workers_leaves_no_worker_and_the_previous_store(home, tmp_path):
    [res] = ingest(SyntheticDataset(n=3), home, source=home, options=IngestOptions(size=32))
    before = res.fingerprint
    script = tmp_path / "ingest_workers.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.Popen([sys.executable, str(script), str(home)])
    final = store_path(home, "synthetic", "segmentation")
    deadline = time.time() + 120
    workers: set[int] = set()
    # wait until shards are being written by the workers (the driver's pool and its fork server)
    while time.time() < deadline and proc.poll() is None and not (
            list(final.parent.glob(".segmentation.zarr.tmp-*/images/c")) and len(workers) >= 2):
        workers |= _descendants(proc.pid)
        time.sleep(0.1)
    assert proc.poll() is None, f"the ingest ended (exit {proc.returncode}) before it could be killed"
    assert list(final.parent.glob(".segmentation.zarr.tmp-*/images/c")), "no shard was written"
    assert len(workers) >= 2, "the ingest never started its worker processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert [p for p in workers if _alive(p)] == [], "worker processes outlived the killed driver"
    st = open_store(final)
    assert st.fingerprint == before and st.verify(workers=2) == []
    [again] = ingest(SyntheticDataset(n=3, offset=7), home, source=home,
                     options=IngestOptions(size=32, workers=2), force=True)
    assert again.fingerprint != before and open_store(final).verify() == []
    assert not list(final.parent.glob(".segmentation.zarr.*"))
