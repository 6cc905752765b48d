"""One copy of a store's arrays per node (issue 10 §2): the node cache is built once, mapped by
every process, checked on every mapping, and rebuilt when damaged or when the store changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ichbench.datasets.base import IngestOptions
from ichbench.errors import IchbenchError
from ichbench.ingest import ingest
from ichbench.store import open_store
from ichbench.store.reader import StoreDamagedError
from ichbench.train.data import load_store
from ichbench.train.node_cache import ENV, cache_path
from tests.synthetic import SyntheticDataset

ROOT = Path(__file__).resolve().parents[1]

# A child process: load the store through the cache and say, from /proc/self/maps, which file
# (path and inode, as the kernel maps it) holds the memory of each tensor.
CHILD = """
import json, os, sys
from pathlib import Path
from ichbench.train.data import load_store
arrays = load_store(Path(sys.argv[1]), int(sys.argv[2]))
maps = [line.split() for line in open("/proc/self/maps")]
def mapping(t):
    p = t.data_ptr()
    for m in maps:
        lo, hi = (int(x, 16) for x in m[0].split("-"))
        if lo <= p < hi and len(m) == 6:
            return {"path": m[5], "inode": int(m[4])}
    return None
print(json.dumps({"pid": os.getpid(), "images": mapping(arrays.images), "masks": mapping(arrays.masks),
                  "sum": int(arrays.images.sum())}))
"""


@pytest.fixture
def store(home, tmp_path, monkeypatch):
    """150 slices at 32x32 (three shards: 64 + 64 + 22), and an empty node cache for this test."""
    monkeypatch.setenv(ENV, str(tmp_path / "node-cache"))
    [res] = ingest(SyntheticDataset(n=30), home, source=home, options=IngestOptions(size=32))
    return res.path


def reference(path: Path, size: int, monkeypatch, rows=None):
    """The arrays read the old way, into this process."""
    with monkeypatch.context() as m:
        m.setenv(ENV, "off")
        return load_store(path, size, rows=rows)


def assert_same(a, b) -> None:
    for name in ("images", "labels", "volume", "masks", "brain", "rows"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def cache_file(path: Path, name: str, size: int) -> Path:
    return cache_path(Path(os.environ[ENV]), open_store(path), name, size)


def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_two_processes_map_one_cache_file_built_once(store):
    """Both processes' tensors live in a mapping of the same cache file (same inode, which is
    still the file's): one build, shared, and no private copy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(store), "16"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for name in ("images", "masks"):
        path = cache_file(store, name, 16)
        seen = [o[name] for o in outs]
        assert seen[0] == seen[1] == {"path": str(path), "inode": path.stat().st_ino}
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["built_by"]["pid"] in {o["pid"] for o in outs}
    assert outs[0]["sum"] == outs[1]["sum"]


def test_cached_arrays_equal_a_direct_read_and_are_maps(store, monkeypatch):
    for size in (32, 16):   # the store's own size (checked against its digests) and a resized one
        arrays, direct = load_store(store, size), reference(store, size, monkeypatch)
        assert_same(arrays, direct)
        assert arrays.images.shape == (150, size, size)
        maps = Path("/proc/self/maps").read_text()
        assert str(cache_file(store, "images", size)) in maps
    rows = np.array([140, 3, 70, 64])
    assert_same(load_store(store, 16, rows=rows), reference(store, 16, monkeypatch, rows=rows))


@pytest.mark.parametrize("size", [32, 16])
def test_a_flipped_byte_in_the_cache_is_caught_and_rebuilt(store, size, monkeypatch, capsys):
    load_store(store, size)
    path = cache_file(store, "images", size)
    before = path.stat().st_ino
    flip_byte(path, path.stat().st_size - 22 * size * size * 2 - 100)   # in shard 1 (rows 64-127)
    arrays = load_store(store, size)
    line = capsys.readouterr().err.strip().splitlines()
    assert line == [f"{path}: shard 1 (rows 64-127) differs from its recorded digest; rebuilding it from {store}"]
    assert path.stat().st_ino != before
    assert_same(arrays, reference(store, size, monkeypatch))


def test_a_truncated_cache_file_or_a_lost_digest_record_is_rebuilt(store, monkeypatch, capsys):
    load_store(store, 16)
    images = cache_file(store, "images", 16)
    with open(images, "r+b") as fh:
        fh.truncate(images.stat().st_size // 2)
    cache_file(store, "masks", 16).with_suffix(".json").unlink()
    arrays = load_store(store, 16)
    err = capsys.readouterr().err
    assert f"{images}: unreadable or truncated" in err
    assert "masks" in err and "its digest record (.json) is missing" in err
    assert_same(arrays, reference(store, 16, monkeypatch))


def test_a_changed_store_gets_a_new_cache(store, home):
    old = load_store(store, 16)
    old_file = cache_file(store, "images", 16)
    [res] = ingest(SyntheticDataset(n=30, offset=5), home, source=home, options=IngestOptions(size=32),
                   force=True)
    assert res.path == store and open_store(store).fingerprint != old.fingerprint
    new = load_store(store, 16)
    assert cache_file(store, "images", 16) != old_file and old_file.exists()
    assert new.fingerprint == open_store(store).fingerprint
    assert not torch.equal(new.images, old.images)


def test_a_damaged_store_stops_the_build_and_leaves_no_cache_file(store):
    shard = store / "images" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match="array images, shard 1"):
        load_store(store, 16)
    folder = cache_file(store, "images", 16).parent
    assert not [p for p in folder.iterdir()
                if p.name.startswith(("images", ".images")) and not p.name.endswith(".lock")]


def test_a_store_damaged_after_its_cache_was_built_trains_on_the_checked_copy(store, monkeypatch):
    """The cache holds what the store's digests describe, so training goes on from it; the
    store's own damage is still found by every read of it and by `data verify`."""
    before = load_store(store, 16)
    shard = store / "images" / "c" / "1" / "0" / "0"
    shard.unlink()
    assert_same(load_store(store, 16), before)
    assert any("array images, shard 1" in p for p in open_store(store).verify())
    with pytest.raises(StoreDamagedError):
        reference(store, 16, monkeypatch)


def test_off_reads_into_the_process_and_writes_nothing(store, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "off")
    arrays = load_store(store, 16)
    assert not (tmp_path / "node-cache").exists()
    assert arrays.images.shape == (150, 16, 16) and arrays.images.is_contiguous()


def test_an_unusable_cache_folder_is_one_line(store, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV, str(blocker))
    with pytest.raises(IchbenchError) as err:
        load_store(store, 16)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{blocker}/") and f"{ENV}=off" in msg
