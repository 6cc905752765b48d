"""Reading a slice store. Training code loads the arrays it needs once per worker (`load`) and
indexes numpy arrays: zarr-python 3 costs ~0.5 ms per single-slice read, far too slow to index
per sample.

Every read is checked: arrays are decoded shard by shard and each shard's bytes are compared with
the digest the writer recorded (`layout`), so a damaged store stops the read that would have used
it, with one line naming the store, the array and the shard, instead of training on zeros or on
flipped bytes.
"""

from __future__ import annotations

import functools

import numpy as np
import zarr

from ichbench import LABEL_ORDER, UNKNOWN_LABEL
from ichbench.errors import IchbenchError
from ichbench.parallel import OrderedPool
from ichbench.store.atomic import published, store_of
from ichbench.store.location import Location, parse, zarr_store
from ichbench.store.layout import (ARRAYS, FORMAT_VERSION, READABLE_FORMATS, SHARD_SLICES, VALIDATION_PREFIX,
                                   array_digest, fingerprint, shard_digest)

SHARDS_PER_READ = 16   # shards decoded by one zarr call (fewer calls, one shard verified at a time)
SHARDS_PER_CHECK = 16  # shards one `verify` task checks (one store opening per task)


def settle_pending_reads(timeout: float = 60.0) -> None:
    """Let the chunk reads a failed zarr read left behind finish. zarr gathers a read's chunks on
    its own event loop, and `asyncio.gather` does not cancel the others when one raises: they go
    on running, and when the process exits right after (the one-line error of a damaged store)
    zarr closes the loop under them, and Python prints "Task was destroyed but it is pending!"
    and "coroutine ... was never awaited" after that line. Waiting for them (cancelling any that
    outlast `timeout`) leaves stderr holding the error alone."""
    import asyncio
    from zarr.core.sync import _get_loop

    async def settle() -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not others:
            return
        _, late = await asyncio.wait(others, timeout=timeout)
        for t in late:
            t.cancel()
        await asyncio.wait(others)
        for t in others:
            if not t.cancelled():
                t.exception()   # retrieved: no "Task exception was never retrieved"

    asyncio.run_coroutine_threadsafe(settle(), _get_loop()).result()


class StoreDamagedError(IchbenchError):
    """A store's bytes differ from what was recorded when it was written, or cannot be decoded.
    `problem` names the array and shard, without the store's path."""

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


class SliceStore:
    def __init__(self, path: Location | str):
        self.path = parse(path)            # the store's name: a folder, or a URL
        self.root = published(self.path)   # where its group lives (a remote store's current build)
        if not (self.root / "zarr.json").exists():
            raise IchbenchError(f"{self.path}: no slice store here (run `ichbench data ingest` first)")
        try:
            self.group = zarr.open_group(zarr_store(self.root, "r"), mode="r")
            self.attrs = dict(self.group.attrs)
        except Exception as exc:  # noqa: BLE001 - zarr and json raise many types on a damaged file
            raise StoreDamagedError(f"{self.path}: store metadata (zarr.json) is unreadable ({_first_line(exc)}); "
                                    f"the store is damaged: {self._remedy()}") from None
        version = self.attrs.get("format_version")
        if version not in READABLE_FORMATS or "fingerprint" not in self.attrs:
            why = (f"written by an older ichbench (store format {version}, this one reads {FORMAT_VERSION})"
                   if isinstance(version, int) and version < FORMAT_VERSION else
                   "not a complete ichbench store (format or fingerprint missing)")
            raise IchbenchError(f"{self.path}: {why}; {self._remedy()}")

    def _remedy(self) -> str:
        dataset = getattr(self, "attrs", {}).get("dataset") or store_of(self.path).parent.name
        return f"re-ingest it (`ichbench data ingest {dataset} --force`)"

    # -- metadata --------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def volumes(self) -> list[dict]:
        return self.attrs["volumes"]

    @property
    def n_slices(self) -> int:
        return int(self.attrs["n_slices"])

    @property
    def arrays(self) -> list[str]:
        return [a for a in ARRAYS if a in self.attrs.get("shard_digests", {})]

    @property
    def class_names(self) -> list[str] | None:
        """Names of the ids 1..C of the `classes` array (0 is background), or None: a binary store."""
        names = self.attrs.get("class_names")
        return list(names) if names is not None else None

    @property
    def derived(self) -> dict:
        """Arrays computed from the store after ingest (`icm`), with their model keys and digests."""
        return dict(self.attrs.get("derived") or {})

    def validation_mask(self) -> np.ndarray:
        """(N,) bool: slices of the `val/...` volumes, the held-out set an ingest chose."""
        val = np.array([str(v["id"]).startswith(VALIDATION_PREFIX) for v in self.volumes], bool)
        volume = self.read("volume")
        return val[volume] if len(val) else np.zeros(len(volume), bool)

    def __getitem__(self, name: str) -> zarr.Array:
        """The raw zarr array (unchecked; for tools that inspect the format itself)."""
        return self.group[name]

    # -- checked reads ---------------------------------------------------------------------------
    def shard_digests(self, name: str) -> list[str]:
        """The sha256 of each shard of `name`, recorded when it was written (`layout.shard_digest`)."""
        if name in self.attrs.get("shard_digests", {}):
            return self.attrs["shard_digests"][name]
        if name in self.derived:
            return self.derived[name]["shard_digests"]
        raise IchbenchError(f"{self.path}: no array {name!r} in this store (it has {', '.join(self.arrays)})")

    def _damaged(self, name: str, k: int, problem: str) -> StoreDamagedError:
        s0, s1 = k * SHARD_SLICES, min((k + 1) * SHARD_SLICES, self.n_slices)
        where = f"array {name}, shard {k} (slices {s0}-{s1 - 1}) {problem}"
        return StoreDamagedError(f"{self.path}: {where}; the store is damaged: {self._remedy()}", where)

    def _read_shards(self, name: str, first: int, last: int) -> np.ndarray:
        """Shards first..last-1 of `name`, each checked against its recorded digest."""
        digests = self.shard_digests(name)
        s0, s1 = first * SHARD_SLICES, min(last * SHARD_SLICES, self.n_slices)
        try:
            # decode a shard's chunks as one batch: ~1.3x faster than zarr's default of one at a time
            with zarr.config.set({"codec_pipeline.batch_size": SHARD_SLICES}):
                block = np.ascontiguousarray(self.group[name][s0:s1])
        except Exception as exc:  # noqa: BLE001 - a damaged shard index or chunk raises many types
            settle_pending_reads()
            for k in range(first, last):   # name the shard that fails alone, if one does
                try:
                    self.group[name][k * SHARD_SLICES:min((k + 1) * SHARD_SLICES, self.n_slices)]
                except Exception as inner:  # noqa: BLE001
                    settle_pending_reads()
                    raise self._damaged(name, k, f"cannot be decoded ({_first_line(inner)})") from None
            raise self._damaged(name, first, f"cannot be decoded ({_first_line(exc)})") from None
        if len(block) != s1 - s0:
            raise self._damaged(name, first, f"holds {len(block)} rows, the store records {s1 - s0}")
        for k in range(first, last):
            part = block[(k - first) * SHARD_SLICES:(k - first + 1) * SHARD_SLICES]
            if k >= len(digests) or shard_digest(part) != digests[k]:
                raise self._damaged(name, k, "differs from the digest recorded when it was written")
        return block

    def read_shard(self, name: str, k: int) -> np.ndarray:
        """Shard `k` of `name` (SHARD_SLICES rows, fewer for the last), checked against its digest:
        the unit a streaming reader decodes (`ichbench.train.stream`)."""
        n_shards = -(-self.n_slices // SHARD_SLICES)
        if not 0 <= k < n_shards:
            raise IchbenchError(f"{self.path}: shard {k} requested from {name}; the store has shards 0..{n_shards - 1}")
        return self._read_shards(name, k, k + 1)

    def read(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The whole array `name` (or the sorted `rows` of it) as numpy, every shard checked."""
        n = self.n_slices
        n_shards = -(-n // SHARD_SLICES)
        if rows is None:
            wanted = range(n_shards)
        else:
            rows = np.asarray(rows, dtype=np.int64)
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise IchbenchError(f"{self.path}: rows outside 0..{n - 1} requested from {name}")
            wanted = np.unique(rows // SHARD_SLICES).tolist()
        parts, run = [], []
        for k in list(wanted) + [None]:   # group consecutive shards into one zarr call
            if run and (k is None or k != run[-1] + 1 or len(run) == SHARDS_PER_READ):
                parts.append((run[0], self._read_shards(name, run[0], run[-1] + 1)))
                run = []
            if k is not None:
                run.append(k)
        if not parts:
            return np.zeros((0, *self.group[name].shape[1:]), dtype=self.group[name].dtype)
        if rows is None:
            return np.concatenate([p for _, p in parts])
        starts = np.array([first * SHARD_SLICES for first, _ in parts])
        data = np.concatenate([p for _, p in parts])
        offsets = np.cumsum([0] + [len(p) for _, p in parts[:-1]])
        which = np.searchsorted(starts, rows, side="right") - 1
        return data[offsets[which] + rows - starts[which]]

    def load(self, names=None, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Whole arrays (or the rows in `index`) as numpy, checked shard by shard."""
        out = {}
        for name in names or self.arrays:
            if name in self.arrays or name in self.derived:
                out[name] = self.read(name, None if index is None else np.asarray(index))
        return out

    def info(self) -> dict:
        """Counts and provenance for `ichbench data info` (`ichbench.store.info.describe`)."""
        from ichbench.store.info import describe
        counts = self.attrs.get("label_counts")
        if counts is None:
            labels = self.read("labels")
            known = labels[:, 1] != UNKNOWN_LABEL
            counts = {"n_ich_slices": int((labels[known, 1] == 1).sum()), "n_unlabeled_slices": int((~known).sum())}
        return describe(self.path, self.attrs, counts)

    # -- integrity -------------------------------------------------------------------------------
    def verify(self, workers: int = 1) -> list[str]:
        """Decode and check every shard of every array (in `workers` processes), and the metadata
        that composes the fingerprint. Returns the problems found, each naming the array and
        shard (none: []), in the same order whatever the number of workers."""
        problems = []
        tasks = []
        n = self.n_slices
        n_shards = -(-n // SHARD_SLICES)
        recorded = self.attrs.get("shard_digests", {})
        for name in [*self.arrays, *self.derived]:
            if name not in self.group:
                problems.append(f"{name}: the array is missing (its metadata or folder was deleted)")
                continue
            if self.group[name].shape[0] != n:
                problems.append(f"{name} has {self.group[name].shape[0]} rows, expected {n}")
            if len(self.shard_digests(name)) != n_shards:
                problems.append(f"{name}: {len(self.shard_digests(name))} shard digests recorded for {n_shards} shards")
                continue
            tasks += [(name, k, min(k + SHARDS_PER_CHECK, n_shards)) for k in range(0, n_shards, SHARDS_PER_CHECK)]
        with OrderedPool(workers, preload=(__name__,)) as pool:
            for found in pool.map(functools.partial(_check_shards, str(self.path)), tasks, chunksize=1):
                problems += found
        if ("images" in self.arrays and "labels" in self.arrays
                and self.group["labels"].shape[1:] != (len(LABEL_ORDER),)):
            problems.append(f"labels has shape {self.group['labels'].shape}, expected (N, {len(LABEL_ORDER)})")
        if (self.class_names is not None) != ("classes" in self.arrays):
            problems.append("classes: the class names and the `classes` array must come together "
                            f"(names {self.class_names}, arrays {', '.join(self.arrays)})")
        if not problems and "volume" in self.arrays:
            counts = (np.bincount(self.read("volume"), minlength=len(self.volumes)) if n
                      else np.zeros(len(self.volumes), int))
            for i, v in enumerate(self.volumes):
                if counts[i] != v["n_slices"]:
                    problems.append(f"volume {v['id']}: table says {v['n_slices']} slices, "
                                    f"`volume` array has {counts[i]}")
        digests = {name: array_digest(d) for name, d in recorded.items()}
        if (digests != self.attrs.get("digests")
                or fingerprint(self.attrs["settings"], self.volumes, digests, self.attrs["format_version"],
                               self.class_names) != self.fingerprint):
            problems.append("metadata: the fingerprint does not match the settings, volumes table and shard digests")
        return problems


def _check_shards(path: str, task: tuple[str, int, int]) -> list[str]:
    """The problems of shards first..last-1 of one array (top level: runs in worker processes)."""
    name, first, last = task
    store, problems = SliceStore(path), []
    for k in range(first, last):
        try:
            store.read_shard(name, k)
        except StoreDamagedError as exc:
            problems.append(exc.problem)
    return problems
