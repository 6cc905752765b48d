"""Starting or joining a Ray cluster.

With no address, a local cluster sized to this machine (all CPUs, all visible GPUs) is started,
always a new one of its own: a plain `ray.init()` would join whatever cluster Ray's address file
(`/tmp/ray/ray_current_cluster`) names, a stale one left by a killed `ray start` or test cluster
included, and then refuse the CPU count it is given. With `--address` or RAY_ADDRESS an existing
cluster is joined, and the run says which (one line on stderr). The same driver code runs on both.
"""

from __future__ import annotations

import logging
import os
import sys

from ichbench.errors import IchbenchError


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """Initialise Ray once per process; returns the cluster's total resources."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address and "ray" not in sys.modules:
        # A local cluster keeps Ray's token authentication; saying so explicitly (before Ray reads
        # it, at import) keeps it and silences the notice Ray prints on every start otherwise.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not ray.is_initialized():
        _init(ray, address, num_cpus, num_gpus)
    return ray.cluster_resources()


STARTING = ("interrupted: stopping the Ray cluster as soon as it has started "
            "(Ctrl-C again to stop at once)")


def _init(ray, address: str | None, num_cpus: int | None, num_gpus: int | None) -> None:
    """`ray.init`, and on Ctrl-C during it a cluster stopped with nothing left running
    (`interrupt.py`), then KeyboardInterrupt."""
    from ichbench.orchestrate import interrupt

    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if not address and num_gpus is None:
        import torch
        num_gpus = torch.cuda.device_count()
    before = interrupt.children()
    with interrupt.deferred_sigint(STARTING) as pending:
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, **kwargs)
        except ConnectionError as exc:
            raise IchbenchError(f"cannot join the Ray cluster at {address}: {exc}") from None
        except BaseException:
            interrupt.shut_down_started_cluster(ray, before)
            raise
        if pending.hit:
            interrupt.shut_down_started_cluster(ray, before)
            raise KeyboardInterrupt
    if address:
        print(f"ichbench: {joined(address, ray.nodes(), ray.cluster_resources())}", file=sys.stderr, flush=True)


def joined(address: str, nodes: list[dict], resources: dict) -> str:
    """The line that says which cluster a run joined."""
    alive = sum(1 for n in nodes if n.get("Alive"))
    return (f"joined the Ray cluster at {address}: {alive} node{'s' if alive != 1 else ''}, "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def default_gpus_per_fold(total_gpus: float, n_folds: int) -> float:
    """Share the cluster's GPUs so that every fold runs at once (at most one GPU per fold)."""
    if total_gpus <= 0 or n_folds <= 0:
        return 0.0
    return min(1.0, total_gpus / n_folds)
