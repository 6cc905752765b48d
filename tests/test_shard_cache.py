"""Streamed shards through the node cache (`ichbench.train.shard_cache`): the same batches as
without it, files built in the first epoch and mapped afterwards, each checked once per process,
damaged files rebuilt with one line, nothing written when the cache is off or its disk too full."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import torch

from ichbench.resolve import resolve
from ichbench.store import open_store
from ichbench.store.layout import SHARD_SLICES
from ichbench.store.writer import StoreWriter
from ichbench.train import shard_cache
from ichbench.train.data import load_store
from ichbench.train.pretrain_data import pretrain_data as _pretrain_data
from ichbench.train.node_cache import ENV
from ichbench.train.shard_cache import ShardCache, for_stream
from ichbench.train.stream import ShardStream, read_held_out
from tests import shard_cache_builder

N = 4 * SHARD_SLICES - 10   # four shards, the last one short


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Random pixels at 32x32: a resize that mixed images, or a wrong row, would show."""
    path = tmp_path_factory.mktemp("shard-cache") / "s.zarr"
    rng = np.random.default_rng(0)
    w = StoreWriter(path, size=32, with_masks=False, with_brain=False)
    for start in range(0, N, SHARD_SLICES):
        n = min(SHARD_SLICES, N - start)
        labels = np.zeros((n, 7), np.uint8)
        labels[:, 1] = rng.integers(0, 2, n)
        images = rng.integers(-1000, 1000, (n, 32, 32)).astype(np.int16)
        w.add({"id": f"v{start}", "spacing": [5, 1, 1]}, images, labels)
    w.close({"dataset": "t", "role": "pretraining"}, {"size": 32})
    return open_store(path)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test starts as a new process would: no file checked yet."""
    monkeypatch.setattr(shard_cache, "_CHECKED", {})


ROWS = np.flatnonzero(np.arange(N) % 3 != 0)


def epochs(store, size, cache, n=2, rows=ROWS) -> list[list[tuple[list[int], torch.Tensor]]]:
    s = ShardStream(store, rows, size, 8, None, torch.Generator().manual_seed(0), 2, cache=cache)
    return [[(b.rows.tolist(), b.images.clone()) for b in s.epoch()] for _ in range(n)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(r == q and torch.equal(i, j) for (r, i), (q, j) in zip(x, y)) for x, y in zip(a, b))


def files(cache: ShardCache) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.folder.iterdir()}


def count_calls(monkeypatch, obj, name: str) -> list:
    calls, real = [], getattr(obj, name)
    monkeypatch.setattr(obj, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize("size", [32, 16, 48])   # the store's size, smaller, larger
def test_batches_are_the_same_with_and_without_the_cache(store, tmp_path, size):
    plain = epochs(store, size, None)
    cache = ShardCache(store, "images", size, tmp_path)
    assert same(epochs(store, size, cache), plain)   # epoch 1 builds, epoch 2 maps
    assert same(epochs(store, size, ShardCache(store, "images", size, tmp_path)), plain)
    expected = {f"{k}.npy" for k in range(4)} | ({f"{k}.sha256" for k in range(4)} if size != 32 else set())
    assert set(files(cache)) == expected
    hold = np.arange(0, N, 3)   # the rows the stream leaves out, as the engine's held-out slices
    assert torch.equal(read_held_out(store, hold, size, cache).images,
                       read_held_out(store, hold, size, None).images)


def test_a_second_stream_maps_the_files_without_reading_the_store_or_rehashing(store, tmp_path, monkeypatch):
    cache = ShardCache(store, "images", 16, tmp_path)
    reference = epochs(store, 16, cache, n=1)
    built = files(cache)
    plain = epochs(store, 16, None, n=3)
    reads = count_calls(monkeypatch, store, "read_shard")
    hashes = count_calls(monkeypatch, shard_cache, "shard_digest")
    # the builder's own files count as checked in its process
    assert same(epochs(store, 16, ShardCache(store, "images", 16, tmp_path), n=1), reference)
    assert (reads, hashes, files(cache)) == ([], [], built)
    # another process on the node: each file is hashed once, on its first use, then remembered
    monkeypatch.setattr(shard_cache, "_CHECKED", {})
    assert same(epochs(store, 16, ShardCache(store, "images", 16, tmp_path), n=3), plain)
    assert (reads, len(hashes), files(cache)) == ([], 4, built)


@pytest.mark.parametrize("size", [32, 16])
def test_a_flipped_byte_is_found_and_the_shard_rebuilt(store, tmp_path, size, capsys):
    reference = epochs(store, size, None, n=1)
    cache = ShardCache(store, "images", size, tmp_path)
    epochs(store, size, cache, n=1)
    path = cache.path(2)
    before = path.stat()
    with open(path, "r+b") as fh:   # in place, as a disk error or a stray write would
        fh.seek(before.st_size - 1000)
        byte = fh.read(1)
        fh.seek(before.st_size - 1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    shard_cache._CHECKED.clear()   # a new process: nothing checked yet
    assert same(epochs(store, size, cache, n=1), reference)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: shard 2's rows differ from their recorded digest; rebuilding it from {store.path}"]
    assert path.stat().st_ino != before.st_ino
    assert same(epochs(store, size, cache, n=1), reference) and capsys.readouterr().err == ""


def test_a_file_changed_after_its_check_is_checked_again(store, tmp_path, capsys):
    """The process remembers a checked file by inode, size and mtime: a write in place (a new
    mtime; set here, as a write in the same clock tick keeps the old one) makes it check again."""
    cache = ShardCache(store, "images", 16, tmp_path)
    reference = epochs(store, 16, cache, n=1)
    path = cache.path(1)
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size - 1)
        last = fh.read(1)
        fh.seek(st.st_size - 1)
        fh.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert same(epochs(store, 16, cache, n=1), reference)
    assert capsys.readouterr().err.startswith(f"{path}: shard 1's rows differ from their recorded digest; rebuilding")


def test_a_truncated_file_or_a_lost_digest_record_is_rebuilt(store, tmp_path, capsys):
    cache = ShardCache(store, "images", 16, tmp_path)
    reference = epochs(store, 16, cache, n=1)
    with open(cache.path(0), "r+b") as fh:
        fh.truncate(cache.path(0).stat().st_size // 2)
    cache.path(3).with_suffix(".sha256").unlink()
    shard_cache._CHECKED.clear()   # a new process
    assert same(epochs(store, 16, cache, n=1), reference)
    err = sorted(capsys.readouterr().err.strip().splitlines())
    assert len(err) == 2
    assert err[0].startswith(f"{cache.path(0)}: truncated or overlong")
    assert err[0].endswith(f"rebuilding it from {store.path}")
    assert err[1].startswith(f"{cache.path(3)}: its digest record (.sha256) is missing")
    assert cache.path(3).with_suffix(".sha256").exists()
    shard_cache._CHECKED.clear()
    assert same(epochs(store, 16, cache, n=1), reference) and capsys.readouterr().err == ""


@pytest.mark.slow
def test_concurrent_builders_of_the_same_shards_leave_good_files(store, tmp_path, capsys, monkeypatch):
    """Two processes (as two workers of one node) build every shard's files at the same time: each
    finds a shard missing, reads it and waits for the other before writing it (a barrier), so both
    write the same files at once. Each gets the batches it would get alone, says nothing, and the
    files left are whole and check in a fresh process."""
    reference = epochs(store, 16, None, n=1)
    ctx = multiprocessing.get_context("spawn")
    lockstep = ctx.Barrier(2, timeout=300)   # against a hang only
    outs = [tmp_path / f"builder{i}.pt" for i in range(2)]
    procs = [ctx.Process(target=shard_cache_builder.one_epoch,
                         args=(str(store.path), str(tmp_path), 16, ROWS, lockstep, str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    for out in outs:
        got = torch.load(out, weights_only=False)
        assert got["error"] is None, got["error"]
        assert sorted(got["built"]) == list(range(4))   # it built every shard, as the other did
        assert same([got["batches"]], reference) and got["stderr"] == ""
    shard_cache._CHECKED.clear()
    cache = ShardCache(store, "images", 16, tmp_path)
    assert set(files(cache)) == {f"{k}.npy" for k in range(4)} | {f"{k}.sha256" for k in range(4)}
    reads = count_calls(monkeypatch, store, "read_shard")
    assert same(epochs(store, 16, cache, n=1), reference) and capsys.readouterr().err == ""
    assert reads == []   # every file checked and mapped: none rebuilt from the store
    assert not [p for p in cache.folder.iterdir() if p.name.startswith(".")]   # no temporary left


def pretrain_config(stream=True):
    return resolve("multilabel_dl", "phantom", "smoke", [f"data.stream={str(stream).lower()}",
                                                         "pretrain.image_size=16", "pretrain.holdout=20"])


def test_the_engine_says_where_streamed_shards_go(store, tmp_path, monkeypatch):
    cfg = pretrain_config()
    monkeypatch.setenv(ENV, str(tmp_path / "nc"))
    cached = _pretrain_data(store, store.path, cfg, withhold_labels=False)
    assert cached.cache is not None and cached.why.endswith(f", cached in {cached.cache.folder}")
    assert "\n" not in cached.why and not list((tmp_path / "nc").glob("*/*.npy"))   # no whole-array file
    monkeypatch.setenv(ENV, "off")
    plain = _pretrain_data(store, store.path, cfg, withhold_labels=False)
    assert plain.cache is None and ", not cached (ICHBENCH_NODE_CACHE=off): slower, each 1024 rows" in plain.why
    held = load_store(store.path, 16, rows=plain.arrays.rows.numpy(), names=("images", "labels", "volume"))
    for arrays in (cached.arrays, plain.arrays):
        assert torch.equal(arrays.images, held.images) and torch.equal(arrays.labels, held.labels)
        assert torch.equal(arrays.volume, held.volume) and torch.equal(arrays.rows, held.rows)


def test_off_or_a_full_disk_streams_without_writing(store, tmp_path, monkeypatch):
    shards = np.arange(4)
    monkeypatch.setenv(ENV, "off")
    assert for_stream(store, "images", shards, 16) == (None, "not cached (ICHBENCH_NODE_CACHE=off)")
    monkeypatch.setenv(ENV, str(tmp_path / "nc"))
    need = sum(ShardCache(store, "images", 16, tmp_path / "nc").file_bytes(k) for k in shards)
    real = shard_cache.shutil.disk_usage
    monkeypatch.setattr(shard_cache.shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    cache, why = for_stream(store, "images", shards, 16)
    assert cache is None and why.startswith("not cached: ") and "free, its shards need" in why
    monkeypatch.setattr(shard_cache.shutil, "disk_usage", lambda p: real(p)._replace(free=need))
    cache, why = for_stream(store, "images", shards, 16)
    assert cache is not None and why == f"cached in {cache.folder}"
    assert not [p for p in (tmp_path / "nc").rglob("*") if p.is_file()]   # nothing written before streaming


def test_a_cache_that_cannot_be_written_streams_from_the_store_said_once(store, tmp_path, capsys):
    cache = ShardCache(store, "images", 16, tmp_path)
    cache.folder.parent.mkdir(parents=True)
    cache.folder.write_text("a file where the shards' folder would be")   # every write fails
    assert same(epochs(store, 16, cache), epochs(store, 16, None))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the node cache" in err[0] and "streamed from the store" in err[0]
