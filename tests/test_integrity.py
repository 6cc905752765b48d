"""Never train on, or reuse results from, a damaged store (issue 15 §1).

Every read decodes a store shard by shard and checks each shard against the digest recorded when
it was written; a flipped byte, a deleted shard file, a broken shard index or a broken zarr.json
stops the read with one line naming the store, the array and the shard."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ichbench.resolve import resolve
from ichbench.datasets.base import IngestOptions
from ichbench.errors import IchbenchError
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.ingest import ingest
from ichbench.store.reader import StoreDamagedError
from ichbench.train.engine import finetune
from tests.synthetic import SyntheticDataset


def shard_file(store: Path, array: str, k: int) -> Path:
    return store / array / "c" / str(k) / "0" / "0"


def flip(path: Path, offset_from_end: int | None = None, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset_from_end is None else len(data) - offset_from_end
    for i in range(at, at + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def store(home, tmp_path, monkeypatch):
    """A 150-slice store: three shards of images (64 + 64 + 22 slices). Its own node cache, so that
    training reads the store itself, not a checked copy an earlier test left in the session's."""
    monkeypatch.setenv("ICHBENCH_NODE_CACHE", str(tmp_path / "node-cache"))
    [res] = ingest(SyntheticDataset(n=30), home, source=home, options=IngestOptions(size=32))
    assert open_store(res.path).verify() == []
    return res.path


def damaged(path: Path, *names) -> str:
    with pytest.raises(StoreDamagedError) as err:
        open_store(path).load(names or None)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{path}: ") and "re-ingest it (`ichbench data ingest synthetic --force`)" in msg
    return msg


def test_flipped_bytes_in_one_chunk_stop_the_read_naming_the_shard(store):
    flip(shard_file(store, "images", 1))
    msg = damaged(store)
    assert "array images, shard 1 (slices 64-127)" in msg
    # the other arrays, and rows outside the damaged shard, still read
    assert open_store(store).load(["labels", "masks"])["labels"].shape == (150, 7)
    assert open_store(store).read("images", np.arange(0, 64)).shape == (64, 32, 32)
    assert open_store(store).verify() == [msg.split(": ", 1)[1].split("; the store is damaged")[0]]


def test_a_deleted_shard_is_not_read_as_zeros(store):
    shard_file(store, "images", 2).unlink()
    assert "array images, shard 2 (slices 128-149) differs from the digest" in damaged(store, "images")


def test_a_damaged_shard_index_is_one_line(store):
    flip(shard_file(store, "masks", 0), offset_from_end=8, n=4)   # the index and its crc32c sit at the end
    msg = damaged(store, "masks")
    assert "array masks, shard 0 (slices 0-63) cannot be decoded (" in msg


def test_damaged_metadata_is_one_line(store):
    (store / "zarr.json").write_bytes(os.urandom(300))
    with pytest.raises(IchbenchError) as err:
        open_store(store)
    assert str(err.value).startswith(f"{store}: store metadata (zarr.json) is unreadable (")
    assert "\n" not in str(err.value)


def test_training_refuses_a_damaged_store(store, tmp_path):
    split = split_for_store(open_store(store), 3)
    flip(shard_file(store, "images", 0))
    cfg = resolve("unet_mixed", "phantom", "smoke", ["finetune.epochs=1", "finetune.steps_per_epoch=1",
                                                      "finetune.image_size=32"])
    with pytest.raises(StoreDamagedError, match="array images, shard 0"):
        finetune("unet_mixed", store, split, 0, cfg, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out" / "result.json").exists()


def cli(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ichbench.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "ICHBENCH_HOME": str(home), "RAY_ADDRESS": "",
                               "ICHBENCH_NODE_CACHE": str(home / "node-cache")}, timeout=300)


@pytest.mark.slow
def test_run_neither_trains_on_nor_reuses_results_of_a_damaged_store(phantom_home):
    """The issue's two failures: a damaged store trained to exit 0, and a rerun handed out the
    finished folds' cached results. Both now stop with one line and leave no FINISHED parent."""
    args = ["run", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke", "--folds", "0",
            "--set", "finetune.epochs=1", "--set", "finetune.steps_per_epoch=2"]
    seg = phantom_home / "stores" / "phantom" / "segmentation.zarr"
    backup = phantom_home.parent / "seg-backup"
    shutil.copytree(seg, backup)
    flip(shard_file(seg, "images", 1))
    out = cli(phantom_home, *args)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "array images, shard 1" in out.stderr.strip().splitlines()[-1]
    assert not list((phantom_home / "runs").rglob("result.json"))
    # intact again: the run finishes; then damage it and rerun the finished command
    shutil.rmtree(seg)
    shutil.copytree(backup, seg)
    assert cli(phantom_home, *args).returncode == 0
    assert list((phantom_home / "runs").rglob("result.json"))
    shard_file(seg, "masks", 0).unlink()
    out = cli(phantom_home, *args)
    assert out.returncode == 2, out.stdout[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert "array masks, shard 0" in last and "are not reused on a damaged store" in last
    # `data verify` names the same shard
    verify = cli(phantom_home, "data", "verify", "phantom", "--role", "segmentation")
    assert verify.returncode == 1 and "array masks, shard 0 (slices 0-63)" in verify.stdout + verify.stderr
    import mlflow
    from ichbench.tracking import default_tracking_uri
    mlflow.set_tracking_uri(default_tracking_uri(phantom_home))
    parents = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list",
                                 filter_string="tags.`ichbench.kind` = 'parent'")
    assert [p.info.status for p in parents] == ["FINISHED"]   # the good run only; the refusals made none
