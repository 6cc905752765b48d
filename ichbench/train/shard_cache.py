"""The node cache for streamed shards: each shard of an array, at the training size, as its own
uncompressed file, so that epochs after the first map it instead of decoding the store again.

A streamed pretraining (`train.stream`) reads a store that does not fit memory, so the whole-array
node cache (`node_cache`, one file per array, built before training) does not suit it: it would
be built in one pass before the first step and hold every row. Here the first reader of shard k
(epoch 1, or another worker on the node) reads it through the store's checked read, resizes it,
writes `<root>/<fingerprint[:32]>/<array>-<digest[:16]>-<size>.shards/<k>.npy`; every read (that
first one too) hands out a read-only map of the file, from which the stream copies the selected
rows. Files are replaced by rename, never rewritten in place; never truncate one a run may map
(reading past the end of a map kills the process with SIGBUS).

Integrity, as for the whole-array cache: a file is checked (sha256 of its rows) against a recorded
digest before a process first uses it — the store's own shard digest at the store's size, else the
digest the builder wrote beside it (`<k>.sha256`). The process then remembers the file by (path,
inode, size, mtime) and checks it again only when one of them changes, so epochs 2..n skip the
hash; a change that keeps all four (bits rotting under the file system, a write in the same
timestamp tick) is seen by the next process, not this one. A file that does not check, is
truncated, or whose digest record is missing is rebuilt from the store, said in one line on
stderr; an unchecked file is never used. The builder's own file counts as checked in its process:
it was written from a checked read.

Concurrent builders of one shard (workers of one node) write identical bytes, each to its own
temporary name, renamed into place: no lock is needed. Files are not fsynced: a crash may leave one
incomplete, and it is checked before use anyway. The digest record is renamed into place before
its shard file, so a reader never sees a resized shard without its record.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ichbench.files import write_atomic
from ichbench.store.layout import SHARD_SLICES, array_digest, shard_digest
from ichbench.preprocess.resize import resize_classes, resize_stack
from ichbench.train.node_cache import ENV, OFF, CacheDamaged, cache_root

STALE_TEMP_S = 3600   # a temporary file untouched this long is a dead builder's (one shard takes < 1 s)

# path -> (st_ino, st_size, st_mtime_ns) of each file this process has checked (or built)
_CHECKED: dict[str, tuple[int, int, int]] = {}


class ShardCache:
    """The shards of array `name` of `store` at `size` x `size`, as checked files under `root`."""

    def __init__(self, store, name: str, size: int, root: Path):
        self.store, self.name, self.size = store, name, size
        digest = array_digest(store.shard_digests(name))
        self.folder = Path(root) / store.fingerprint[:32] / f"{name}-{digest[:16]}-{size}.shards"
        arr = store[name]
        self.dtype = np.dtype(str(arr.dtype))
        self.resized = tuple(arr.shape[1:]) != (size, size)
        self.writable = True
        if self.resized:
            self.dtype = np.dtype(np.int16 if name == "images" else np.uint8)   # what resize_stack gives

    def path(self, k: int) -> Path:
        return self.folder / f"{k}.npy"

    def rows_in(self, k: int) -> int:
        return min(SHARD_SLICES, self.store.n_slices - k * SHARD_SLICES)

    def file_bytes(self, k: int) -> int:
        return 128 + self.rows_in(k) * self.size * self.size * self.dtype.itemsize   # npy header + rows

    def read(self, k: int) -> np.ndarray:
        """Every row of shard k at the cache's size: a checked map of its file, or (when there is
        none, or it does not check) the store's checked read, resized and written for next time."""
        path = self.path(k)
        try:
            return self._mapped(k, path)
        except (FileNotFoundError, NotADirectoryError):   # none yet (or no folder for it)
            pass
        except CacheDamaged as exc:
            print(f"{path}: {exc}; rebuilding it from {self.store.path}", file=sys.stderr, flush=True)
        return self._build(k, path)

    def _expected_digest(self, k: int, path: Path) -> str:
        if not self.resized:
            return self.store.shard_digests(self.name)[k]
        try:
            return path.with_suffix(".sha256").read_text().strip()
        except FileNotFoundError:
            raise CacheDamaged("its digest record (.sha256) is missing") from None

    def _mapped(self, k: int, path: Path) -> np.memmap:
        """The file mapped read-only, checked unless this process checked this very file already;
        FileNotFoundError when there is none, CacheDamaged when it cannot be used."""
        shape = (self.rows_in(k), self.size, self.size)
        try:
            fh = open(path, "rb")   # header, size and map from one open file: one inode throughout
        except (FileNotFoundError, NotADirectoryError):
            raise
        except OSError as exc:
            raise CacheDamaged(f"unreadable ({exc.strerror or exc})") from None
        with fh:
            st = os.fstat(fh.fileno())
            try:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                got_shape, fortran, dtype = read_header(fh)
            except (OSError, ValueError) as exc:
                raise CacheDamaged(f"unreadable or truncated ({type(exc).__name__}: {str(exc)[:80]})") from None
            if got_shape != shape or dtype != self.dtype or fortran:
                raise CacheDamaged(f"holds {dtype} {got_shape}, expected {self.dtype} {shape}")
            offset = fh.tell()
            if st.st_size != offset + int(np.prod(shape)) * dtype.itemsize:
                raise CacheDamaged(f"truncated or overlong ({st.st_size} bytes, "
                                   f"expected {offset + int(np.prod(shape)) * dtype.itemsize})")
            mm = np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape)
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if _CHECKED.get(str(path)) != identity:
            if shard_digest(mm) != self._expected_digest(k, path):
                raise CacheDamaged(f"shard {k}'s rows differ from their recorded digest")
            _CHECKED[str(path)] = identity
        return mm

    def _build(self, k: int, path: Path) -> np.ndarray:
        block = self.store.read_shard(self.name, k)   # checked against the store's digest
        if self.resized:
            block = (resize_classes(block, self.size) if self.name == "classes"   # ids kept, not merged
                     else resize_stack(block, self.size, is_mask=self.name != "images"))
        block = np.ascontiguousarray(block)
        identity = []

        def write(fh) -> None:
            np.lib.format.write_array(fh, block, allow_pickle=False)
            fh.flush()
            st = os.fstat(fh.fileno())   # rename keeps inode, size and mtime
            identity.append((st.st_ino, st.st_size, st.st_mtime_ns))

        if not self.writable:
            return block
        try:
            # no fsync: every file is checked before a process first uses it, so one left
            # incomplete by a crash is found and rebuilt; syncing 8 MB a shard would only cost time
            if self.resized:   # the record first: a reader that finds the shard finds its record
                digest = (shard_digest(block) + "\n").encode()
                write_atomic(path.with_suffix(".sha256"), lambda fh: fh.write(digest), fsync=False)
            write_atomic(path, write, fsync=False)
        except OSError as exc:   # a disk filled since the engine's check, say: said once, then no more writes
            self.writable = False
            print(f"{path}: cannot write the node cache ({exc.strerror or exc}); the shards not cached yet "
                  f"are streamed from the store", file=sys.stderr, flush=True)
            return block
        _CHECKED[str(path)] = identity[0]
        try:   # the file just written (in the page cache), so that the block's memory goes now
            return self._mapped(k, path)
        except (OSError, CacheDamaged):   # replaced or removed meanwhile: the block is as good
            return block

    def missing_bytes(self, shards) -> int:
        """Bytes the files of `shards` not yet in the cache will take."""
        return sum(self.file_bytes(int(k)) for k in shards if not self.path(int(k)).exists())

    def remove_stale_temps(self) -> None:
        """Temporary files of builders that died (untouched for STALE_TEMP_S)."""
        now = time.time()
        for tmp in self.folder.glob(".*"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()
            except OSError:
                pass


def for_stream(store, name: str, shards, size: int) -> tuple[ShardCache | None, str]:
    """The cache the streamed `shards` of `name` go through, or None, and the words that say which
    (for the engine's one log line): none when ICHBENCH_NODE_CACHE is off, when its folder cannot be
    made, or when its disk has less free space than the missing shard files need."""
    root = cache_root()
    if root is None:
        return None, f"not cached ({ENV}={OFF})"
    cache = ShardCache(store, name, size, root)
    try:
        cache.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache.folder).free
    except OSError as exc:
        return None, f"not cached: {cache.folder} is not usable ({exc.strerror or exc})"
    need = cache.missing_bytes(shards)
    if free < need:
        return None, f"not cached: {cache.folder} has {_size(free)} free, its shards need {_size(need)}"
    cache.remove_stale_temps()
    return cache, f"cached in {cache.folder}"


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
