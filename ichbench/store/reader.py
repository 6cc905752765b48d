"""Reading a slice store. Training code calls `load()` once per worker and indexes numpy arrays:
zarr-python 3 costs ~0.5 ms per single-slice read, far too slow to index per sample."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import zarr

from ichbench import LABEL_ORDER, UNKNOWN_LABEL
from ichbench.errors import IchbenchError
from ichbench.store.layout import ARRAYS, FORMAT_VERSION, SHARD_SLICES, VALIDATION_PREFIX, fingerprint


class SliceStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise IchbenchError(f"{self.path}: no slice store here (run `ichbench data ingest` first)")
        self.group = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("format_version") != FORMAT_VERSION or "fingerprint" not in self.attrs:
            raise IchbenchError(f"{self.path}: not a complete ichbench store (format or fingerprint missing)")

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
        return [a for a in ARRAYS if a in self.group]

    def validation_mask(self) -> np.ndarray:
        """(N,) bool: slices of the `val/...` volumes, the held-out set an ingest chose."""
        val = np.array([str(v["id"]).startswith(VALIDATION_PREFIX) for v in self.volumes], bool)
        volume = self.group["volume"][:]
        return val[volume] if len(val) else np.zeros(len(volume), bool)

    def __getitem__(self, name: str) -> zarr.Array:
        return self.group[name]

    def load(self, names=None, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Whole arrays (or the rows in `index`) as numpy, in one bulk read each."""
        out = {}
        for name in names or self.arrays:
            if name not in self.group or (name not in self.arrays and name not in self.derived):
                continue
            arr = self.group[name]
            out[name] = arr[:] if index is None else arr.get_orthogonal_selection((np.asarray(index),))
        return out

    def info(self) -> dict:
        """Counts and provenance for `ichbench data info` (`ichbench.store.info.describe`)."""
        from ichbench.store.info import describe
        counts = self.attrs.get("label_counts")
        if counts is None:   # stores written before the writer recorded the counts
            labels = self.group["labels"][:]
            known = labels[:, 1] != UNKNOWN_LABEL
            counts = {"n_ich_slices": int((labels[known, 1] == 1).sum()), "n_unlabeled_slices": int((~known).sum())}
        return describe(self.path, self.attrs, counts)

    # -- integrity -------------------------------------------------------------------------------
    @property
    def derived(self) -> dict:
        """Arrays computed from the store after ingest (`icm`), with their model keys and digests."""
        return dict(self.attrs.get("derived") or {})

    def _digest(self, name: str) -> str:
        h = hashlib.sha256()
        arr = self.group[name]
        for start in range(0, self.n_slices, SHARD_SLICES * 4):
            h.update(np.ascontiguousarray(arr[start:start + SHARD_SLICES * 4]).tobytes())
        return h.hexdigest()

    def verify(self) -> list[str]:
        """Re-hash every array and check the structure. Returns the problems found (none: [])."""
        problems = []
        n = self.n_slices
        for name in self.arrays:
            if self.group[name].shape[0] != n:
                problems.append(f"{name} has {self.group[name].shape[0]} rows, expected {n}")
        if "images" in self.arrays and self.group["labels"].shape[1:] != (len(LABEL_ORDER),):
            problems.append(f"labels has shape {self.group['labels'].shape}, expected (N, {len(LABEL_ORDER)})")
        digests = {name: self._digest(name) for name in self.arrays}
        for name, digest in digests.items():
            if digest != self.attrs["digests"].get(name):
                problems.append(f"{name}: content hash differs from the one recorded at ingest")
        for name, record in self.derived.items():   # e.g. `icm`, written by `ichbench icm apply`
            if name not in self.group:
                problems.append(f"{name}: recorded as derived but the array is missing")
            elif self.group[name].shape[0] != n:
                problems.append(f"{name} has {self.group[name].shape[0]} rows, expected {n}")
            elif self._digest(name) != record.get("digest"):
                problems.append(f"{name}: content hash differs from the one recorded when it was written")
        counts = np.bincount(self.group["volume"][:], minlength=len(self.volumes)) if n else np.zeros(len(self.volumes), int)
        for i, v in enumerate(self.volumes):
            if counts[i] != v["n_slices"]:
                problems.append(f"volume {v['id']}: table says {v['n_slices']} slices, `volume` array has {counts[i]}")
        if not problems and fingerprint(self.attrs["settings"], self.volumes, digests) != self.fingerprint:
            problems.append("fingerprint does not match the settings, volumes table and content")
        return problems
