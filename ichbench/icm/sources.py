"""The intracranial cavity mask a +ICM run multiplies its predictions by, from the source its
config names (`icm.source`):

- "unet": the trained ICM U-Nets (§2.3.3; the paper profile's),
- "classical": threshold-and-fill on the slices (`ichbench.preprocess.brain`), computed here,
- "shipped": the dataset's own masks, as ingested into the store's `brain` array.

The engine takes a `CavitySource` and never imports this package, so the ICM (which trains with
the engine's loop) sits above training in the one-way flow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ichbench.errors import IchbenchError
from ichbench.icm.masker import load_icm
from ichbench.preprocess.brain import ClassicalBrainMasker


def check_shipped(store, volume_ids=None) -> None:
    """`icm.source=shipped` needs every scored volume's cavity mask to have come with the data."""
    wanted = set(volume_ids) if volume_ids is not None else None
    bad = [v["id"] for v in store.volumes if (wanted is None or v["id"] in wanted) and v.get("brain") != "shipped"]
    if "brain" not in store.arrays or bad:
        raise IchbenchError(f"{store.path}: icm.source=shipped, but {len(bad) or 'all'} volume(s) have no shipped "
                            f"cavity mask (e.g. {bad[0] if bad else 'no brain array'}); "
                            "use icm.source=classical or unet")


class CavitySource:
    """Gives the cavity mask of rows of a `SliceArrays` (HU at the training size)."""

    def __init__(self, icm_cfg, checkpoint: Path | None = None, device="cpu"):
        self.source, self.threshold = icm_cfg.source, icm_cfg.threshold
        self.info = {"source": self.source}
        self.unets = None
        if self.source == "unet":
            if checkpoint is None:
                raise IchbenchError("icm.source=unet needs trained ICM U-Nets: run `ichbench icm train --dataset "
                                    f"{icm_cfg.dataset}` (or `ichbench run`, which trains them first)")
            self.unets = load_icm(checkpoint, device)
            self.info.update(model=self.unets.key, trained_on=self.unets.payload.get("dataset"), **self.unets.metrics)
        elif self.source == "classical":
            self.masker = ClassicalBrainMasker()
        elif self.source != "shipped":
            raise IchbenchError(f"unknown icm.source {self.source!r}")

    @property
    def model_key(self) -> str | None:
        return self.unets.key if self.unets is not None else None

    def masks(self, arrays, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), S, S) bool on the host."""
        if self.source == "shipped":
            if arrays.brain is None:
                raise IchbenchError(f"{arrays.path}: icm.source=shipped, but the store has no `brain` array")
            return arrays.brain[rows.to(arrays.brain.device)].cpu().bool()
        if self.source == "unet" and arrays.icm is not None:
            # the store's `icm` array, written by these U-Nets (the engine loads it only then)
            return arrays.icm[rows.to(arrays.icm.device)].cpu().bool()
        hu = arrays.images[rows.to(arrays.images.device)].cpu().numpy().astype(np.float32)
        if self.source == "classical":
            return torch.from_numpy(self.masker(hu))
        return torch.from_numpy(self.unets(hu, self.threshold))

    def stored_in(self, store) -> bool:
        """Whether `store` holds these U-Nets' masks at this threshold (`ichbench icm apply`)."""
        rec = store.derived.get("icm") or {}
        return (self.unets is not None and rec.get("model") == self.unets.key
                and rec.get("threshold") == self.threshold)
