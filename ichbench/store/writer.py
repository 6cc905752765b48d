"""Streaming writer for the slice store.

Slices arrive in batches of any size; they are buffered and written one whole shard at a time
(a partial shard write would make zarr read-modify-write it). Each shard's bytes are hashed as
they are written (`layout.shard_digest`), so the fingerprint costs no second pass and every later
read can check the shard it decodes.

With a worker pool, shards are encoded, compressed, hashed and written by the workers
(`write_shard`): zarr v3 shards are separate objects, so distinct shards of one array can be
written at once. Only this process writes metadata: it grows an array's shape before handing out
a shard beyond it, and the worker gets the array object with that metadata (pickled), so no worker
reads or rewrites a `zarr.json` that may be changing. Digests are collected in shard order.
"""

from __future__ import annotations

import os
from collections import Counter, deque

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ichbench import LABEL_ORDER, UNKNOWN_LABEL
from ichbench.parallel import OrderedPool
from ichbench.store.location import Location, parse, zarr_store
from ichbench.store.layout import (CLASSES_FORMAT_VERSION, FORMAT_VERSION, SHARD_SLICES, array_digest, fingerprint,
                                   shard_digest)

_DTYPES = {"images": "int16", "masks": "uint8", "labels": "uint8", "volume": "int32", "brain": "uint8",
           "classes": "uint8"}
_SLICE_ARRAYS = ("images", "masks", "brain", "classes")   # (N, size, size); the others are per-slice rows


def compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def create_slice_array(group, name: str, dtype: str, size: int, shard_slices: int = SHARD_SLICES, rows: int = 0):
    """An (N, size, size) array with one chunk per slice, `shard_slices` slices per shard file."""
    return group.create_array(name, shape=(rows, size, size), dtype=dtype, chunks=(1, size, size),
                              shards=(shard_slices, size, size), compressors=compressor(), fill_value=0)


def write_shard(array: zarr.Array, start: int, data: np.ndarray, shard_slices: int) -> tuple[list[str], int]:
    """Rows start.. of `array` (whole shards); their digests and the writing process's id.
    Top level: runs in worker processes."""
    # encode a shard's chunks as one batch: ~1.5x faster than zarr's default of one at a time
    with zarr.config.set({"codec_pipeline.batch_size": shard_slices}):
        array[start:start + len(data)] = data
    return [shard_digest(data[i:i + shard_slices]) for i in range(0, len(data), shard_slices)], os.getpid()


class StoreWriter:
    def __init__(self, path: Location | str, *, size: int, with_masks: bool, with_brain: bool = True,
                 shard_slices: int = SHARD_SLICES, pool: OrderedPool | None = None, external: tuple[str, ...] = (),
                 class_names: tuple[str, ...] | None = None):
        """class_names: the names of class ids 1..C of a `classes` array (0 is background); None
        writes no such array, and the store stays format 2."""
        self.path = parse(path)   # a local Path, or an object-store location (store.location)
        self.size = size
        self.shard = shard_slices
        self.pool = pool or OrderedPool(1)
        # arrays whose shards, shape and digests someone else writes (`ingest.planned`): add()
        # takes None for them
        self.external = set(external)
        self._pending: deque = deque()      # (array name, future of write_shard), in shard order
        self.shard_writers: Counter = Counter()   # process id -> shards written (all arrays)
        self.group = zarr.open_group(zarr_store(self.path, "w"), mode="w", zarr_format=3)
        self.class_names = list(class_names) if class_names is not None else None
        names = ["images", "labels", "volume"] + (["masks"] if with_masks else []) + (["brain"] if with_brain else [])
        names += ["classes"] if class_names is not None else []
        self.arrays: dict[str, zarr.Array] = {}
        for name in names:
            if name in _SLICE_ARRAYS:
                self.arrays[name] = create_slice_array(self.group, name, _DTYPES[name], size, shard_slices)
                continue
            tail = (len(LABEL_ORDER),) if name == "labels" else ()
            self.arrays[name] = self.group.create_array(
                name, shape=(0, *tail), dtype=_DTYPES[name], chunks=(shard_slices, *tail),
                shards=(shard_slices, *tail), compressors=compressor(), fill_value=0)
        self.shard_digests: dict[str, list[str]] = {name: [] for name in names}
        self.buffers: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self.buffered = 0
        self.written = 0
        self.volumes: list[dict] = []
        self._index: dict[str, int] = {}
        # per-slice label counts, recorded so `data info` can describe the store from its metadata
        self.label_counts = {"n_ich_slices": 0, "n_unlabeled_slices": 0}

    @property
    def n_slices(self) -> int:
        return self.written + self.buffered

    def volume_index(self, vol_id: str) -> int | None:
        return self._index.get(vol_id)

    def add(self, vol_meta: dict, images: np.ndarray, labels: np.ndarray,
            masks: np.ndarray | None = None, brain: np.ndarray | None = None,
            classes: np.ndarray | None = None) -> None:
        """Append slices of the volume described by vol_meta (id, spacing, subtypes, ...).
        Slices of a volume that was seen before are appended to it (slice-level sources)."""
        n = len(labels)
        if n == 0:
            return
        idx = self._index.get(vol_meta["id"])
        if idx is None:
            idx = len(self.volumes)
            self._index[vol_meta["id"]] = idx
            self.volumes.append({**vol_meta, "start": self.n_slices, "stop": self.n_slices + n, "n_slices": n})
        else:
            entry = self.volumes[idx]
            contiguous = entry["stop"] == self.n_slices and entry["start"] is not None
            entry["n_slices"] += n
            entry["stop"] = self.n_slices + n if contiguous else None
            if not contiguous:
                entry["start"] = None
        anyich = np.asarray(labels)[:, 1]
        self.label_counts["n_ich_slices"] += int((anyich == 1).sum())
        self.label_counts["n_unlabeled_slices"] += int((anyich == UNKNOWN_LABEL).sum())
        parts = {"images": images, "labels": labels, "volume": np.full(n, idx, np.int32),
                 "masks": masks, "brain": brain, "classes": classes}
        for name in [a for a in self.arrays if a not in self.external]:
            data = parts[name]
            if data is None:
                raise ValueError(f"store at {self.path} needs {name!r} for every slice")
            self.buffers[name].append(np.ascontiguousarray(data, dtype=_DTYPES[name]))
        self.buffered += n
        if self.buffered >= self.shard:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if self.buffered == 0:
            return
        take = self.buffered if final else (self.buffered // self.shard) * self.shard
        start, stop = self.written, self.written + take
        for name, arr in self.arrays.items():
            if name in self.external:
                continue
            data = np.concatenate(self.buffers[name])
            head, rest = data[:take], data[take:]
            arr.resize((stop, *arr.shape[1:]))
            self._pending.append((name, self.pool.submit(write_shard, arr, start, head, self.shard)))
            self.buffers[name] = [rest] if len(rest) else []
        self.written = stop
        self.buffered -= take
        # two shards per worker in flight: enough to keep them busy, bounded memory
        self._collect(keep=2 * self.pool.workers * len(self.arrays))

    def _collect(self, keep: int = 0) -> None:
        """Digests of finished shard writes, oldest first, until at most `keep` are in flight."""
        while len(self._pending) > keep:
            name, future = self._pending.popleft()
            digests, pid = future.result()
            self.shard_digests[name] += digests
            self.shard_writers[pid] += len(digests)

    def close(self, attrs: dict, settings: dict) -> str:
        """Flush, write the volumes table and fingerprint; returns the fingerprint."""
        self._flush(final=True)
        self._collect()
        for v in self.volumes:
            v.setdefault("subtypes", None)
        digests = {name: array_digest(d) for name, d in self.shard_digests.items()}
        version = FORMAT_VERSION if self.class_names is None else CLASSES_FORMAT_VERSION
        fp = fingerprint(settings, self.volumes, digests, version, self.class_names)
        extra = {} if self.class_names is None else {"class_names": self.class_names}
        self.group.attrs.update({
            **attrs,
            **extra,
            "format_version": version,
            "label_order": list(LABEL_ORDER),
            "settings": settings,
            "volumes": self.volumes,
            "n_slices": self.written,
            "digests": digests,
            "shard_slices": self.shard,
            "shard_digests": self.shard_digests,
            "label_counts": self.label_counts,
            "fingerprint": fp,
        })
        return fp
