"""One streamed epoch through the node cache in a process of its own, for the concurrent-builders
test of tests/test_shard_cache.py (started with multiprocessing's 'spawn': a top-level function of
a module without tests, so the child imports little more than ichbench)."""

from __future__ import annotations

import contextlib
import io
import traceback


def one_epoch(store_path: str, root: str, size: int, rows, lockstep, out: str) -> None:
    """The batches of one epoch (as the test's `epochs(..., n=1)` draws them) read through a
    `ShardCache` under `root`, saved to `out` with the shards this process built and what it said
    on stderr. Every build meets the other processes at `lockstep` (a multiprocessing Barrier)
    once it has read its shard from the store: each of them found the shard missing, so they all
    write that shard's files at the same time."""
    import torch

    result = {"error": None, "batches": [], "built": [], "stderr": ""}
    err = io.StringIO()
    try:
        from ichbench.store import open_store
        from ichbench.train.shard_cache import ShardCache
        from ichbench.train.stream import ShardStream

        store = open_store(store_path)
        read_shard = store.read_shard

        def read_then_meet(name, k):
            block = read_shard(name, k)
            result["built"].append(k)
            lockstep.wait()
            return block

        store.read_shard = read_then_meet
        with contextlib.redirect_stderr(err):
            cache = ShardCache(store, "images", size, root)
            stream = ShardStream(store, rows, size, 8, None, torch.Generator().manual_seed(0), 2, cache=cache)
            result["batches"] = [(b.rows.tolist(), b.images.clone()) for b in stream.epoch()]
    except BaseException:   # noqa: BLE001 - said to the test, which fails with it
        lockstep.abort()     # the others stop waiting for this one
        result["error"] = traceback.format_exc()
    result["stderr"] = err.getvalue()
    torch.save(result, out)
