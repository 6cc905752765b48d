"""What a method that runs its own fine-tuning (plugin API 2, `Method.finetune_fold`) is handed
for one fold, and what it hands back.

`Fold` gives the fold's volumes as arrays on the grid ichbench scores on (`image_size`, the
`finetune.image_size` of the config), with the spacing of that grid: the training volumes with
their hemorrhage masks, the test volumes without (a method never sees what it is scored
against). `FoldOutput` carries one binary mask per test volume back to the engine, which scores
it exactly as it scores the shared recipe's predictions (`ichbench.train.own_loop`).

This module imports neither torch nor zarr; the engine reads the arrays before it calls the
method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ichbench.errors import IchbenchError


@dataclass(frozen=True)
class FoldVolume:
    """One volume of a fold, on the grid ichbench scores on."""
    id: str
    hu: Any                        # (S, H, W) int16 numpy array, Hounsfield units
    spacing: tuple[float, float, float]   # (z, y, x) mm of these voxels
    mask: Any | None               # (S, H, W) bool hemorrhage mask; None for a test volume
    subtypes: list[str] | None     # the volume's subtypes, None when unknown
    has_ich: bool | None           # hemorrhage in the native mask (None for a test volume)


@dataclass
class FoldOutput:
    """What `finetune_fold` returns.

    predictions: test volume id -> (S, H, W) bool (or 0/1) mask on the fold's grid, one per
                 test volume, shaped like that volume's `hu`
    history:     one dict per epoch, {"epoch": 1-based int, "loss": float, "lr": float} and any
                 other numbers ("val_loss" is logged as a curve too); empty when not known
    model:       the file holding the trained model, if any (recorded with its sha256)
    info:        JSON-able facts about the fold's training (framework versions, plans, seconds),
                 saved in result.json under "method_info"
    """
    predictions: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    model: Path | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Fold:
    """One fold of a run, as a method that fine-tunes by itself sees it.

    index, k        the fold (0-based) and the number of folds of the canonical split
    train_ids       the volumes whose masks the method may train on (the fold's training set,
                    reduced to `finetune.labeled_fraction` of it in label-efficiency runs)
    test_ids        the fold's test volumes, in the split's order: predict every one
    cfg             the resolved RunConfig (`cfg.finetune.params` holds the method's settings)
    work_dir        the fold's folder under the run's directory; write anything there
    device          "cpu" or "cuda": what the fold's worker was given
    image_size      the grid side length volumes come on and predictions are scored on
    store_path, store_size   the segmentation store and the side length of its slices
    pretrained      the pretraining checkpoint of a method with a pretext, else None
    split           the run's canonical split: {"k", "seed", "folds": [{"fold", "test"}], "hash"}
    store_fingerprint   the identity of the store's content
    """
    index: int
    k: int
    train_ids: list[str]
    test_ids: list[str]
    cfg: Any
    work_dir: Path
    device: str
    image_size: int
    split: dict
    store_fingerprint: str
    store_path: Path   # or an `ObjectPath` when stores live at a URL: open it with `open_store`
    store_size: int
    pretrained: Path | None = None
    _arrays: Any = field(default=None, repr=False)     # the engine's SliceArrays at image_size
    _on_epoch: Callable | None = field(default=None, repr=False)
    _rows_of: Callable | None = field(default=None, repr=False)   # volume ids -> rows of _arrays

    @property
    def split_hash(self) -> str | None:
        return self.split.get("hash")

    def volumes(self, ids=None) -> Iterator[FoldVolume]:
        """The named volumes of this fold (default: the training volumes, then the test ones),
        in the order given. Training volumes come with their masks, test volumes without."""
        arrays = self._arrays
        ids = list(self.train_ids) + list(self.test_ids) if ids is None else list(ids)
        train, test = set(self.train_ids), set(self.test_ids)
        outside = [v for v in ids if v not in train and v not in test]
        if outside:
            raise IchbenchError(f"{self.store_path}: volumes {outside[:3]} are not in fold "
                                f"{self.index} (neither its training nor its test volumes)")
        index = {v["id"]: v for v in arrays.volumes}
        scale = self.store_size / self.image_size   # the store's spacing is for its own grid
        for vid in ids:
            rows = self._rows_of([vid])
            meta = index[vid]
            z, y, x = (float(s) for s in meta["spacing"])
            is_train = vid in train
            yield FoldVolume(
                id=vid, hu=arrays.images[rows].numpy(), spacing=(z, y * scale, x * scale),
                mask=arrays.masks[rows].numpy().astype(bool) if is_train else None,
                subtypes=meta.get("subtypes"),
                has_ich=bool(meta.get("has_ich")) if is_train else None)

    def report_epoch(self, epoch: int, history: list[dict]) -> None:
        """Tell the run's progress display that `epoch` (1-based) finished; optional."""
        if self._on_epoch is not None:
            self._on_epoch(epoch, history)

