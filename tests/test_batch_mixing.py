"""Pretraining batches are mixed like a shuffled DataLoader on every data path (issue 21 §2).

A store is written series by series (a volume's slices in consecutive rows, as every ingest writes
them). Each path the engine can choose — loaded into memory, mapped from the node cache, streamed
through the node cache's shard files, streamed straight from the store, streamed because the
memory given is too small — draws one epoch of batches of 60 with the engine's own code
(`pretrain_data.pretrain_data(...).sampler`). Each must hold, on average, as many same-volume pairs as a
uniform draw (within 1.5x of the exact expectation), and a given seed must put the same store rows
in each batch on every path. Drawing streamed batches from a window of a few neighbouring shards
(the stream before this fix) gave ~4x the uniform pairs here.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import torch

from ichbench import UNKNOWN_LABEL
from ichbench.resolve import resolve
from ichbench.store import open_store
from ichbench.store.writer import StoreWriter
from ichbench.train import pretrain_data

VOLUMES, SLICES, SIZE, BATCH = 128, 32, 16, 60   # 4,096 rows, 64 shards: 4x the stream's default window


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Volumes written one after another; every pixel of a slice holds its row, so a batch's
    pixels name its rows. Labels unknown: the pretraining selection is every slice."""
    path = tmp_path_factory.mktemp("mixing") / "pretraining.zarr"
    w = StoreWriter(path, size=SIZE, with_masks=False, with_brain=False)
    for v in range(VOLUMES):
        rows = np.arange(v * SLICES, (v + 1) * SLICES)
        images = np.broadcast_to(rows[:, None, None], (SLICES, SIZE, SIZE)).astype(np.int16)
        w.add({"id": f"v{v:03d}", "spacing": [5, 1, 1]}, images, np.full((SLICES, 7), UNKNOWN_LABEL, np.uint8))
    w.close({"dataset": "t", "role": "pretraining"}, {"size": SIZE})
    return path


def uniform_pairs(volume_of_rows: np.ndarray, b: int) -> float:
    """E[same-volume pairs] in a batch of b drawn uniformly without replacement from the rows:
    sum over volumes of C(n_v, 2) * C(b, 2) / C(N, 2)."""
    sizes = np.bincount(volume_of_rows)
    return sum(comb(int(n), 2) for n in sizes) * comb(b, 2) / comb(len(volume_of_rows), 2)


def pairs(volumes: np.ndarray) -> int:
    counts = np.bincount(volumes)
    return int((counts * (counts - 1) // 2).sum())


def epoch_rows(store_path, monkeypatch, tmp_path, stream, cache: bool, memory=None,
               extra=()) -> tuple[list[np.ndarray], str]:
    """One epoch of batches (store rows) as the engine draws them on the path the knobs choose."""
    monkeypatch.setenv("ICHBENCH_NODE_CACHE", str(tmp_path / "node-cache") if cache else "off")
    if memory is not None:
        monkeypatch.setattr(pretrain_data, "memory_given", lambda: (memory, "given"))
    overrides = [f"pretrain.batch_size={BATCH}", f"pretrain.image_size={SIZE}", "pretrain.steps_per_epoch=null",
                 "pretrain.holdout=0", *extra] + ([] if stream is None else [f"data.stream={str(stream).lower()}"])
    cfg = resolve("global_contrastive", "phantom", "smoke", overrides)
    store = open_store(store_path)
    data = pretrain_data.pretrain_data(store, store_path, cfg, withhold_labels=False)
    batches = []
    for item in data.sampler(store, cfg, torch.Generator().manual_seed(cfg.pretrain.seed)).epoch():
        if data.streamed:
            assert torch.equal(item.images[:, 0, 0].long(), item.rows)   # the pixels are those of the rows
            batches.append(item.rows.numpy())
        else:
            assert torch.equal(data.arrays.images[item][:, 0, 0].long(), data.arrays.rows[item])
            batches.append(data.arrays.rows[item].numpy())
    return batches, ("streamed" if data.streamed else "in memory") + (", cache" if cache else "")


PATHS = {   # data.stream, node cache on, memory given, other settings
    "in memory": (False, False, None, ()),
    "node cache (maps)": (False, True, None, ()),
    "streamed through the node cache": (True, True, None, ()),
    # rows gathered 2,048 at a time (32 shards' worth): each gathering decodes every shard
    "streamed without a cache": (True, False, None, ("data.shuffle_shards=32",)),
    "streamed: too little memory given": (None, True, 1_000_000, ()),
}


def test_every_path_draws_uniformly_mixed_batches_and_the_same_ones(store_path, monkeypatch, tmp_path):
    volume = np.asarray(open_store(store_path).load(["volume"])["volume"]).astype(np.int64)
    drawn = {}
    for name, (stream, cache, memory, extra) in PATHS.items():
        with monkeypatch.context() as mp:
            batches, path = epoch_rows(store_path, mp, tmp_path, stream, cache, memory, extra)
        assert path.startswith("streamed" if name.startswith("streamed") else "in memory"), (name, path)
        drawn[name] = batches
    rows = np.sort(np.concatenate(drawn["in memory"]))
    expected = uniform_pairs(volume[rows], BATCH)   # 13.5 here
    for name, batches in drawn.items():
        assert all(len(b) == BATCH for b in batches) and len(batches) == len(rows) // BATCH, name
        mean = float(np.mean([pairs(volume[b]) for b in batches]))
        assert expected / 1.5 <= mean <= 1.5 * expected, f"{name}: {mean:.1f} same-volume pairs a batch, " \
                                                         f"uniform {expected:.1f}"
    for name, batches in drawn.items():   # a seed's batches do not depend on the path
        assert all(np.array_equal(a, b) for a, b in zip(batches, drawn["in memory"], strict=True)), name
