"""What a method that runs its own fine-tuning (plugin API 2, `Method.finetune_fold`) is handed
for one fold, and what it hands back.

`Fold` is a test-blind view of the fold: its volumes as arrays on the grid ichbench scores on
(`image_size`, the `finetune.image_size` of the config), with the spacing of that grid. Training
volumes carry their hemorrhage masks, subtypes and ICH flag (and in a subtypes fold, `classes`,
their class maps); test volumes carry their images and spacing only. Nothing a `Fold` holds,
public or private, leads to what the test volumes are scored against: no masks, labels, subtypes,
flags or counts of them, no store object and no path to a store (docs/plugins.md, "What a method
can see"). `FoldOutput` carries one binary mask (or label map) per test volume back to the engine,
which scores it against the truth it kept to itself (`ichbench.train.own_loop`).

This module imports neither torch nor zarr.
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
    subtypes: list[str] | None     # the volume's subtypes; None when unknown and for a test volume
    has_ich: bool | None           # hemorrhage in the native mask; None for a test volume
    # (S, H, W) uint8 class ids (0 background, k = Fold.classes[k-1]) of a training volume in a
    # subtypes fold; None in a binary fold and for a test volume
    classes: Any | None = None


@dataclass
class FoldOutput:
    """What `finetune_fold` returns.

    predictions: test volume id -> (S, H, W) bool (or 0/1) mask on the fold's grid, one per
                 test volume, shaped like that volume's `hu`; in a subtypes fold (`Fold.classes`)
                 a label map of class ids 0..C instead
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


def blind_split(split: dict) -> dict:
    """The split as a method may see it: which volumes each fold tests, and the split's identity;
    not the per-fold ICH counts the canonical split file records."""
    return {"dataset": split.get("dataset"), "k": split["k"], "seed": split.get("seed"),
            "folds": [{"fold": f["fold"], "test": list(f["test"])} for f in split["folds"]],
            "hash": split.get("hash"), "store_fingerprint": split.get("store_fingerprint")}


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
    store_size      the side length of the segmentation store's slices
    pretrained      the pretraining checkpoint of a method with a pretext, else None
    split           the run's canonical split as `blind_split` gives it:
                    {"dataset", "k", "seed", "folds": [{"fold", "test"}], "hash", "store_fingerprint"}
    store_fingerprint   the identity of the store's content
    classes         the subtypes task's class names (ids 1..C, `finetune.task=subtypes`); None: binary
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
    store_size: int
    pretrained: Path | None = None
    classes: list[str] | None = None
    _volumes: dict[str, FoldVolume] = field(default_factory=dict, repr=False)   # train + test, blind
    _on_epoch: Callable | None = field(default=None, repr=False)

    @property
    def split_hash(self) -> str | None:
        return self.split.get("hash")

    @property
    def store_path(self):
        """Withdrawn: the segmentation store holds the masks of the test volumes."""
        raise IchbenchError("Fold.store_path was withdrawn (the segmentation store holds the test volumes' "
                            "masks): read the fold's volumes with fold.volumes(ids)")

    def volumes(self, ids=None) -> Iterator[FoldVolume]:
        """The named volumes of this fold (default: the training volumes, then the test ones),
        in the order given. Training volumes come with their masks, test volumes without."""
        ids = list(self.train_ids) + list(self.test_ids) if ids is None else list(ids)
        outside = [v for v in ids if v not in self._volumes]
        if outside:
            raise IchbenchError(f"volumes {outside[:3]} are not in fold {self.index} "
                                "(neither its training nor its test volumes)")
        for vid in ids:
            yield self._volumes[vid]

    def report_epoch(self, epoch: int, history: list[dict]) -> None:
        """Tell the run's progress display that `epoch` (1-based) finished; optional."""
        if self._on_epoch is not None:
            self._on_epoch(epoch, history)
