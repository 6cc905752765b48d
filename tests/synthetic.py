"""A tiny in-process dataset for tests of the store and the ingest pipeline (no files needed)."""

from __future__ import annotations

import time

import numpy as np

from ichbench.datasets.base import SEGMENTATION, Dataset, Volume


def make_volume(i: int, slices: int = 5, size: int = 32, ich: bool = True) -> Volume:
    rng = np.random.default_rng(i)
    hu = rng.normal(30, 5, (slices, size, size)).astype(np.float32)
    mask = np.zeros(hu.shape, bool)
    if ich:
        mask[1:3, 10:16, 10:16] = True
        hu[mask] = 70
    return Volume(id=f"V{i:03d}", hu=hu, spacing=(5.0, 0.5, 0.5), mask=mask,
                  subtypes=["iph"] if ich else [], source=f"/fake/V{i:03d}")


class SyntheticDataset(Dataset):
    name = "synthetic"
    description = "test volumes generated in memory"
    roles = (SEGMENTATION,)

    def __init__(self, n: int = 4, delay: float = 0.0, offset: int = 0, bad: dict | None = None):
        self.n, self.delay, self.offset, self.bad = n, delay, offset, bad or {}

    def source_files(self, source):
        return []

    def read(self, source, role, options, report):
        for i in range(self.n):
            vol = make_volume(i + self.offset, ich=i % 2 == 0)
            if i in self.bad:
                self.bad[i](vol)
            yield vol
            if self.delay:
                time.sleep(self.delay)
