"""Streaming a store past RAM (`ichbench.train.stream`): coverage of the selection, the in-memory
sampler's batches, the pixels each batch carries, the same batches after a resume mid-epoch, flat
memory as the store grows, damage found by the checked read, the automatic choice, and the `data`
config section."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from ichbench.config import DataConfig
from ichbench.errors import IchbenchError
from ichbench.leaderboard.recorded_config import rebuild
from ichbench.resolve import resolve
from ichbench.store import open_store
from ichbench.store.layout import SHARD_SLICES
from ichbench.store.reader import StoreDamagedError
from ichbench.store.writer import StoreWriter
from ichbench.train.data import EpochSampler
from ichbench.train.stream import MEMORY_FRACTION, ShardStream, in_memory_bytes, memory_given, should_stream


def write_store(path: Path, n: int, size: int = 16) -> Path:
    """`n` slices whose every pixel holds the slice's row, so a batch's pixels name its rows."""
    w = StoreWriter(path, size=size, with_masks=False, with_brain=False)
    for start in range(0, n, SHARD_SLICES):
        rows = np.arange(start, min(start + SHARD_SLICES, n))
        images = np.broadcast_to(rows[:, None, None], (len(rows), size, size)).astype(np.int16)
        labels = np.zeros((len(rows), 7), np.uint8)
        labels[:, 1] = rows % 3 == 0
        w.add({"id": f"v{start}", "spacing": [5, 1, 1]}, images, labels)
    w.close({"dataset": "t", "role": "pretraining"}, {"size": size})
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(write_store(tmp_path_factory.mktemp("stream") / "s.zarr", 10 * SHARD_SLICES - 5))


def stream(store, rows, seed=0, **kw) -> ShardStream:
    opts = {"image_size": 16, "batch_size": 8, "steps_per_epoch": None, "shuffle_shards": 2} | kw
    return ShardStream(store, rows, generator=torch.Generator().manual_seed(seed), **opts)


def rows_of(epoch) -> list[list[int]]:
    out = []
    for b in epoch:
        assert torch.equal(b.images[:, 0, 0].long(), b.rows)   # the pixels are those of the rows
        out.append(b.rows.tolist())
    return out


def test_an_epoch_streams_every_selected_row_once_as_the_in_memory_sampler_draws_them(store):
    rows = np.flatnonzero(np.arange(store.n_slices) % 5 != 0)
    batches = rows_of(stream(store, rows).epoch())
    flat = [r for b in batches for r in b]
    assert sorted(flat) == rows.tolist()
    assert all(len(b) == 8 for b in batches[:-1])
    # the in-memory path's draws over the same rows (tests/test_batch_mixing.py: on every path)
    every = torch.from_numpy(rows)
    assert batches == [b.tolist() for b in EpochSampler(lambda g: every, 8, None, torch.Generator().manual_seed(0))
                       .epoch()]
    assert len({r // SHARD_SLICES for r in batches[0]}) > 2   # a batch is not a window of neighbouring shards
    assert batches == rows_of(stream(store, rows).epoch())      # the same seed, the same batches
    assert batches != rows_of(stream(store, rows, seed=1).epoch())


def test_steps_per_epoch_and_resized_images(store):
    rows = np.arange(100)
    s = stream(store, rows, steps_per_epoch=30, image_size=8, drop_last=True)
    batches = list(s.epoch())
    assert len(batches) == 30 and all(len(b.rows) == 8 for b in batches)   # several passes over 100 rows
    assert batches[0].images.shape[1:] == (8, 8) and batches[0].images.dtype == torch.int16
    assert torch.equal(batches[0].images[:, 4, 4].long(), batches[0].rows)


def test_an_exception_in_the_training_step_stops_the_prefetch_thread(store):
    epoch = stream(store, np.arange(300)).epoch()
    with pytest.raises(RuntimeError):
        for _ in epoch:
            raise RuntimeError("the step failed")
    assert not epoch._thread.is_alive()


def test_a_damaged_shard_stops_the_stream_naming_it(tmp_path):
    path = write_store(tmp_path / "s.zarr", 4 * SHARD_SLICES)
    (path / "images" / "c" / "2" / "0" / "0").unlink()
    with pytest.raises(StoreDamagedError, match="array images, shard 2 "):
        for _ in stream(open_store(path), np.arange(4 * SHARD_SLICES)).epoch():
            pass


@pytest.mark.slow
def test_memory_stays_flat_as_the_store_grows(tmp_path):
    def peak(n_shards: int) -> tuple[int, int]:
        st = open_store(write_store(tmp_path / f"s{n_shards}.zarr", n_shards * SHARD_SLICES, size=64))
        s = stream(st, np.arange(st.n_slices), image_size=64, batch_size=32, shuffle_shards=2)
        gc.collect()
        tracemalloc.start()
        try:
            delivered = sum(len(b.rows) for b in s.epoch())
            return tracemalloc.get_traced_memory()[1], delivered * 64 * 64 * 2
        finally:
            tracemalloc.stop()
    small, _ = peak(4)
    big, big_bytes = peak(32)
    # 8x the store, same window: the peak stays that of a few windows (measured 3.4 and 3.5 MB),
    # far below the 16.8 MB of images the big store's epoch delivers
    assert big < 2 * small and big < big_bytes / 2, (small, big, big_bytes)


def test_the_engine_streams_when_the_arrays_do_not_fit(store):
    rows = np.arange(store.n_slices)
    need = in_memory_bytes(store, rows, 16)
    assert need >= store.n_slices * 16 * 16 * 2
    streamed, line = should_stream(None, need, (int(need / MEMORY_FRACTION) - 1, "available"), store.path)
    assert streamed and line.endswith("streaming shards") and "\n" not in line and str(store.path) in line
    assert not should_stream(None, need, (int(need / MEMORY_FRACTION) + 1, "available"), store.path)[0]
    assert should_stream(True, 1, (10**12, "available"), store.path)[0]
    assert not should_stream(False, 10**12, (1, "available"), store.path)[0]


@pytest.mark.slow
def test_a_ray_task_is_given_the_memory_it_asked_for(ray_session):
    got = ray_session.get(ray_session.remote(memory=300 * 2**20)(memory_given).remote())
    assert got == (300 * 2**20, "the Ray task's memory")
    assert memory_given()[1] == "available"   # the driver itself: the system's available memory


def test_data_section_is_set_by_overrides_and_leaves_identities_alone():
    default = resolve("unet_mixed", "phantom", "smoke")
    cfg = resolve("unet_mixed", "phantom", "smoke", ["data.stream=true", "data.shuffle_shards=4"])
    assert "data" not in default.to_dict()   # run keys of runs made before the section existed stay
    assert (cfg.data.stream, cfg.data.shuffle_shards) == (True, 4)
    assert cfg.hash() == default.hash() and cfg.finetune_hash() == default.finetune_hash()
    assert cfg.to_dict()["data"] == {"stream": True, "shuffle_shards": 4}
    assert rebuild(cfg.to_dict()).data == cfg.data
    assert rebuild(default.to_dict()).data == DataConfig()
    assert resolve("unet_mixed", "phantom", "smoke", ["data.stream=true", "data.stream=none"]).data.stream is None
    with pytest.raises(IchbenchError, match="data.stream"):
        resolve("unet_mixed", "phantom", "smoke", ["data.stream=maybe"])
    with pytest.raises(IchbenchError, match="data.shuffle_shards"):
        resolve("unet_mixed", "phantom", "smoke", ["data.shuffle_shards=0"])
    with pytest.raises(IchbenchError, match="shuffle_shards"):
        ShardStream(None, np.arange(3), 16, 8, None, torch.Generator(), shuffle_shards=0)
