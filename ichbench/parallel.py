"""Ordered, bounded parallel work over worker processes: decoding many DICOM files, writing and
hashing store shards, checking them.

`ProcessPoolExecutor.map` and `Pool.imap` submit every item at once and keep finished results
until they are consumed, so a slow consumer (the store writer) would let decoded pixels pile up
without limit. `OrderedPool.map` keeps at most `workers * prefetch` chunks in flight and yields
results in input order, so memory stays bounded by that window and the output is deterministic
whatever the number of workers. One pool serves many maps (a reader's header pass, then its
decoding, study after study) so workers start once.

`submit` hands one task to the workers and returns its future (the store writer's shards: it
collects them in submission order and bounds how many are in flight itself).

`fn` must be a picklable top-level function. Per-item failures should be returned as values (an
exception raised in a worker stops the whole map, as it would in a plain loop).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# imported once by the fork server, so forked workers start with numpy and zarr loaded
DEFAULT_PRELOAD = ("numpy", "zarr")
_PRELOAD: set[str] = set()


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True   # no /proc: kill(pid, 0) is all we know


def _end_with(parent: int) -> None:
    """Worker initializer: the worker ends when the process that made the pool is gone. Workers
    wait on a queue whose write end they hold themselves, so a driver killed with -9 (no chance to
    shut its pool down) would otherwise leave them, and the fork server, waiting for ever."""
    def watch() -> None:
        while alive(parent):
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="ichbench-parent-watch", daemon=True).start()


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(item) for item in chunk]


def _context(preload: list[str]):
    # forkserver/spawn, not fork: the parent has torch (and its OpenMP threads) and zarr's I/O
    # thread running, and a forked child that touches a lock one of them held can deadlock.
    # The fork server imports `preload` once, so each worker starts without re-importing
    # numpy, pydicom and torch (seconds per worker otherwise).
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # the server starts with the first pool's first task: preload what every pool made so far
        # asked for (an ingest makes its shard writers' pool before the reader's decoding pool)
        _PRELOAD.update(preload)
        ctx.set_forkserver_preload(sorted(_PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


class OrderedPool:
    """`workers` processes (none when workers <= 1: maps then run in this process)."""

    def __init__(self, workers: int = 1, preload: Iterable[str] = DEFAULT_PRELOAD):
        self.workers = max(1, int(workers))
        self._ex = None
        if self.workers > 1:
            self._ex = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context(list(preload)),
                                           initializer=_end_with, initargs=(os.getpid(),))

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, chunksize: int = 8,
            prefetch: int = 2) -> Iterator[R]:
        """fn(item) for each item, in input order."""
        if self._ex is None:
            for item in items:
                yield fn(item)
            return
        it = iter(items)
        window = self.workers * max(1, prefetch)
        pending: deque = deque()

        def submit() -> bool:
            chunk = list(islice(it, chunksize))
            if chunk:
                pending.append(self._ex.submit(_run_chunk, fn, chunk))
            return bool(chunk)

        try:
            while len(pending) < window and submit():
                pass
            while pending:
                results = pending.popleft().result()
                submit()
                yield from results
        finally:
            # reached too when the consumer stops early: queued chunks are dropped
            for f in pending:
                f.cancel()

    def submit(self, fn: Callable[..., R], *args) -> Future:
        """fn(*args) in a worker; run here at once, as a finished future, without workers."""
        if self._ex is not None:
            return self._ex.submit(fn, *args)
        done: Future = Future()
        done.set_result(fn(*args))
        return done

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

