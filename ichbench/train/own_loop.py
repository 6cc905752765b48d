"""Fine-tuning by a method's own loop (plugin API 2): the method trains, the engine scores.

`finetune_own` is what `engine.finetune` runs for a method that overrides `finetune_fold`. It
makes the same checks and the same training set as the shared recipe (store, fold, split,
labeled fraction), hands the method a `Fold`, checks the predictions it returns, and scores
them with the very code the shared recipe is scored with (`per_volume_row` on the store's masks
at `finetune.image_size`, spacing scaled to that grid). The result dict has the shared recipe's
keys, so the driver, MLflow, the results table and `ichbench leaderboard submit` take it as is.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.evaluate import per_volume_row, summarize
from ichbench.evaluate.digest import fold_digest, volume_digest
from ichbench.methods.fold import Fold, FoldOutput
from ichbench.train import checkpoint as ckpt
from ichbench.train.data import load_store, volume_rows
from ichbench.train.device import numerics


def build_fold(m, store_path: Path, split: dict, fold: int, cfg, out_dir: Path,
               pretrained: Path | None, device: torch.device, on_epoch=None) -> Fold:
    """The `Fold` a method's `finetune_fold` gets: the checks and the training set of the shared
    recipe (store, fold, split, labeled fraction), the arrays at `finetune.image_size`."""
    from ichbench.splits import labeled_subset, train_ids
    from ichbench.store import open_store
    from ichbench.train.label_needs import check_finetuning_store

    fc = cfg.finetune
    store = open_store(store_path)
    check_finetuning_store(m, store)
    if m.icm:
        raise IchbenchError(f"{m.name}: a method with its own fine-tuning cannot also ask for the "
                            "intracranial cavity mask (icm = True); apply it in finetune_fold")
    if not 0 <= fold < len(split["folds"]):
        raise IchbenchError(f"fold {fold} out of range: the split has {len(split['folds'])} folds "
                            f"(0..{len(split['folds']) - 1})")
    if split.get("store_fingerprint") not in (None, store.fingerprint):
        raise IchbenchError(f"{store_path}: the split was made for another version of this store "
                            "(fingerprints differ); make the split again")
    has_ich = {v["id"]: bool(v.get("has_ich")) for v in store.volumes}
    train = labeled_subset(train_ids(split, fold), has_ich, fc.labeled_fraction, seed=fold)
    arrays = load_store(store_path, fc.image_size, names=("images", "labels", "volume", "masks"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Fold(index=fold, k=len(split["folds"]), train_ids=train,
                test_ids=list(split["folds"][fold]["test"]), cfg=cfg, work_dir=out_dir,
                device=device.type, image_size=fc.image_size, split=split,
                store_fingerprint=store.fingerprint, store_path=store.path,
                store_size=int(store.attrs["settings"]["size"]),
                pretrained=Path(pretrained) if pretrained else None, _arrays=arrays,
                _on_epoch=on_epoch, _rows_of=lambda ids: volume_rows(arrays, ids))


def finetune_own(m, store_path: Path, split: dict, fold: int, cfg, out_dir: Path,
                 pretrained: Path | None, device: torch.device, on_epoch=None) -> dict:
    """Fine-tune fold `fold` by `m.finetune_fold` and score its predictions; writes and returns
    result.json as `engine.finetune` does."""
    from ichbench.train.engine import write_json_atomic

    if m.has_pretext and pretrained is None:
        raise IchbenchError(f"{m.name} fine-tunes from its pretraining: "
                            "pass a pretrained checkpoint")
    task = build_fold(m, store_path, split, fold, cfg, out_dir, pretrained, device, on_epoch)
    fc, arrays, test_ids, train = cfg.finetune, task._arrays, task.test_ids, task.train_ids
    t0 = time.perf_counter()
    output = m.finetune_fold(task)
    train_seconds = time.perf_counter() - t0
    if not isinstance(output, FoldOutput):
        raise IchbenchError(f"{m.name}.finetune_fold returned {type(output).__name__}, "
                            "expected an ichbench.api.FoldOutput")
    rows = score_predictions(m.name, arrays, test_ids, output.predictions,
                             task.store_size / fc.image_size)
    model = None
    if output.model is not None:
        path = Path(output.model)
        if not path.is_file():
            raise IchbenchError(f"{path}: {m.name}.finetune_fold names this model file, "
                                "but it does not exist")
        model = {"path": str(path), "sha256": ckpt.sha256_file(path)}
    identity = cfg.finetune_hash(None) + f":fold{fold}:{split.get('hash')}"
    result = {
        "method": m.name, "dataset": cfg.dataset, "profile": cfg.profile, "fold": fold,
        "k": len(split["folds"]), "split_hash": split.get("hash"), "store": str(store_path),
        "store_fingerprint": task.store_fingerprint, "train_volumes": train,
        "n_labeled_volumes": len(train), "test_volumes": test_ids,
        "n_train_slices": int(len(volume_rows(arrays, train))), "icm": None,
        "pretrained": {"path": str(pretrained)} if pretrained else None,
        "model": model, "config": cfg.to_dict(), "finetune_hash": identity.split(":")[0],
        "predictions_sha256": fold_digest(rows),   # entries carry it: ichbench.evaluate.digest
        "history": list(output.history), "volumes": rows, "summary": summarize(rows),
        "device": str(device), "train_seconds": round(train_seconds, 3),
        "own_finetuning": True, "method_info": dict(output.info),
        "ichbench_version": __version__, "torch_version": torch.__version__, **numerics(device),
    }
    write_json_atomic(result, task.work_dir / "result.json")
    return result


def score_predictions(method: str, arrays, test_ids: list[str], predictions: dict,
                      spacing_scale: float) -> list[dict]:
    """Per-volume rows for `predictions` (id -> mask), as `train.predict.evaluate_volumes` makes
    them for the shared recipe: the store's masks on the same grid, the same spacing."""
    missing = [v for v in test_ids if v not in predictions]
    extra = sorted(set(predictions) - set(test_ids))
    if missing or extra:
        what = (f"no prediction for test volumes {missing[:3]}" if missing
                else f"predictions for volumes outside the fold's test set {extra[:3]}")
        raise IchbenchError(f"{method}.finetune_fold: {what}")
    index = {v["id"]: v for v in arrays.volumes}
    out = []
    for vid in test_ids:
        rows = volume_rows(arrays, [vid])
        truth = arrays.masks[rows].numpy().astype(bool)
        pred = np.asarray(predictions[vid])
        if pred.shape != truth.shape:
            raise IchbenchError(f"{method}.finetune_fold: prediction for {vid} has shape "
                                f"{pred.shape}, the volume is {truth.shape} on the fold's grid")
        if pred.dtype != bool:
            if pred.size and not np.isin(pred, (0, 1)).all():
                raise IchbenchError(f"{method}.finetune_fold: prediction for {vid} is not a "
                                    f"binary mask (values outside 0/1, dtype {pred.dtype})")
            pred = pred.astype(bool)
        vol = index[vid]
        z, y, x = vol["spacing"]
        row = per_volume_row(vid, pred, truth, (z, y * spacing_scale, x * spacing_scale),
                             vol.get("subtypes"), has_ich=vol.get("has_ich"))
        out.append({**row, "pred_sha256": volume_digest(pred)})   # as the shared recipe's rows
    return out
