"""One copy of a store's arrays per node: an uncompressed, memory-mapped cache of them.

Without it every fold worker reads the whole store into its own memory: k folds in parallel on
one machine hold k copies. Instead the first worker that needs an array writes it once, decoded
and already resized, as a .npy file in the node cache, and every worker maps that file
(copy-on-write: a write stays private to its process and never reaches the file). The OS page
cache then holds one copy that every process on the node shares, with or without Ray.

Integrity, as for a store read: the cache is built from checked reads, and a file is checked each
time it is mapped, before anything uses it: shard k's rows (SHARD_SLICES of them) must hash to a
recorded digest, the store's own shard digest when the array is at the store's size (the very
check of a zarr read), else the digest the build recorded beside the file. That is one sha256
pass over pages that are being read in anyway. A damaged, truncated or half-written file is
rebuilt from the store, said in one line on stderr; an unchecked file is never used.

Where: ICHBENCH_NODE_CACHE (a folder on a local disk; `off`: every worker reads its own copy, as
before), default $ICHBENCH_HOME/node-cache. A file's name holds the store's fingerprint, the
array's content digest and the size, so a re-ingested store or a re-applied ICM gets new files.
Files are replaced by rename, never rewritten in place: a worker still mapping an old one keeps
valid pages.

A streamed pretraining (`stream`, a store larger than memory) does not use these whole-array files:
it caches shard by shard while it streams, in the same folder (`shard_cache`: one file per shard
under `<array>-<digest[:16]>-<size>.shards/`, checked the first time a process uses it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ichbench.errors import IchbenchError
from ichbench.files import write_atomic, write_text_atomic
from ichbench.store.layout import SHARD_SLICES, array_digest, shard_digest

ENV = "ICHBENCH_NODE_CACHE"
OFF = "off"
BUILD_ROWS = 4 * SHARD_SLICES   # rows read and resized at a time while building: bounds its memory

# (array name, rows of it at the store's size) -> the same rows at the size being cached
Convert = Callable[[str, np.ndarray], np.ndarray]


class CacheDamaged(Exception):
    """A cache file that cannot be used as it is; it is rebuilt from the store."""


def cache_root() -> Path | None:
    """The node cache folder, or None when ICHBENCH_NODE_CACHE is `off`."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() == OFF:
        return None
    if value:
        return Path(value).expanduser()
    from ichbench.home import home
    return home() / "node-cache"


def cache_path(root: Path, store, name: str, size: int) -> Path:
    digest = array_digest(store.shard_digests(name))
    return Path(root) / store.fingerprint[:32] / f"{name}-{digest[:16]}-{size}.npy"


def load(store, names, size: int, convert: Convert, root: Path) -> dict[str, np.memmap]:
    """The arrays `names` of `store` that it has, at `size`, each a checked map of its cache file
    (built first when missing or damaged)."""
    return {name: mapped(store, name, size, convert, root) for name in names
            if name in store.arrays or name in store.derived}


def mapped(store, name: str, size: int, convert: Convert, root: Path) -> np.memmap:
    path = cache_path(root, store, name, size)
    try:
        return _open_checked(store, name, size, path)
    except (FileNotFoundError, CacheDamaged):
        pass
    with _lock(path):
        try:
            return _open_checked(store, name, size, path)   # another worker built it meanwhile
        except FileNotFoundError:
            pass
        except CacheDamaged as exc:
            print(f"{path}: {exc}; rebuilding it from {store.path}", file=sys.stderr)
        _build(store, name, convert, path)
    try:
        return _open_checked(store, name, size, path)
    except (FileNotFoundError, CacheDamaged) as exc:
        raise IchbenchError(f"{path}: the node cache file just written does not check ({exc}); "
                            f"point {ENV} at another disk, or set {ENV}={OFF}") from None


def _expected(store, name: str, size: int) -> tuple[tuple, np.dtype, bool]:
    """(shape, dtype, resized) the cache file of `name` at `size` must have, from the store."""
    try:
        arr = store[name]
        tail, dtype = tuple(arr.shape[1:]), np.dtype(str(arr.dtype))
    except Exception as exc:  # noqa: BLE001 - zarr raises many types on damaged array metadata
        raise IchbenchError(f"{store.path}: metadata of array {name} is unreadable ({type(exc).__name__}); "
                            f"the store is damaged: re-ingest it") from None
    resized = len(tail) == 2 and tail != (size, size)
    return (store.n_slices, *((size, size) if resized else tail)), dtype, resized


def _open_checked(store, name: str, size: int, path: Path) -> np.memmap:
    """The cache file mapped copy-on-write, every shard checked; FileNotFoundError when there is
    none, CacheDamaged when it does not check."""
    shape, dtype, resized = _expected(store, name, size)
    try:
        mm = np.load(path, mmap_mode="c")
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CacheDamaged(f"unreadable or truncated ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(mm, np.memmap) or mm.shape != shape or mm.dtype != dtype:
        raise CacheDamaged(f"holds {getattr(mm, 'dtype', '?')} {getattr(mm, 'shape', '?')}, "
                           f"expected {dtype} {shape}")
    digests = _recorded_digests(path) if resized else store.shard_digests(name)
    if len(digests) != -(-shape[0] // SHARD_SLICES):
        raise CacheDamaged(f"{len(digests)} shard digests recorded for {shape[0]} rows")
    for k, digest in enumerate(digests):
        if shard_digest(mm[k * SHARD_SLICES:(k + 1) * SHARD_SLICES]) != digest:
            rows = f"{k * SHARD_SLICES}-{min((k + 1) * SHARD_SLICES, shape[0]) - 1}"
            raise CacheDamaged(f"shard {k} (rows {rows}) differs from its recorded digest")
    return mm


def _recorded_digests(path: Path) -> list[str]:
    """The digests a build recorded for a resized array (the store has none at that size)."""
    try:
        return list(json.loads(path.with_suffix(".json").read_text())["shard_digests"])
    except FileNotFoundError:
        raise CacheDamaged("its digest record (.json) is missing") from None
    except (ValueError, KeyError, TypeError):
        raise CacheDamaged("its digest record (.json) is unreadable") from None


def _build(store, name: str, convert: Convert, path: Path) -> None:
    """Write `name` converted, block by block from checked store reads, to `path` (temp, fsync,
    rename), then its record: the digests of the rows written and who built it."""
    n = store.n_slices
    digests: list[str] = []

    def write(fh) -> None:
        for s0 in range(0, n, BUILD_ROWS):
            block = np.ascontiguousarray(convert(name, store.read(name, np.arange(s0, min(n, s0 + BUILD_ROWS)))))
            if s0 == 0:
                np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(block.dtype),
                                                          "fortran_order": False, "shape": (n, *block.shape[1:])})
            digests.extend(shard_digest(block[i:i + SHARD_SLICES]) for i in range(0, len(block), SHARD_SLICES))
            fh.write(memoryview(block).cast("B"))

    try:
        write_atomic(path, write)
        write_text_atomic(path.with_suffix(".json"), json.dumps({
            "store": str(store.path), "fingerprint": store.fingerprint, "array": name,
            "shard_digests": digests, "built_by": {"host": socket.gethostname(), "pid": os.getpid(),
                                                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}))
    except OSError as exc:
        raise IchbenchError(f"{path}: cannot write the node cache ({exc.strerror or exc}); free space there, "
                            f"point {ENV} at another folder, or set {ENV}={OFF}") from None


@contextmanager
def _lock(path: Path):
    """Hold the build lock of one cache file; leftovers of builders that died go first (only the
    lock holder builds, so any temp file of this name is theirs)."""
    lock = path.parent / f".{path.stem}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a")
    except OSError as exc:
        raise IchbenchError(f"{path.parent}: cannot use it as the node cache ({exc.strerror or exc}); "
                            f"point {ENV} at a writable folder, or set {ENV}={OFF}") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for tmp in path.parent.glob(f".{path.stem}.*"):
            if tmp != lock:
                tmp.unlink(missing_ok=True)
        yield
