"""The slices a pretext trains on (§2.6's selection), in memory or streamed, with their neighbours
when the pretraining input has context (`input.*`, `ichbench.train.inputs`).

Neighbours follow the store's rows of a volume (for RSNA a series, in slice order), so a selected
slice's neighbours are loaded with it even when they are not selected themselves; streamed
batches read each sample's neighbour rows with it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from ichbench import UNKNOWN_LABEL as UNKNOWN
from ichbench.datasets.base import SEGMENTATION
from ichbench.store.layout import SHARD_SLICES
from ichbench.train.data import EpochSampler, SliceArrays, load_store, pretrain_selection, with_channels
from ichbench.train.inputs import neighbour_index, with_neighbours
from ichbench.train.shard_cache import ShardCache, for_stream
from ichbench.train.stream import ShardStream, in_memory_bytes, memory_given, read_held_out, should_stream


@dataclasses.dataclass
class PretrainData:
    """The pretraining slices (§2.6's selection): loaded into memory, or — when they would not fit
    the memory the worker was given, or `data.stream` says so — streamed shard by shard (through
    the node cache's shard files unless it is off or its disk is too full), with only the held-out
    slices (a fixed few thousand, for the validation loss) in memory."""
    arrays: SliceArrays            # the loaded rows: all selected ones (and their neighbours), or the held-out ones
    train_rows: np.ndarray         # store rows trained on
    train_pos: torch.Tensor | None  # their positions in `arrays` (None when streamed)
    hold_pos: torch.Tensor         # the held-out rows' positions in `arrays`
    labels: torch.Tensor           # every slice's labels: streamed batches index them by store row
    streamed: bool
    why: str                       # the one line saying why it streams (or why not), and through what
    cache: ShardCache | None = None  # the streamed shards' node cache
    neighbours: np.ndarray | None = None   # the store's `neighbour_index` (input.context > 0)

    def selection_labels(self) -> np.ndarray:
        """The labels (N, 7) of every selected slice, trained on or held out, in store order."""
        rows = np.sort(np.concatenate([self.train_rows, self.arrays.rows[self.hold_pos].numpy()]))
        return self.labels[torch.from_numpy(rows)].numpy()

    def sampler(self, store, cfg, generator: torch.Generator):
        pc = cfg.pretrain
        if self.streamed:
            return ShardStream(store, self.train_rows, pc.image_size, pc.batch_size, pc.steps_per_epoch,
                               generator, cfg.data.shuffle_shards, drop_last=True, cache=self.cache,
                               neighbours=self.neighbours)
        return EpochSampler(lambda g: self.train_pos, pc.batch_size, pc.steps_per_epoch, generator, drop_last=True)


def labels_withheld(m, cfg) -> bool:
    """A segmentation store's slice labels are derived from its masks, which include those of the
    volumes a run is tested on: a pretext that needs no labels pretrains on such a store without
    them (every slice, no ICH-based selection, batches whose labels are all unknown). A pretext
    that needs them is refused on the run's own slices (`orchestrate.plan.open_pretraining`)."""
    needs = m.label_needs
    return cfg.pretrain_role == SEGMENTATION and not (needs.binary or needs.multilabel)


def pretrain_data(store, store_path: Path, cfg, withhold_labels: bool) -> PretrainData:
    pc, inp = cfg.pretrain, cfg.input.pretrain_input()
    labels = np.asarray(store.load(["labels"])["labels"])
    if withhold_labels:
        labels = np.full_like(labels, UNKNOWN)
    train_rows, hold_rows = pretrain_selection(labels, pc.holdout, pc.seed, validation=store.validation_mask())
    table = neighbour_index(np.asarray(store.load(["volume"])["volume"]), inp.context) if inp.context else None
    with_nb = (lambda rows: rows) if table is None else (lambda rows: with_neighbours(table, rows))  # noqa: E731
    need = in_memory_bytes(store, with_nb(np.concatenate([train_rows, hold_rows])), pc.image_size)
    streamed, why = should_stream(cfg.data.stream, need, memory_given(), store_path)
    cache = None
    if streamed:
        # the held-out rows are read as the stream reads (not through the whole-array node cache,
        # which would write every row of the store to disk for these few)
        shards = np.unique(with_nb(np.concatenate([train_rows, hold_rows])) // SHARD_SLICES)
        cache, how = for_stream(store, "images", shards, pc.image_size)
        why = f"{why}, {how}"
        if cache is None:   # batches are uniform draws: their rows lie in many shards, each decoded whole
            why += (f": slower, each {cfg.data.shuffle_shards * SHARD_SLICES} rows gathered decode every shard "
                    f"they lie in (data.shuffle_shards={cfg.data.shuffle_shards} shards' worth)")
        print(why, file=sys.stderr, flush=True)
        arrays = read_held_out(store, with_nb(hold_rows), pc.image_size, cache)
    else:
        arrays = load_store(store_path, pc.image_size, rows=with_nb(np.concatenate([train_rows, hold_rows])),
                            names=("images", "labels", "volume"))
    with_channels(arrays, inp.context, inp.windows, table)
    if withhold_labels:
        arrays.labels = torch.full_like(arrays.labels, UNKNOWN)
    pos = lambda rows: torch.from_numpy(np.searchsorted(arrays.rows.numpy(), rows))  # noqa: E731
    return PretrainData(arrays, train_rows, None if streamed else pos(train_rows), pos(hold_rows),
                        torch.from_numpy(labels), streamed, why, cache, table)
