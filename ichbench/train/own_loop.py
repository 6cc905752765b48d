"""Fine-tuning by a method's own loop (plugin API 2): the method trains, the engine scores.

`finetune_own` is what `engine.finetune` runs for a method that overrides `finetune_fold`. It
makes the same checks and the same training set as the shared recipe (`fold_setup`), hands the
method a test-blind `Fold` (`blind_fold`: the test volumes' images, nothing they are scored
against), checks the predictions it returns, and scores them with the very code the shared recipe
is scored with (`per_volume_row` on the store's masks at `finetune.image_size`, spacing scaled to
that grid). The truth stays in this module's locals: nothing the method is given refers to it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ichbench.errors import IchbenchError
from ichbench.methods.fold import Fold, FoldOutput, FoldVolume, blind_split
from ichbench.train import checkpoint as ckpt
from ichbench.train.data import SliceArrays, load_store, volume_rows
from ichbench.train.fold_setup import FoldSetup, fold_result, setup_fold, write_fold_result
from ichbench.evaluate.summary import NSD_MM
from ichbench.train.predict import scored_row


def _setup(m, store_path: Path, split: dict, fold: int, cfg, pretrained) -> FoldSetup:
    if m.icm:
        raise IchbenchError(f"{m.name}: a method with its own fine-tuning cannot also ask for the "
                            "intracranial cavity mask (icm = True); apply it in finetune_fold")
    return setup_fold(m, store_path, split, fold, cfg, pretrained)


def _fold_of(m, store_path: Path, split: dict, fold: int, cfg, out_dir: Path, pretrained,
             device: torch.device, on_epoch=None) -> tuple[FoldSetup, Fold]:
    setup = _setup(m, store_path, split, fold, cfg, pretrained)
    arrays = load_store(store_path, cfg.finetune.image_size, names=("images", "labels", "volume", "masks",
                                                                    *(("classes",) if setup.classes else ())))
    # the arrays (every mask of the store) go out of scope here: while the method runs, this
    # process holds no copy of the test volumes' truth
    return setup, blind_fold(setup, arrays, split, fold, cfg, out_dir, pretrained, device, on_epoch)


def blind_fold(setup: FoldSetup, arrays: SliceArrays, split: dict, fold: int, cfg, out_dir: Path,
               pretrained: Path | None, device: torch.device, on_epoch=None) -> Fold:
    """The `Fold` a method's `finetune_fold` gets. Every array in it is a fresh copy (never a view
    of, or a map onto, the store's arrays): a training volume's image and mask, a test volume's
    image alone; its test volumes carry no subtypes or ICH flag, its split no ICH counts. In a
    subtypes fold (`setup.classes`) a training volume also carries its class map."""
    image_size = cfg.finetune.image_size
    scale = setup.store_size / image_size   # the store's spacing is for its own grid
    meta = {v["id"]: v for v in arrays.volumes}
    volumes = {}
    for vid in [*setup.train_ids, *setup.test_ids]:
        rows = volume_rows(arrays, [vid])
        z, y, x = (float(s) for s in meta[vid]["spacing"])
        hu = np.array(arrays.images[rows].numpy(), dtype=np.int16)
        if vid in setup.test_ids:
            volumes[vid] = FoldVolume(id=vid, hu=hu, spacing=(z, y * scale, x * scale), mask=None,
                                      subtypes=None, has_ich=None)
        else:
            subtypes = meta[vid].get("subtypes")
            volumes[vid] = FoldVolume(id=vid, hu=hu, spacing=(z, y * scale, x * scale),
                                      mask=np.array(arrays.masks[rows].numpy(), dtype=bool),
                                      subtypes=None if subtypes is None else list(subtypes),
                                      has_ich=bool(meta[vid].get("has_ich")),
                                      classes=None if not setup.classes else
                                      np.array(arrays.classes[rows].numpy(), dtype=np.uint8))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Fold(index=fold, k=len(split["folds"]), train_ids=list(setup.train_ids),
                test_ids=list(setup.test_ids), cfg=cfg, work_dir=out_dir, device=device.type,
                image_size=image_size, split=blind_split(split),
                store_fingerprint=setup.store.fingerprint, store_size=setup.store_size,
                pretrained=Path(pretrained) if pretrained else None,
                classes=list(setup.classes) if setup.classes else None, _volumes=volumes,
                _on_epoch=on_epoch)


def build_fold(m, store_path: Path, split: dict, fold: int, cfg, out_dir: Path,
               pretrained: Path | None, device: torch.device, on_epoch=None) -> Fold:
    """The `Fold` that `finetune_own` would hand `m` (for `ichbench.api.fold_task`)."""
    return _fold_of(m, store_path, split, fold, cfg, out_dir, pretrained, device, on_epoch)[1]


def finetune_own(m, store_path: Path, split: dict, fold: int, cfg, out_dir: Path,
                 pretrained: Path | None, device: torch.device, on_epoch=None) -> dict:
    """Fine-tune fold `fold` by `m.finetune_fold` and score its predictions; writes and returns
    result.json as `engine.finetune` does."""
    setup, task = _fold_of(m, store_path, split, fold, cfg, out_dir, pretrained, device, on_epoch)
    t0 = time.perf_counter()
    output = m.finetune_fold(task)
    train_seconds = time.perf_counter() - t0
    if not isinstance(output, FoldOutput):
        raise IchbenchError(f"{m.name}.finetune_fold returned {type(output).__name__}, "
                            "expected an ichbench.api.FoldOutput")
    # the truth, read only now that the method is done
    arrays = load_store(store_path, cfg.finetune.image_size,
                        names=("labels", "volume", "masks", *(("classes",) if setup.classes else ())))
    rows = score_predictions(m.name, arrays, setup.test_ids, output.predictions,
                             setup.store_size / cfg.finetune.image_size, cfg.eval.nsd_mm, setup.classes)
    model = None
    if output.model is not None:
        path = Path(output.model)
        if not path.is_file():
            raise IchbenchError(f"{path}: {m.name}.finetune_fold names this model file, "
                                "but it does not exist")
        model = {"path": str(path), "sha256": ckpt.sha256_file(path)}
    identity = cfg.finetune_hash(None) + f":fold{fold}:{split.get('hash')}"
    result = fold_result(m, cfg, split, fold, setup, store_path, rows=rows,
                         n_train_slices=len(volume_rows(arrays, setup.train_ids)),
                         history=output.history, identity=identity, train_seconds=train_seconds,
                         device=device, pretrained={"path": str(pretrained)} if pretrained else None,
                         icm=None, model=model, own_finetuning=True, method_info=dict(output.info))
    write_fold_result(result, task.work_dir / "result.json")
    return result


def score_predictions(method: str, arrays, test_ids: list[str], predictions: dict,
                      spacing_scale: float, nsd_mm: float = NSD_MM, classes=None) -> list[dict]:
    """Per-volume rows for `predictions` (id -> mask), as `train.predict.evaluate_volumes` makes
    them for the shared recipe: the store's masks on the same grid, the same spacing. With
    `classes` (the subtypes task) a prediction is a label map of ids 0..len(classes), scored per
    class against the store's class map (`scored_row`)."""
    missing = [v for v in test_ids if v not in predictions]
    extra = sorted(set(predictions) - set(test_ids))
    if missing or extra:
        what = (f"no prediction for test volumes {missing[:3]}" if missing
                else f"predictions for volumes outside the fold's test set {extra[:3]}")
        raise IchbenchError(f"{method}.finetune_fold: {what}")
    out = []
    for vid in test_ids:
        truth_shape = (len(volume_rows(arrays, [vid])), *arrays.masks.shape[1:])
        pred = np.asarray(predictions[vid])
        if pred.shape != truth_shape:
            raise IchbenchError(f"{method}.finetune_fold: prediction for {vid} has shape "
                                f"{pred.shape}, the volume is {truth_shape} on the fold's grid")
        if classes:   # a label map: background 0 and the class ids 1..C
            if pred.size and not np.isin(pred, np.arange(len(classes) + 1)).all():
                raise IchbenchError(f"{method}.finetune_fold: prediction for {vid} is not a label map of ids "
                                    f"0..{len(classes)} ({', '.join(classes)}; dtype {pred.dtype})")
            pred = pred.astype(np.uint8)
        elif pred.dtype != bool:
            if pred.size and not np.isin(pred, (0, 1)).all():
                raise IchbenchError(f"{method}.finetune_fold: prediction for {vid} is not a "
                                    f"binary mask (values outside 0/1, dtype {pred.dtype})")
            pred = pred.astype(bool)
        out.append(scored_row(arrays, vid, pred, spacing_scale, nsd_mm, classes))
    return out
