"""External test sets of `ichbench run --test-on D2[,D3]`: every fold model of the run scores
every volume of D2's segmentation store, and so does the fold ensemble (`train.external`).

Planned before anything trains (`plan_tests`: a dataset that is the run's own or has no masks is
refused in one line; for a subtypes run so is one without a class map of the run's classes).
Scored after the folds on a Ray worker (a GPU when there is one), then cached: each fold keeps
its rows in `fold_<k>/external/<D2>.json` and the run its ensemble's in `external/<D2>.json`,
each keyed by D2's store fingerprint and the fold models' digests, so a rerun reuses them and a
new --test-on dataset scores from the saved fold models without retraining (the run key does
not include --test-on).

MLflow (the parent run): `test.<D2>.folds.<metric>` (the mean over fold models: each fold model
scores the same volumes, so the pooled mean over (fold, volume) is the mean of the folds' means),
`test.<D2>.ensemble.<metric>` (the fold ensemble), `test.<D2>.fold_dice_std` (std of the fold
models' mean Dice), with <metric> the names of `tracking.records.summary_metrics` — for a
subtypes run these include the per-class ones (`test.<D2>.ensemble.dice_class_<name>_present_mean`,
`..._macro_...`); the artifact `external/<D2>.json` holds the rows. The tag `ichbench.test_on`
lists the test datasets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ichbench.datasets.base import SEGMENTATION, get_dataset
from ichbench.errors import IchbenchError
from ichbench.evaluate import summarize
from ichbench.evaluate.infjson import decode, encode
from ichbench.files import write_json_atomic
from ichbench.train import checkpoint as ckpt

PREFIX = "test."


@dataclass
class TestSet:
    dataset: str
    store: object          # its segmentation SliceStore

    @property
    def fingerprint(self) -> str:
        return self.store.fingerprint


def parse_test_on(text: str | None) -> list[str]:
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    if text is not None and not names:
        raise IchbenchError(f"--test-on {text!r} names no dataset: give a name or a comma list")
    return list(dict.fromkeys(names))


def check_classes(name: str, cfg, store, test) -> None:
    """A subtypes run (`finetune.task=subtypes`) predicts its training store's class ids, so an
    external store must hold a class map of the same classes in the same id order; a binary run
    scores any segmentation store (its masks are the union of the classes)."""
    from ichbench.train.task import class_names
    want = class_names(cfg, store)
    if not want:
        return
    have = list(getattr(test, "class_names", None) or [])
    if not have:
        raise IchbenchError(f"--test-on {name}: the run segments the classes {','.join(want)} (finetune.task="
                            f"subtypes), but {test.path} has no class map to score them against")
    if have != want:
        raise IchbenchError(f"--test-on {name}: the run's classes are {','.join(want)} ({cfg.dataset}, ids 1..), "
                            f"{test.path} holds {','.join(have)}: the class ids do not match")


def plan_tests(home: Path, method, cfg, store, names: list[str]) -> list[TestSet]:
    """The external test sets of a run of `method` trained on `store`, each refused in one line
    when it cannot be scored by the run's models."""
    from ichbench.orchestrate.plan import open_role
    out = []
    for name in names:
        if name == cfg.dataset:
            raise IchbenchError(f"--test-on {name}: that is the dataset the run trains on; its cross-validation "
                                "is the run's own result (the matrix's diagonal)")
        if method.owns_finetuning:
            raise IchbenchError(f"--test-on {name}: {method.name} trains its own models (plugin API 2), which "
                                "ichbench cannot apply to another dataset")
        ds = get_dataset(name)
        if SEGMENTATION not in ds.roles:
            raise IchbenchError(f"--test-on {name}: dataset {name!r} has no segmentation store (its roles: "
                                f"{', '.join(ds.roles)}): an external test set needs hemorrhage masks")
        test = open_role(home, name, SEGMENTATION)
        if "masks" not in test.arrays:
            raise IchbenchError(f"--test-on {name}: {test.path} has no hemorrhage masks to score against")
        check_classes(name, cfg, store, test)
        out.append(TestSet(name, test))
    return out


# -- the cache -------------------------------------------------------------------------------------

def _read(path: Path) -> dict | None:
    try:
        return decode(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def fold_file(plan, fold: int, dataset: str) -> Path:
    return plan.fold_dir(fold) / "external" / f"{dataset}.json"


def ensemble_file(plan, dataset: str) -> Path:
    return plan.run_dir / "external" / f"{dataset}.json"


def model_digests(plan, results: list[dict]) -> dict[int, str]:
    """fold -> sha256 of the fold's model.pt (from its result, else from the file)."""
    out = {}
    for res in results:
        fold = int(res["fold"])
        sha = (res.get("model") or {}).get("sha256")
        path = plan.fold_dir(fold) / ckpt.MODEL_NAME
        if not path.exists():
            raise IchbenchError(f"{path}: fold {fold}'s model is missing, so it cannot score an external test set; "
                                f"remove {plan.fold_dir(fold) / 'result.json'} to retrain the fold")
        out[fold] = sha or ckpt.sha256_file(path)
    return out


def cached(plan, test: TestSet, digests: dict[int, str]) -> dict | None:
    """{"folds": {fold: rows}, "ensemble": rows} when every file is there for this store and these models."""
    ens = _read(ensemble_file(plan, test.dataset))
    if not ens or ens.get("store_fingerprint") != test.fingerprint or \
            ens.get("models") != {str(f): d for f, d in digests.items()}:
        return None
    folds = {}
    for fold, digest in digests.items():
        rec = _read(fold_file(plan, fold, test.dataset))
        if not rec or rec.get("store_fingerprint") != test.fingerprint or rec.get("model_sha256") != digest:
            return None
        folds[fold] = rec["rows"]
    return {"folds": folds, "ensemble": ens["rows"]}


def save(plan, test: TestSet, digests: dict[int, str], scored: dict) -> None:
    """The fold files first, the ensemble's last: its presence marks a complete set."""
    for fold, rows in scored["folds"].items():
        rec = {"dataset": test.dataset, "store_fingerprint": test.fingerprint, "model_sha256": digests[fold],
               "rows": rows}
        write_json_atomic(encode(rec), mkdir(fold_file(plan, fold, test.dataset)))
    write_json_atomic(encode({"dataset": test.dataset, "store_fingerprint": test.fingerprint,
                              "models": {str(f): d for f, d in digests.items()}, "rows": scored["ensemble"]}),
                      mkdir(ensemble_file(plan, test.dataset)))


def mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- results ---------------------------------------------------------------------------------------

def summaries(cfg, scored: dict) -> dict:
    """{"folds": pooled summary (mean over fold models), "ensemble": summary, "fold_dice": {fold: mean Dice}}."""
    # one row per (fold model, volume): every fold scores the same volumes, so the pooled mean is
    # the mean of the fold models' means (the std is over the pairs)
    pooled = [dict(r, volume_id=f"{r['volume_id']}@fold{f}") for f, rows in sorted(scored["folds"].items())
              for r in rows]
    per_fold = {f: summarize(rows, cfg.eval.nsd_mm)["all"]["dice"]["mean"] for f, rows in scored["folds"].items()}
    return {"folds": summarize(pooled, cfg.eval.nsd_mm, cfg.eval.hd_cap_mm),
            "ensemble": summarize(scored["ensemble"], cfg.eval.nsd_mm, cfg.eval.hd_cap_mm),
            "fold_dice": per_fold}


def metrics(dataset: str, summary: dict) -> dict[str, float]:
    """The parent run's MLflow metrics of one external test set (module docstring)."""
    import statistics

    from ichbench.tracking.records import summary_metrics
    out = {f"{PREFIX}{dataset}.{kind}.{k}": v for kind in ("folds", "ensemble")
           for k, v in summary_metrics(summary[kind]).items()}
    dice = list(summary["fold_dice"].values())
    if len(dice) > 1:
        out[f"{PREFIX}{dataset}.fold_dice_std"] = statistics.stdev(dice)
    return out


def from_metrics(metrics_: dict) -> dict[str, dict]:
    """A parent run's external results by test dataset, as `ichbench runs --json` shows them:
    {D2: {"folds": {dice_all, dice_ich, hd95_mm_all, nsd_all}, "ensemble": {...}, "fold_dice_std"}};
    a subtypes run's kinds add "classes" (`tracking.records.classes_from_metrics`)."""
    from ichbench.tracking.records import classes_from_metrics
    keys = {"dice_all": "dice_all_mean", "dice_ich": "dice_ich_mean", "hd95_mm_all": "hd95_mm_all_mean",
            "nsd_all": "nsd_all_mean", "n": "n_all"}
    out: dict[str, dict] = {}
    for name in metrics_:
        if name.startswith(PREFIX) and name.endswith(".ensemble.dice_all_mean"):
            ds = name[len(PREFIX):-len(".ensemble.dice_all_mean")]
            out[ds] = {kind: {k: metrics_.get(f"{PREFIX}{ds}.{kind}.{m}") for k, m in keys.items()}
                       for kind in ("folds", "ensemble")}
            out[ds]["fold_dice_std"] = metrics_.get(f"{PREFIX}{ds}.fold_dice_std")
            for kind in ("folds", "ensemble"):   # MLflow keeps every metric as a float
                n = out[ds][kind]["n"]
                out[ds][kind]["n"] = None if n is None else int(n)
                head = f"{PREFIX}{ds}.{kind}."
                classes = classes_from_metrics({k[len(head):]: v for k, v in metrics_.items() if k.startswith(head)})
                if classes:
                    out[ds][kind]["classes"] = classes
    return dict(sorted(out.items()))


# -- on the driver ---------------------------------------------------------------------------------

def score_all(driver, plan, results: list[dict], parent_id: str, icm=None) -> dict[str, dict]:
    """Score (or reuse) every test set of `plan.tests` with the run's fold models; log each to the
    parent run. Returns {D2: summaries(...)}, what the results table prints."""
    from ichbench.tracking.mlflow_store import TAG
    tests = getattr(plan, "tests", None) or []
    if not tests:
        return {}
    digests = model_digests(plan, results)
    out = {}
    for test in tests:
        scored = cached(plan, test, digests)
        if scored is None:
            scored = _score(driver, plan, test, icm)
            save(plan, test, digests, scored)
        else:
            driver_console().print(f"{plan.method.name}: external test set {test.dataset} already scored by "
                                   f"these fold models, reused", highlight=False, soft_wrap=True)
        out[test.dataset] = summaries(plan.cfg, scored)
        driver._changed_metrics(parent_id, metrics(test.dataset, out[test.dataset]))
        driver.tracker.json_artifact(parent_id, {"dataset": test.dataset, "store_fingerprint": test.fingerprint,
                                                 "folds": {str(f): r for f, r in scored["folds"].items()},
                                                 "ensemble": scored["ensemble"]}, f"external/{test.dataset}.json")
    driver.tracker.tags(parent_id, {f"{TAG}test_on": ",".join(out)})
    return out


def driver_console():
    from ichbench.orchestrate.driver import console
    return console


def _score(driver, plan, test: TestSet, icm) -> dict:
    import ray

    from ichbench.orchestrate.external_task import external_task
    from ichbench.orchestrate.progress import LiveBars
    gpus = 1 if driver.resources.get("GPU", 0) >= 1 else 0
    models = {f: str(plan.fold_dir(f) / ckpt.MODEL_NAME) for f in plan.folds}
    key = f"on {test.dataset}"
    board = driver._board()
    ref = external_task.options(num_gpus=gpus, num_cpus=1).remote(
        models, str(test.store.path), plan.cfg, str(icm) if icm else None, key, board)
    with LiveBars(board, plan.method.name) as live:
        live.show(key, 0, len(test.store.volumes), "starting")
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            live.refresh()
            if ready:
                break
    res = ray.get(ref)
    return {"folds": {int(f): rows for f, rows in res["folds"].items()}, "ensemble": res["ensemble"]}
