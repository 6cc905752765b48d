"""The Ray task that scores a run's fold models on an external test set (`orchestrate.external`)."""

from __future__ import annotations

import time
from pathlib import Path

import ray

from ichbench.orchestrate.tasks import FOLD_RETRIES, _device, _where
from ichbench.store.location import parse


@ray.remote(max_retries=FOLD_RETRIES, retry_exceptions=False)
def external_task(models: dict, store_path: str, cfg, icm_checkpoint: str | None, key: str, board=None) -> dict:
    from ichbench.train.external import score_test_set
    t0 = time.time()
    where = _where()

    def on_volume(done: int, total: int) -> None:
        if board is not None:
            board.report.remote(key, done, total, f"{done}/{total} volumes")

    cavity = None
    if cfg.icm is not None:   # a +ICM method's cavity masks, built here as the fold tasks build theirs
        from ichbench.icm.sources import CavitySource
        cavity = CavitySource(cfg.icm, Path(icm_checkpoint) if icm_checkpoint else None, _device())
    scored = score_test_set({int(f): Path(p) for f, p in models.items()}, parse(store_path), cfg, cavity,
                            _device(), on_volume)
    return {**scored, "seconds": time.time() - t0, "worker": where}
