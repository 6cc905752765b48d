"""2.5D inputs (issue 24, `input.*`): a slice with its neighbours, in several HU windows, as channels.

The neighbours of a slice are the rows of its volume at offsets -context..context in store order,
replicated at the volume's first and last row and never taken from another volume. Store order is
slice order within a volume (every ingest writes a volume's slices inferior to superior), but a
volume's rows need not be contiguous: a slice-level source appends a series' slices as they come,
so volumes may interleave. `neighbour_index` is therefore built from the stored volume ids alone,
once per store (a stable sort: O(N log N), ~0.1 s for RSNA's 752,803 rows), and every batch then
gathers its (B, 2·context + 1) rows with one index, where the arrays live (host or GPU), and
windows them all in one broadcast op (`window_channels`): no per-sample Python.

Channels are slice-major: channel s·W + w is neighbour s (0 = the most inferior) in window w; the
centre slice in the first window is channel context·W (`InputConfig.centre`).

Imports neither pydantic nor zarr: the benchmarks run it where only torch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAPER_WINDOW = (-50.0, 150.0)


def neighbour_index(volume, context: int) -> np.ndarray:
    """(N, 2·context + 1) int64: for each row, the rows of its volume at offsets -context..context
    in store order, clamped at the volume's ends (a single-slice volume repeats its one row)."""
    volume = np.asarray(volume, dtype=np.int64)
    order = np.argsort(volume, kind="stable")   # rows grouped by volume, store order kept inside
    grouped = volume[order]
    first = np.searchsorted(grouped, grouped, side="left")
    last = np.searchsorted(grouped, grouped, side="right") - 1
    at = np.arange(len(volume))[:, None] + np.arange(-context, context + 1)[None, :]
    out = np.empty((len(volume), 2 * context + 1), dtype=np.int64)
    out[order] = order[np.clip(at, first[:, None], last[:, None])]
    return out


def with_neighbours(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`rows` and every neighbour of theirs (`table` = `neighbour_index` of the whole store), sorted."""
    return np.unique(table[np.asarray(rows, dtype=np.int64)])


def local_index(table: np.ndarray, loaded: np.ndarray) -> np.ndarray:
    """The store-row `table` restricted to the sorted store rows `loaded`, as positions into them.
    A neighbour that was not loaded (of a row loaded only as another's neighbour, never a sample)
    is replaced by the row itself."""
    loaded = np.asarray(loaded, dtype=np.int64)
    want = table[loaded]
    pos = np.searchsorted(loaded, want).clip(max=max(len(loaded) - 1, 0))
    own = np.arange(len(loaded))[:, None]
    return np.where(loaded[pos] == want, pos, own)


def window_channels(hu: torch.Tensor, low: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """(B, K, S, S) HU -> (B, K·W, S, S) float32 in [0, 1], slice-major, every window at once: one
    multiply-add writing the K·W channels, then an in-place clamp (half the time of subtracting
    and dividing in two passes; within a float32 rounding of (hu - low) / width)."""
    scale = (1.0 / width)[:, None, None]
    return torch.addcmul(-low[:, None, None] * scale, hu.float()[:, :, None], scale).clamp_(0.0, 1.0).flatten(1, 2)


@dataclass
class Channels:
    """How a batch of rows becomes its input channels: the neighbour positions (None: the slice
    alone) and the windows (low, high - low), on the device of the arrays they index."""
    neighbours: torch.Tensor | None   # (N, 2·context + 1) int64 positions into the arrays
    low: torch.Tensor                 # (W,) float32
    width: torch.Tensor               # (W,) float32
    centre: int                       # the channel of the centre slice in the first window

    @classmethod
    def of(cls, windows, neighbours: np.ndarray | None, context: int) -> "Channels":
        w = torch.tensor([[float(lo), float(hi)] for lo, hi in windows], dtype=torch.float32)
        nb = None if neighbours is None or context == 0 else torch.from_numpy(np.ascontiguousarray(neighbours))
        return cls(nb, w[:, 0].contiguous(), (w[:, 1] - w[:, 0]).contiguous(), context * len(w))

    @property
    def count(self) -> int:
        k = 1 if self.neighbours is None else self.neighbours.shape[1]
        return k * len(self.low)

    def to(self, device) -> "Channels":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Channels(move(self.neighbours), move(self.low), move(self.width), self.centre)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) positions -> (B, K) positions of each one's slices (K = 1 without context)."""
        if self.neighbours is None:
            return idx[:, None]
        return self.neighbours[idx.to(self.neighbours.device)]

    def window(self, hu: torch.Tensor) -> torch.Tensor:
        """(B, K, S, S) or (B, S, S) HU, anywhere -> (B, C, S, S) float32 channels on hu's device."""
        if hu.ndim == 3:
            hu = hu[:, None]
        if self.low.device != hu.device:   # arrays on the host, batches on the GPU: move them once
            self.low, self.width = self.low.to(hu.device), self.width.to(hu.device)
        return window_channels(hu, self.low, self.width)


def is_plain(context: int, windows) -> bool:
    """The paper's input (one slice, [-50, 150] HU): today's path, untouched."""
    return context == 0 and [tuple(float(v) for v in w) for w in windows] == [PAPER_WINDOW]
