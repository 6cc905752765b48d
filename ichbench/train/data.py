"""Training data: a slice store read into memory once, and index samplers over it.

zarr costs ~0.5 ms per single-slice read, so a worker loads the arrays it needs in one bulk read
(`SliceStore.load`) and every batch is a tensor index into memory. Images stay int16 HU (half the
memory of float32, which matters for the ~211,000 RSNA slices); the [-50, 150] HU window is applied
per batch, on the training device (or, for 2.5D inputs, a slice's neighbours in several windows:
`ichbench.train.inputs`). Samplers draw whole epochs of indices from a seeded
torch.Generator, so a checkpoint of the generator's state makes a resumed run draw the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ichbench import UNKNOWN_LABEL as UNKNOWN
from ichbench.errors import IchbenchError
from ichbench.preprocess.resize import resize_classes, resize_stack
from ichbench.preprocess.window import window
from ichbench.train.inputs import Channels, is_plain, local_index, neighbour_index


@dataclass
class SliceArrays:
    """Arrays of one store (or of selected rows of it) as CPU tensors."""
    images: torch.Tensor            # (N, S, S) int16 HU
    labels: torch.Tensor            # (N, 7) uint8, 255 = unknown
    volume: torch.Tensor            # (N,) int64 index into `volumes`
    masks: torch.Tensor | None      # (N, S, S) uint8 hemorrhage, segmentation stores only
    brain: torch.Tensor | None      # (N, S, S) uint8 intracranial cavity
    volumes: list[dict]
    fingerprint: str
    path: Path
    rows: torch.Tensor              # (N,) int64 row of each slice in the store
    icm: torch.Tensor | None = None  # (N, S, S) uint8 learned cavity mask (`ichbench icm apply`)
    channels: Channels | None = None  # 2.5D input (`with_channels`); None: one slice, the paper's window
    classes: torch.Tensor | None = None  # (N, S, S) uint8 class ids, subtypes task (`train.task`)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def to(self, device: torch.device) -> "SliceArrays":
        """A copy whose per-slice tensors live on `device` (used when the whole set fits on the GPU);
        `volume` stays on the host, where slices are selected."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return SliceArrays(move(self.images), move(self.labels), self.volume, move(self.masks),
                           move(self.brain), self.volumes, self.fingerprint, self.path, self.rows, move(self.icm),
                           None if self.channels is None else self.channels.to(device), move(self.classes))

    def nbytes(self) -> int:
        nb = None if self.channels is None else self.channels.neighbours
        return sum(t.numel() * t.element_size() for t in
                   (self.images, self.labels, self.volume, self.masks, self.brain, self.icm, nb, self.classes)
                   if t is not None)


def load_store(path: Path, image_size: int, rows: np.ndarray | None = None,
               names=("images", "labels", "volume", "masks", "brain")) -> SliceArrays:
    """A store's arrays (all rows, or `rows`) at `image_size` x `image_size`. Through the node cache
    (`node_cache`) they are maps of files that every process on the machine shares, and `rows`
    are copied out of them; with ICHBENCH_NODE_CACHE=off they are read into this process."""
    from ichbench.store import open_store  # zarr only where a store is read
    from ichbench.train import node_cache

    store = open_store(path)
    if rows is not None:
        rows = np.sort(np.asarray(rows, dtype=np.int64))
    root = node_cache.cache_root()
    if root is None or store.n_slices == 0:
        data = store.load(names, index=rows)
    else:
        data = node_cache.load(store, names, image_size, lambda name, block: _at_size(name, block, image_size), root)
        if rows is not None:
            data = {name: arr[rows] for name, arr in data.items()}
    n = len(data["labels"])
    if rows is None:
        rows = np.arange(n, dtype=np.int64)

    def spatial(name: str) -> torch.Tensor | None:
        arr = data.get(name)
        return None if arr is None else torch.from_numpy(_at_size(name, np.asarray(arr), image_size))

    return SliceArrays(images=spatial("images"), labels=torch.from_numpy(np.asarray(data["labels"])),
                       volume=torch.from_numpy(data["volume"].astype(np.int64)),
                       masks=spatial("masks"), brain=spatial("brain"),
                       volumes=store.volumes, fingerprint=store.fingerprint, path=store.path,
                       rows=torch.from_numpy(rows), icm=spatial("icm"), classes=spatial("classes"))


def _at_size(name: str, arr: np.ndarray, size: int) -> np.ndarray:
    """Rows of a spatial array at `size` (images stay int16 HU, class maps keep their ids by the
    per-class area rule, the others are masks)."""
    if arr.ndim != 3 or arr.shape[-2:] == (size, size):
        return arr
    if name == "classes":
        return resize_classes(arr, size)
    return resize_stack(arr, size, is_mask=name != "images")


def windowed(images: torch.Tensor) -> torch.Tensor:
    """(B, S, S) int16 HU -> (B, 1, S, S) float32 in [0, 1] (the paper's [-50, 150] HU window)."""
    return window(images.float())[:, None]


def with_channels(arrays: SliceArrays, context: int, windows, table: np.ndarray | None = None) -> SliceArrays:
    """`arrays` set to give the input channels of `input.context` / `input.windows` (none for the
    paper's input: today's path). The neighbours come from `arrays`' own volume ids when they hold
    every row of their volumes; `table`, the whole store's `neighbour_index`, when they hold some
    rows of it (a pretraining selection, loaded with its neighbours)."""
    if is_plain(context, windows):
        arrays.channels = None
        return arrays
    nb = None
    if context:
        nb = (neighbour_index(arrays.volume.numpy(), context) if table is None
              else local_index(table, arrays.rows.numpy()))
    arrays.channels = Channels.of(windows, nb, context)
    return arrays


def place(arrays: SliceArrays, device: torch.device, fraction: float = 0.25) -> SliceArrays:
    """Move the arrays onto a CUDA device when they take under `fraction` of its free memory:
    batches are then gathered on the GPU with no host copy. Otherwise they stay on the host and
    each batch (a few MB of int16) is indexed there and copied over."""
    if device.type != "cuda":
        return arrays
    free, _ = torch.cuda.mem_get_info(device)
    return arrays.to(device) if arrays.nbytes() < fraction * free else arrays


# -- slice selection --------------------------------------------------------------------------------

def volume_rows(arrays: SliceArrays, volume_ids) -> torch.Tensor:
    """Positions (into `arrays`) of every slice of the named volumes, in store order."""
    index = {v["id"]: i for i, v in enumerate(arrays.volumes)}
    missing = [v for v in volume_ids if v not in index]
    if missing:
        raise IchbenchError(f"{arrays.path}: volumes {missing[:3]} of the split are not in the store "
                            "(was the split made for another store?)")
    wanted = torch.zeros(len(arrays.volumes), dtype=torch.bool)
    wanted[[index[v] for v in volume_ids]] = True
    return torch.nonzero(wanted[arrays.volume], as_tuple=False)[:, 0]


def pretrain_selection(labels: np.ndarray, holdout: int, seed: int,
                       validation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's pretraining set (§2.6): every ICH slice plus as many non-ICH slices, drawn from
    the slices whose `any` label is known; a store with no known labels uses all its slices.
    Held out for the validation loss: the store's own validation slices when its ingest chose
    them (`validation`, e.g. RSNA's 5,000), else `holdout` of the selection (at most a tenth).
    Returns (train_rows, holdout_rows), sorted store rows."""
    anyich = labels[:, 1]
    has_val = validation is not None and bool(validation.any())
    eligible = ~validation if has_val else np.ones(len(labels), bool)
    known = (anyich != UNKNOWN) & eligible
    rng = np.random.default_rng(seed)
    if known.any():
        ich = np.flatnonzero(known & (anyich == 1))
        non = np.flatnonzero(known & (anyich == 0))
        if len(ich) and len(non):
            non = rng.choice(non, size=min(len(ich), len(non)), replace=False)
        rows = np.concatenate([ich, non])
    else:
        rows = np.flatnonzero(eligible)
    rows = np.sort(rows)
    if has_val:
        return rows, np.flatnonzero(validation)
    n_hold = min(int(holdout), len(rows) // 10)
    perm = rng.permutation(len(rows))
    return np.sort(rows[perm[n_hold:]]), np.sort(rows[perm[:n_hold]])


# -- samplers ---------------------------------------------------------------------------------------

class EpochSampler:
    """Draws one epoch of index batches at a time from `pool(generator)`.

    With `steps_per_epoch` set, exactly that many batches are drawn, redrawing the pool as often as
    needed; otherwise one pass over the pool. `drop_last` drops a final short batch (pretexts want
    a fixed batch size); a last batch of one slice is always dropped (BatchNorm needs two).
    """

    def __init__(self, pool, batch_size: int, steps_per_epoch: int | None, generator: torch.Generator,
                 drop_last: bool = False):
        self.pool = pool
        self.batch_size = batch_size
        self.steps = steps_per_epoch
        self.generator = generator
        self.drop_last = drop_last

    def _batches_of(self, idx: torch.Tensor) -> list[torch.Tensor]:
        perm = idx[torch.randperm(len(idx), generator=self.generator)]
        out = list(perm.split(self.batch_size))
        if out and (len(out[-1]) < 2 or (self.drop_last and len(out[-1]) < self.batch_size and len(out) > 1)):
            out.pop()
        return out

    def epoch(self) -> list[torch.Tensor]:
        if self.steps is None:
            batches = self._batches_of(self.pool(self.generator))
        else:
            batches = []
            while len(batches) < self.steps:
                more = self._batches_of(self.pool(self.generator))
                if not more:
                    break
                batches += more
            batches = batches[: self.steps]
        if not batches:
            raise IchbenchError("no training batch could be drawn (fewer than 2 training slices)")
        return batches


def finetune_pool(arrays: SliceArrays, train_rows: torch.Tensor, sampling: str, nonich_ratio: float,
                  negatives: str = "per_epoch", seed: int = 0, fold: int = 0):
    """The pool function of fine-tuning: "mixed" (§2.5.3) takes every ICH slice of the training
    volumes plus `nonich_ratio` times as many non-ICH slices; "ich_only" takes the ICH slices alone.

    Mixed's non-ICH slices (`finetune.negatives`): "per_fold" draws them once (`fold_negatives`),
    from (`seed`, `fold`) alone, so the same fold of the same split trains on the same ones in
    every epoch, run and machine, and another fold or seed draws others (the authors' scripts draw
    them once per fold); "per_epoch" redraws them from the sampler's generator every epoch."""
    if arrays.masks is None:
        raise IchbenchError(f"{arrays.path}: store has no hemorrhage masks; fine-tuning needs a segmentation store")
    has_ich = arrays.masks[train_rows].flatten(1).bool().any(1)
    ich, non = train_rows[has_ich], train_rows[~has_ich]
    if len(ich) == 0:
        raise IchbenchError(f"{arrays.path}: the training volumes of this fold contain no hemorrhage")
    if sampling == "ich_only":
        return lambda g: ich
    if sampling != "mixed":
        raise IchbenchError(f"unknown sampling {sampling!r}; known: mixed, ich_only")
    n_non = min(len(non), int(round(nonich_ratio * len(ich))))
    if negatives == "per_fold":
        fixed = torch.cat([ich, non[torch.from_numpy(fold_negatives(len(non), n_non, seed, fold))]])
        return lambda g: fixed
    if negatives != "per_epoch":
        raise IchbenchError(f"unknown negatives {negatives!r}; known: per_fold, per_epoch")

    def pool(g: torch.Generator) -> torch.Tensor:
        return torch.cat([ich, non[torch.randperm(len(non), generator=g)[:n_non]]])
    return pool


def fold_negatives(n_candidates: int, n: int, seed: int, fold: int) -> np.ndarray:
    """`n` of `n_candidates` positions, drawn once for a fold: the candidates ranked by the raw
    PCG64 stream of the SeedSequence (seed, fold). Integer arithmetic only, and numpy keeps a named
    bit generator's raw stream and SeedSequence as they are (its random compatibility policy;
    distributions such as `permutation` may change), so a fold's draw is the same on every machine
    and numpy version. Sorted."""
    keys = np.random.PCG64(np.random.SeedSequence([int(seed), int(fold)])).random_raw(n_candidates)
    return np.sort(np.argsort(keys, kind="stable")[:n])
