"""Training batches streamed from a store larger than memory, shard by shard.

Each epoch visits the shards holding selected rows in a seeded, shuffled order. Consecutive
shards of that order form windows of `shuffle_shards` shards (the shuffle buffer); the selected
rows of a window are permuted together and the epoch's row sequence is cut into batches. The whole
plan (which rows make each batch, which windows each batch needs) depends only on the row
selection and the sampler's generator, never on pixel data, so it is drawn up front: a resumed
epoch draws the same plan from the same generator state and skips the batches already trained.

A prefetch thread reads the windows the plan needs, in order, keeping only selected rows, into a
bounded queue. Without a cache each shard goes through the store's checked read
(`SliceStore.read_shard`: zstd decode and sha256) every epoch. With one (`cache`, a
`shard_cache.ShardCache`: the engine passes the node cache's unless ICHBENCH_NODE_CACHE is off or
its disk lacks the room) the first read of a shard also writes it, resized, as an uncompressed
file, and every read maps that file (checked once per process): a window is then its shards' maps
and each batch copies its rows straight out of them. The batches are the same either way. Memory is
the windows in use plus the queue (through the cache, pages of the mapped files instead): it
depends on `shuffle_shards` and the image size, not on the size of the store. Labels stay in
memory (a few bytes per slice); images never do.
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
from ichbench.train.data import SliceArrays

MEMORY_FRACTION = 0.5  # of the worker's memory the arrays may take: the load's peak, model and batches need the rest
PREFETCH_WINDOWS = 2   # windows decoded ahead of the one in use: hides one window's read behind steps
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
    images: torch.Tensor   # (B, S, S) int16 HU, on the host


@dataclass
class EpochPlan:
    batches: list[np.ndarray]    # store rows of each batch
    needs: list[tuple[int, int]]  # windows (first, last) each batch reads from
    windows: list[np.ndarray]    # shard indices of each window, in load order


def plan_epoch(shard_rows: list[np.ndarray], batch_size: int, steps: int | None, g: torch.Generator,
               shuffle_shards: int, drop_last: bool) -> EpochPlan:
    """One epoch of batches over the rows grouped by shard (`shard_rows[i]`: selected rows of the
    i-th shard), as `EpochSampler` does in memory: one pass, or `steps` batches over as many
    passes as needed; a short last batch of a pass is dropped with `drop_last`, one of a single
    slice always (BatchNorm needs two)."""
    plan = EpochPlan([], [], [])
    while shard_rows and (steps is None or len(plan.batches) < steps):
        order = torch.randperm(len(shard_rows), generator=g).numpy()
        seq, win = [], []
        for start in range(0, len(order), shuffle_shards):
            shards = order[start:start + shuffle_shards]
            rows = np.concatenate([shard_rows[k] for k in shards])
            seq.append(rows[torch.randperm(len(rows), generator=g).numpy()])
            win.append(np.full(len(rows), len(plan.windows)))
            plan.windows.append(shards)
        seq, win = np.concatenate(seq), np.concatenate(win)
        cuts = list(range(0, len(seq), batch_size))
        if cuts and (len(seq) - cuts[-1] < 2 or (drop_last and len(seq) - cuts[-1] < batch_size and len(cuts) > 1)):
            cuts.pop()
        if not cuts:
            break
        for c in cuts:
            plan.batches.append(seq[c:c + batch_size])
            plan.needs.append((int(win[c]), int(win[c:c + batch_size][-1])))
        if steps is None:
            break
    if steps is not None:
        plan.batches, plan.needs = plan.batches[:steps], plan.needs[:steps]
    if not plan.batches:
        raise IchbenchError("no training batch could be drawn (fewer than 2 training slices)")
    return plan


class ShardStream:
    """A sampler for `train.loop.fit` whose epochs yield `StreamBatch`es read from the store.

    An epoch's batches follow from the sampler generator's state, which the engine's per-epoch
    checkpoint holds: a killed streamed run resumes at its next epoch with the same batches.
    """

    def __init__(self, store, rows: np.ndarray, image_size: int, batch_size: int, steps_per_epoch: int | None,
                 generator: torch.Generator, shuffle_shards: int, drop_last: bool = False,
                 prefetch: int = PREFETCH_WINDOWS, cache=None):
        if shuffle_shards < 1:
            raise IchbenchError(f"data.shuffle_shards must be >= 1, got {shuffle_shards}")
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        shard = rows // SHARD_SLICES
        self.shards, starts = np.unique(shard, return_index=True)
        self.shard_rows = np.split(rows, starts[1:]) if len(rows) else []
        self.store, self.image_size, self.batch_size = store, image_size, batch_size
        self.steps, self.generator, self.drop_last = steps_per_epoch, generator, drop_last
        self.shuffle_shards, self.prefetch, self.cache = shuffle_shards, prefetch, cache

    @property
    def path(self) -> Path:
        return self.store.path

    def epoch(self) -> "_Epoch":
        return _Epoch(self, plan_epoch(self.shard_rows, self.batch_size, self.steps, self.generator,
                                       self.shuffle_shards, self.drop_last))

    def read_window(self, shards: np.ndarray) -> tuple[np.ndarray, torch.Tensor | MappedRows]:
        """Selected rows (sorted) of the window's shards and their images at `image_size`: read
        into memory, or, through the cache, left in its mapped files."""
        parts = [(int(self.shards[i]), self.shard_rows[i]) for i in shards]
        if self.cache is not None:
            return mapped_rows(parts, self.cache)
        return read_rows(self.store, parts, self.image_size)


class MappedRows:
    """A window's selected rows left in their shards' mapped cache files: a batch copies its rows
    straight out of the maps (one copy, and the window holds no memory of its own)."""

    def __init__(self, maps: list[np.ndarray], which: np.ndarray, local: np.ndarray):
        self.maps, self.which, self.local = maps, which, local
        self.shape, self.dtype = (len(which), *maps[0].shape[1:]), maps[0].dtype

    def take(self, pos: np.ndarray) -> np.ndarray:
        out = np.empty((len(pos), *self.shape[1:]), dtype=self.dtype)
        for i, p in enumerate(pos):
            out[i] = self.maps[self.which[p]][self.local[p]]
        return out


def mapped_rows(parts: list[tuple[int, np.ndarray]], cache) -> tuple[np.ndarray, MappedRows]:
    """`parts` ((shard k, its sorted rows) pairs) through `cache`: the rows, sorted, and where each
    lies in the shards' maps."""
    parts = sorted(parts, key=lambda part: part[0])
    maps = [cache.read(k) for k, _ in parts]
    local = [wanted - k * SHARD_SLICES for k, wanted in parts]
    for (k, wanted), keep, m in zip(parts, local, maps):
        if len(keep) and (keep[0] < 0 or keep[-1] >= len(m)):
            raise IchbenchError(f"{cache.store.path}: rows {wanted[0]}-{wanted[-1]} are not all in shard {k}")
    which = np.concatenate([np.full(len(keep), j) for j, keep in enumerate(local)])
    return np.concatenate([wanted for _, wanted in parts]), MappedRows(maps, which, np.concatenate(local))


def _gather(images: torch.Tensor | MappedRows, pos: np.ndarray) -> np.ndarray:
    """Rows `pos` of a window's images, with numpy's take: one thread, a plain copy (torch's
    tensor[index] was ~6x slower for int16 rows, its threaded index_select ~100x slower on a busy
    2-core machine)."""
    if isinstance(images, MappedRows):
        return images.take(pos)
    return np.take(images.numpy(), pos, axis=0)


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

    def __init__(self, stream: ShardStream, plan: EpochPlan):
        self.stream, self.plan = stream, plan
        self.last_use = {}
        for i in range(len(plan.batches)):
            first, last = plan.needs[i]
            for w in range(first, last + 1):
                self.last_use[w] = i   # after its last batch a window is dropped
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, stream.prefetch))
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Batches this epoch yields (the loop averages its loss over them once they are done)."""
        return len(self.plan.batches)

    def _load(self) -> None:
        try:
            for w in sorted(self.last_use):
                item = (w, *self.stream.read_window(self.plan.windows[w]))
                if not self._put(item):
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
        live: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        try:
            for i in range(len(self.plan.batches)):
                rows = self.plan.batches[i]
                first, last = self.plan.needs[i]
                while last not in live:
                    w, wrows, wimages = self._get()
                    live[w] = (wrows, wimages)
                if first == last:   # the batch lies in one window: one gather
                    wrows, wimages = live[first]
                    out = _gather(wimages, np.searchsorted(wrows, rows))
                else:
                    out = np.empty((len(rows), *live[last][1].shape[1:]), dtype=np.int16)
                    for w in range(first, last + 1):
                        wrows, wimages = live[w]
                        pos = np.minimum(np.searchsorted(wrows, rows), len(wrows) - 1)
                        hit = np.flatnonzero(wrows[pos] == rows)
                        out[hit] = _gather(wimages, pos[hit])
                for w in range(first, last + 1):
                    if self.last_use[w] == i:
                        del live[w]
                yield StreamBatch(torch.from_numpy(rows), torch.from_numpy(out))
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
