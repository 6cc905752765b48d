"""Ingest of a `SlicePlan`: decoding workers write the image shards themselves.

Every row is known before any pixel is decoded, so the driver hands each worker one shard's worth
of planned rows: the worker decodes and resamples those files, encodes, compresses and hashes
them, and writes the shard (`write_shard`). The driver only sees a digest and, per row, the native
shape or the reason it failed; it writes the small arrays (labels, volume) and the metadata. No
pixel passes through it, so ingest scales with the workers.

A file that fails to decode (RSNA has one) must leave no row behind, which shifts every later
row: its shard is written with a blank row in its place, and once every shard is written the
shards from the first such row on are rewritten in place without the failed rows (`_compact`),
reading each planned shard back (checked against the digest its worker recorded) before the
compacted shard that replaces it is written. The store, its digests and its fingerprint are then
those of an ingest that never planned the failed rows, for any number of workers.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass

import numpy as np
import zarr

from ichbench.datasets.base import SlicePlan
from ichbench.errors import IchbenchError
from ichbench.parallel import OrderedPool
from ichbench.store.layout import shard_digest
from ichbench.store.writer import StoreWriter, write_shard

IMAGES = "images"


@dataclass
class ShardDone:
    """What a worker sends back for one planned shard (a few hundred bytes, no pixels)."""
    digest: str
    natives: list            # per row: native (H, W), or None where it failed
    failed: list             # (row offset in the shard, problem)
    pid: int


def decode_shard(array, decode, task: tuple[int, list[str]]) -> ShardDone:
    """Decode the files of rows start.. and write them as one shard of `array` (top level: runs
    in worker processes)."""
    start, paths = task
    data = np.zeros((len(paths), *array.shape[1:]), dtype=np.int16)
    natives, failed = [], []
    for i, path in enumerate(paths):
        hu, native, problem = decode(path)
        if hu is None:
            failed.append((i, problem))
            natives.append(None)
            continue
        data[i] = hu
        natives.append(tuple(native))
    [digest], pid = write_shard(array, start, data, len(paths))
    return ShardDone(digest, natives, failed, pid)


def write_plan(plan: SlicePlan, writer: StoreWriter, pool: OrderedPool, report, volume_meta,
               progress=None) -> None:
    """Every planned row into `writer`'s store: images by the workers, the rest by `writer`.
    `volume_meta(fields, native, labels)`: the volumes-table entry of a run of rows;
    `progress(rows_done)` after each shard."""
    images = writer.arrays[IMAGES]
    n, S = len(plan), writer.shard
    images.resize((n, *images.shape[1:]))   # metadata once, before any worker writes a shard of it
    tasks = ((s, [plan.paths[r] for r in range(s, min(n, s + S))]) for s in range(0, n, S))
    digests, failed_rows = [], []
    work = functools.partial(decode_shard, images, plan.decode)
    for k, done in enumerate(pool.map(work, tasks, chunksize=1)):
        start = k * S
        digests.append(done.digest)
        writer.shard_writers[done.pid] += 1
        for i, problem in done.failed:
            report.skip(plan.paths[start + i], problem)
            failed_rows.append(start + i)
        _add_rows(plan, writer, start, done.natives, volume_meta)
        if progress is not None:
            progress(min(n, start + S))
    if failed_rows:
        digests = _compact(images, pool, digests, failed_rows, n, S)
    writer.shard_digests[IMAGES] = digests


def _add_rows(plan: SlicePlan, writer: StoreWriter, start: int, natives: list, volume_meta) -> None:
    """The rows of one shard that decoded, as runs of one volume (labels and volume arrays, and
    the volumes table) in `writer`."""
    ok = [start + i for i, native in enumerate(natives) if native is not None]
    for run in np.split(np.array(ok, np.int64), np.flatnonzero(np.diff(plan.group[ok])) + 1) if ok else []:
        r0 = int(run[0])
        labels = plan.labels[run]
        meta = volume_meta(plan.volume(r0), natives[r0 - start], labels)
        idx = writer.volume_index(meta["id"])
        if idx is not None and meta["has_ich"]:
            writer.volumes[idx]["has_ich"] = True
        writer.add(meta, None, labels)


def _compact(images, pool: OrderedPool, digests: list[str], failed_rows: list[int], n: int, S: int) -> list[str]:
    """Rewrite the image shards from the first failed row on without the failed rows; returns
    every shard's digest. A planned shard is read (and checked) before anything is written over
    it: compacted shard j holds planned rows >= j * S only."""
    failed = np.zeros(n, bool)
    failed[failed_rows] = True
    first = failed_rows[0] // S
    out = digests[:first]
    pending: deque = deque()   # shard writes in flight, oldest first: two per worker bound the memory
    kept = np.zeros((0, *images.shape[1:]), np.int16)
    written = first * S
    for k in range(first, -(-n // S)):
        with zarr.config.set({"codec_pipeline.batch_size": S}):   # one batch per shard, as reads and writes do
            block = np.asarray(images[k * S:min(n, (k + 1) * S)])
        if shard_digest(block) != digests[k]:
            raise IchbenchError(f"{images.store_path}: shard {k} changed while the ingest was writing it")
        kept = np.concatenate([kept, block[~failed[k * S:(k + 1) * S]]])
        while len(kept) >= S:
            pending.append(pool.submit(write_shard, images, written, kept[:S], S))
            kept, written = kept[S:], written + S
            while len(pending) > 2 * pool.workers:
                out += pending.popleft().result()[0]
    while pending:
        out += pending.popleft().result()[0]
    # drop every shard from the last, partial one on: writing into an existing partial shard would
    # keep its old rows past the new end inside it
    images.resize((written, *images.shape[1:]))
    images.resize((written + len(kept), *images.shape[1:]))
    if len(kept):
        out += write_shard(images, written, kept, S)[0]
    return out
