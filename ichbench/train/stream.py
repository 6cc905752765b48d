"""Training batches streamed from a store larger than memory, drawn as uniformly as in memory.

An epoch's batches are drawn by the very sampler of the in-memory path (`data.EpochSampler`: one
seeded permutation of the selected rows, cut into batches) over the selected store rows, so a
given seed puts the same store rows, in the same order, in each batch whether the rows were
loaded into memory, mapped from the node cache or streamed: batch composition never depends on
the read path, hence not on the machine's memory either (docs/architecture.md, "Determinism").
Rows are stored series by series (a volume's slices next to each other); a batch drawn from a few
neighbouring shards would be full of near-identical slices of a few scans (issue 21 §2: ~16
same-scan pairs in a batch of 60 on RSNA's selection, against ~0.09 for a uniform draw). The
plan depends only on the row selection and the sampler's generator, never on pixel data, so it is
drawn up front: a resumed epoch draws the same plan from the same generator state.

A prefetch thread gathers each planned batch's rows, in order, into a bounded queue: random row
access, each row copied out of its shard. Through the node cache (`cache`, a
`shard_cache.ShardCache`: the engine passes the node cache's unless ICHBENCH_NODE_CACHE is off or
its disk lacks the room) a shard's first read also writes it, resized, as an uncompressed file,
and every read maps that file (checked once per process): each row is then one copy out of a map
(MAPS_OPEN maps are kept open, the earliest opened closed first). Without a cache the rows of
consecutive batches, `shuffle_shards` shards' worth of them (1,024 rows by default), are gathered
at a time, each shard they lie in going once through the store's checked read
(`SliceStore.read_shard`: zstd decode and sha256): the rows are spread over many shards, so on a
store much larger than that an epoch decodes each shard many times (slow; the engine says so).
The batches are the same either way. Memory is the gathered rows plus the queue (through the
cache, pages of the mapped files instead): it depends on `shuffle_shards`, the batch and the image
size, not on the size of the store.
Labels stay in memory (a few bytes per slice); images never do.
With 2.5D inputs (`neighbours`, the store's `inputs.neighbour_index`) each batch reads every
sample's neighbour rows with it and yields (B, 2·context + 1, S, S).
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ichbench.errors import IchbenchError
from ichbench.store.layout import SHARD_SLICES
from ichbench.preprocess.resize import resize_stack
from ichbench.train.data import EpochSampler, SliceArrays

MEMORY_FRACTION = 0.5  # of the worker's memory the arrays may take: the load's peak, model and batches need the rest
PREFETCH_BATCHES = 8   # batches gathered ahead of the one in use: hides reads behind steps
MAPS_OPEN = 256        # cache files kept mapped at once (each map holds a file descriptor)
_POLL_S = 0.1          # how often a blocked prefetch thread checks whether it should stop


def in_memory_bytes(store, rows: np.ndarray, image_size: int) -> int:
    """Peak bytes of loading `rows` into memory (`load_store`), from metadata alone: every shard
    they touch is decoded whole at the store's size and concatenated (two copies at the peak, as
    `benchmarks/read_path.py` measures), then the rows are kept at `image_size`."""
    size = int(store.attrs["settings"]["size"])
    touched = len(np.unique(np.asarray(rows) // SHARD_SLICES)) * SHARD_SLICES
    row = 7 + 4 + 8   # labels (7 x uint8), volume (int32 in the store, int64 in memory)
    return 2 * touched * (2 * size * size + row) + len(rows) * (2 * image_size * image_size + row)


def memory_given() -> tuple[int, str]:
    """Bytes this worker may use: its Ray task's `memory` resource when it asked for one, else the
    memory the system has available now."""
    ray = sys.modules.get("ray")   # only a process that runs Ray has it imported
    if ray is not None and ray.is_initialized():
        try:
            given = ray.get_runtime_context().get_assigned_resources().get("memory")
        except AssertionError:   # Ray's answer on the driver, which has no assigned resources
            given = None
        if given:
            return int(given), "the Ray task's memory"
    import psutil
    return int(psutil.virtual_memory().available), "available"


def should_stream(setting: bool | None, need: int, given: tuple[int, str], store_path) -> tuple[bool, str]:
    """The read path and the line that says why: `data.stream` when set, else streaming when
    `need` exceeds MEMORY_FRACTION of the memory `given`."""
    budget, what = given
    sizes = f"store {store_path}: {_size(need)} of arrays, {_size(budget)} {what}"
    if setting is not None:
        return setting, f"{sizes}: {_PATHS[setting]} (data.stream={str(setting).lower()})"
    streamed = need > MEMORY_FRACTION * budget
    return streamed, f"{sizes} (x{MEMORY_FRACTION} = {_size(MEMORY_FRACTION * budget)} usable): {_PATHS[streamed]}"


_PATHS = {True: "streaming shards", False: "loaded into memory"}


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


@dataclass
class StreamBatch:
    rows: torch.Tensor     # (B,) int64 store rows
    images: torch.Tensor   # (B, S, S) int16 HU, on the host; (B, K, S, S) with neighbours


def plan_epoch(rows: np.ndarray, batch_size: int, steps: int | None, g: torch.Generator,
               drop_last: bool) -> list[np.ndarray]:
    """One epoch of batches of store rows over the sorted selected `rows`: `EpochSampler`'s own
    draws (one pass, or `steps` batches over as many passes as needed; a short last batch dropped
    with `drop_last`, one of a single slice always), so the in-memory path, whose positions index
    the same sorted rows, gets the same batches from the same generator state."""
    every = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return [b.numpy() for b in EpochSampler(lambda _: every, batch_size, steps, g, drop_last).epoch()]


class ShardStream:
    """A sampler for `train.loop.fit` whose epochs yield `StreamBatch`es read from the store.

    An epoch's batches follow from the sampler generator's state, which the engine's per-epoch
    checkpoint holds: a killed streamed run resumes at its next epoch with the same batches.
    `shuffle_shards`: without a cache, rows gathered at a time, in shards' worth (SHARD_SLICES rows).
    """

    def __init__(self, store, rows: np.ndarray, image_size: int, batch_size: int, steps_per_epoch: int | None,
                 generator: torch.Generator, shuffle_shards: int, drop_last: bool = False,
                 prefetch: int = PREFETCH_BATCHES, cache=None, neighbours: np.ndarray | None = None):
        if shuffle_shards < 1:
            raise IchbenchError(f"data.shuffle_shards must be >= 1, got {shuffle_shards}")
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.store, self.image_size, self.batch_size = store, image_size, batch_size
        self.steps, self.generator, self.drop_last = steps_per_epoch, generator, drop_last
        self.shuffle_shards, self.prefetch, self.cache = shuffle_shards, prefetch, cache
        self._maps: dict[int, np.ndarray] = {}   # shard k -> its cache file's map
        self.neighbours = neighbours              # (store rows, K) store rows of each one's slices

    @property
    def path(self) -> Path:
        return self.store.path

    def epoch(self) -> "_Epoch":
        return _Epoch(self, plan_epoch(self.rows, self.batch_size, self.steps, self.generator, self.drop_last))

    def images(self, batches: list[np.ndarray]):
        """Each batch's images, (B, S, S), or (B, K, S, S) with their neighbours' rows read with them."""
        if self.neighbours is None:
            yield from self._images(batches)
            return
        k = self.neighbours.shape[1]
        for rows, images in zip(batches, self._images([self.neighbours[b].ravel() for b in batches])):
            yield images.reshape(len(rows), k, *images.shape[1:])

    def _images(self, batches: list[np.ndarray]):
        """Each batch's images, in order, at `image_size`. Through the cache each row is copied out
        of its shard's map; without one, `shuffle_shards` shards' worth of rows (of consecutive
        batches) are gathered at a time, each shard they lie in decoded once for them."""
        if self.cache is not None:
            for rows in batches:
                yield self.read_batch(rows)
            return
        hold, i = max(self.batch_size, self.shuffle_shards * SHARD_SLICES), 0
        while i < len(batches):
            j, n = i + 1, len(batches[i])
            while j < len(batches) and n + len(batches[j]) <= hold:
                n, j = n + len(batches[j]), j + 1
            got, images = read_rows(self.store, by_shard(np.concatenate(batches[i:j])), self.image_size)
            for rows in batches[i:j]:
                yield np.take(images.numpy(), np.searchsorted(got, rows), axis=0)
            i = j

    def _map(self, k: int) -> np.ndarray:
        """Shard k's checked map in the cache; MAPS_OPEN kept open, the earliest opened closed first."""
        block = self._maps.get(k)
        if block is None:
            block = self.cache.read(k)
            if len(self._maps) >= MAPS_OPEN:
                del self._maps[next(iter(self._maps))]
            self._maps[k] = block
        return block

    def read_batch(self, rows: np.ndarray) -> np.ndarray:
        """The images of store `rows`, in that order, through the cache: each row copied straight
        out of its shard's map."""
        out = None
        for i, (k, j) in enumerate(zip(*np.divmod(rows, SHARD_SLICES))):
            block = self._map(int(k))
            if j >= len(block):
                raise IchbenchError(f"{self.store.path}: row {rows[i]} is not in shard {k}")
            if out is None:
                out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
            out[i] = block[j]
        return out


def read_rows(store, parts: list[tuple[int, np.ndarray]], image_size: int,
              cache=None) -> tuple[np.ndarray, torch.Tensor]:
    """The `images` of the rows `parts` names ((shard k, its sorted rows) pairs), sorted by row, at
    `image_size`, in memory: each shard through the checked read and resized, or through `cache`
    (a `shard_cache.ShardCache`, which resizes whole shards: the same pixels, an image's resize
    not depending on the others)."""
    if not parts:
        return np.zeros(0, np.int64), torch.zeros((0, image_size, image_size), dtype=torch.int16)
    parts = sorted(parts, key=lambda part: part[0])   # shards hold disjoint row ranges: rows come out sorted
    rows = np.concatenate([wanted for _, wanted in parts])
    images, at = None, 0
    for k, wanted in parts:   # each shard's selected rows copied once, straight to their place
        shard = cache.read(k) if cache is not None else store.read_shard("images", k)
        keep = wanted - k * SHARD_SLICES
        if len(keep) and (keep[0] < 0 or keep[-1] >= len(shard)):
            raise IchbenchError(f"{store.path}: rows {wanted[0]}-{wanted[-1]} are not all in shard {k}")
        if images is None:
            images = np.empty((len(rows), *shard.shape[1:]), dtype=shard.dtype)
        np.take(shard, keep, axis=0, out=images[at:at + len(keep)], mode="clip")   # in bounds: checked above
        at += len(keep)
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        return rows, torch.from_numpy(resize_stack(images, image_size, is_mask=False))
    return rows, torch.from_numpy(np.ascontiguousarray(images))


def by_shard(rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Sorted unique `rows` grouped as (shard k, rows of shard k)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    shards, starts = np.unique(rows // SHARD_SLICES, return_index=True)
    return list(zip(shards.tolist(), np.split(rows, starts[1:]))) if len(rows) else []


def read_held_out(store, rows: np.ndarray, image_size: int, cache=None, shards_at_once: int = 16) -> SliceArrays:
    """The held-out rows of a streamed pretraining (its validation slices) read as the stream
    reads, a few shards at a time: memory holds these rows, never the shards they are spread over."""
    parts = by_shard(rows)
    got = [read_rows(store, parts[i:i + shards_at_once], image_size, cache)
           for i in range(0, len(parts), shards_at_once)]
    rows = np.concatenate([r for r, _ in got]) if got else np.zeros(0, np.int64)
    images = torch.cat([t for _, t in got]) if got else torch.zeros((0, image_size, image_size), dtype=torch.int16)
    small = store.load(["labels", "volume"])   # a few bytes a slice
    return SliceArrays(images=images, labels=torch.from_numpy(np.asarray(small["labels"])[rows]),
                       volume=torch.from_numpy(np.asarray(small["volume"])[rows].astype(np.int64)),
                       masks=None, brain=None, volumes=store.volumes, fingerprint=store.fingerprint,
                       path=store.path, rows=torch.from_numpy(rows))


class _Epoch:
    """The batches of one planned epoch; iterating starts the prefetch thread, `close()` (also on
    exhaustion, an exception in the loop, or garbage collection) stops it."""

    def __init__(self, stream: ShardStream, batches: list[np.ndarray]):
        self.stream, self.batches = stream, batches
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, stream.prefetch))
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Batches this epoch yields (the loop averages its loss over them once they are done)."""
        return len(self.batches)

    def _load(self) -> None:
        try:
            for images in self.stream.images(self.batches):
                if not self._put(images):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self):
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise IchbenchError(f"{self.stream.path}: the shard prefetch thread stopped") from None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def __iter__(self):
        self._thread = threading.Thread(target=self._load, name="ichbench-shard-prefetch", daemon=True)
        self._thread.start()
        try:
            for rows in self.batches:
                yield StreamBatch(torch.from_numpy(rows), torch.from_numpy(self._get()))
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
