"""`ichbench tune`: Ray Tune over fine-tuning hyperparameters.

One Tune trial per hyperparameter sample: it fine-tunes the sample on every fold in turn and
reports the running mean volume Dice after each fold (`folds_done` is its time axis), so a
scheduler such as ASHA can stop a poor sample after its first folds, and a searcher such as
Optuna proposes the next sample from the finished ones. The search space is Tune's own
(`tune.loguniform`, ...), written on the command line as `key=loguniform(a,b)`. The fold
arrays travel once through `tune.with_parameters`. Only the driver writes to MLflow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichbench.config import split_assignment
from ichbench.errors import IchbenchError
from ichbench.files import sha256_json

SEARCHERS = ("random", "optuna")
SCHEDULERS = ("fifo", "asha")

# lr, α (empty-slice weight) and batch size by default; epochs only when asked (it sets the cost).
DEFAULT_SPACE = {"finetune.lr": "loguniform(1e-4,3e-3)", "finetune.empty_weight": "uniform(0.05,1.0)",
                 "finetune.batch_size": "choice(8,16,32)"}
_DIST = re.compile(r"^\s*(uniform|loguniform|randint|choice)\s*\((.*)\)\s*$")


@dataclass
class Dist:
    kind: str
    args: list

    def sample(self, rng: np.random.Generator):
        a = self.args
        if self.kind == "uniform":
            return float(rng.uniform(a[0], a[1]))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
        if self.kind == "randint":
            return int(rng.integers(int(a[0]), int(a[1]) + 1))
        return a[int(rng.integers(len(a)))]

    def domain(self):
        """The same distribution as a Ray Tune search domain (randint's upper bound inclusive)."""
        from ray import tune
        a = self.args
        if self.kind == "uniform":
            return tune.uniform(a[0], a[1])
        if self.kind == "loguniform":
            return tune.loguniform(a[0], a[1])
        if self.kind == "randint":
            return tune.randint(int(a[0]), int(a[1]) + 1)
        return tune.choice(list(a))


def parse_dist(key: str, text: str) -> Dist:
    m = _DIST.match(text)
    if not m:
        raise IchbenchError(f"--space {key}={text}: expected uniform(a,b), loguniform(a,b), randint(a,b) "
                            "or choice(x,y,...)")
    kind, body = m.group(1), [s.strip() for s in m.group(2).split(",") if s.strip()]
    try:
        vals = [int(s) if re.fullmatch(r"-?\d+", s) else float(s) for s in body]
    except ValueError:
        raise IchbenchError(f"--space {key}={text}: values must be numbers") from None
    if kind != "choice" and (len(vals) != 2 or vals[0] >= vals[1] or (kind == "loguniform" and vals[0] <= 0)):
        raise IchbenchError(f"--space {key}={text}: {kind} needs two increasing bounds (positive for loguniform)")
    if kind == "choice" and not vals:
        raise IchbenchError(f"--space {key}={text}: choice needs at least one value")
    return Dist(kind, vals)


def parse_space(items: list[str]) -> dict[str, Dist]:
    space = {k: parse_dist(k, v) for k, v in DEFAULT_SPACE.items()} if not items else {}
    for item in items:
        k, v = split_assignment(item, "--space", "distribution")
        space[k] = parse_dist(k, v)
    return space


def overrides_for(sample: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(sample.items())]


def _trial(config: dict, ctx: dict) -> None:
    """One sample on every fold, in a Ray Tune worker; reports the running mean after each fold."""
    import ray
    from ray import tune

    from ichbench.resolve import resolve
    from ichbench.store.location import parse
    from ichbench.train.engine import finetune
    sample = {k: config[k] for k in ctx["keys"]}
    cfg = resolve(ctx["method"], ctx["dataset"], ctx["profile"], ctx["overrides"] + overrides_for(sample),
                  ctx["pretrain_dataset"])
    out = Path(ctx["out"]) / f"sample-{sha256_json(sample)[:12]}"   # a rerun reuses finished folds
    fold_dice: dict[int, float] = {}
    for fold in ctx["folds"]:
        res = finetune(ctx["method_obj"], parse(ctx["store"]), ctx["split"], fold, cfg, out / f"fold_{fold}",
                       pretrained=Path(ctx["pretrained"]) if ctx["pretrained"] else None,
                       device="cuda" if ray.get_gpu_ids() else "cpu", progress=False)
        fold_dice[fold] = res["summary"]["all"]["dice"]["mean"]
        tune.report({"dice": float(np.mean(list(fold_dice.values()))), "folds_done": len(fold_dice),
                     **{f"dice_fold_{f}": d for f, d in fold_dice.items()}})


def _search_alg(name: str, space: dict[str, Dist], seed: int):
    if name == "random":
        from ray.tune.search import BasicVariantGenerator
        return BasicVariantGenerator(random_state=seed)
    if name == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise IchbenchError("--search optuna needs Optuna: pip install optuna") from None
        return OptunaSearch(seed=seed)
    raise IchbenchError(f"--search {name}: unknown searcher; known: {', '.join(SEARCHERS)}")


def _scheduler(name: str, n_folds: int):
    if name == "fifo":
        return None
    if name == "asha":   # rungs after 1, 2, 4, ... folds; every surviving sample sees all folds
        from ray.tune.schedulers import ASHAScheduler
        return ASHAScheduler(time_attr="folds_done", max_t=n_folds, grace_period=1, reduction_factor=2)
    raise IchbenchError(f"--scheduler {name}: unknown scheduler; known: {', '.join(SCHEDULERS)}")


def _pretrain_once(plan, driver) -> str | None:
    """The method's pretraining (cached like `ichbench run`'s), shared by every sample."""
    if not plan.method.has_pretext:
        return None
    from ichbench.orchestrate.tasks import pretrain_task
    gpus = 1 if driver.resources.get("GPU", 0) >= 1 else 0
    board = driver._board()
    return driver._wait_one(pretrain_task.options(num_gpus=gpus, num_cpus=1).remote(
        plan.method, str(plan.pretrain_store.path), plan.cfg, str(plan.pretrain_dir), board),
        plan.method.name, board, {"pretraining": plan.cfg.pretrain.epochs})["checkpoint"]


def _fit(plan, driver, ctx: dict, *, num_samples: int, space: dict[str, Dist], seed: int, search: str,
         scheduler: str) -> list[dict]:
    from ray import tune
    gpf = driver.gpus_per_fold if driver.gpus_per_fold is not None else (
        min(1.0, driver.resources.get("GPU", 0) / max(1, num_samples)))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"cpu": 1, "gpu": gpf}),
        param_space={k: d.domain() for k, d in space.items()},
        tune_config=tune.TuneConfig(metric="dice", mode="max", num_samples=num_samples,
                                    search_alg=_search_alg(search, space, seed),
                                    scheduler=_scheduler(scheduler, len(plan.folds))),
        run_config=tune.RunConfig(name=f"{plan.method.name}-{plan.cfg.dataset}",
                                  storage_path=str(Path(ctx["out"]).resolve() / "ray"), verbose=0))
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise IchbenchError(f"{len(errors)} tuning trial(s) failed; first: {errors[0]}")
    table = []
    for i, r in enumerate(sorted(grid, key=lambda r: r.metrics["trial_id"])):
        fold_dice = {f: r.metrics[f"dice_fold_{f}"] for f in plan.folds if f"dice_fold_{f}" in r.metrics}
        table.append({"sample": i, "params": {k: r.config[k] for k in space}, "fold_dice": fold_dice,
                      "mean_dice": float(np.mean(list(fold_dice.values()))),
                      "stopped_early": len(fold_dice) < len(plan.folds)})
    return table


def run_search(plan, tracker, driver, *, num_samples: int, space: dict[str, Dist], seed: int = 0,
               search: str = "random", scheduler: str = "fifo") -> dict:
    """Returns {"best": params, "best_dice": x, "samples": [{"params", "fold_dice", "mean_dice",
    "stopped_early"}], "run_id"}. The best is the best mean over samples scored on every fold."""
    from ichbench.resolve import resolve
    from ichbench.tracking import records
    from ichbench.tracking.mlflow_store import TAG

    # everything that can be refused is refused before a run is opened: names, and the space's
    # keys and value types (one drawn value per key resolved into a config)
    _search_alg(search, space, seed)
    _scheduler(scheduler, len(plan.folds))
    probe = {k: d.sample(np.random.default_rng(seed)) for k, d in space.items()}
    resolve(plan.method, plan.cfg.dataset, plan.cfg.profile, plan.overrides + overrides_for(probe),
            plan.cfg.pretrain_dataset)
    exp = tracker.experiment(plan.cfg.dataset)
    tags = {**records.base_tags(plan, _owner(plan), driver.resources), f"{TAG}kind": "tune"}
    parent = tracker.start_run(exp, f"tune {plan.method.name}/{plan.cfg.dataset}", tags).info.run_id
    tracker.params(parent, {"num_samples": num_samples, "seed": seed, "folds": plan.folds, "search": search,
                            "scheduler": scheduler, "space": {k: f"{d.kind}{tuple(d.args)}" for k, d in space.items()}})
    try:
        ctx = {"method": plan.method.name, "method_obj": plan.method, "dataset": plan.cfg.dataset,
               "profile": plan.cfg.profile, "pretrain_dataset": plan.cfg.pretrain_dataset, "overrides": plan.overrides,
               "keys": sorted(space), "folds": list(plan.folds), "store": str(plan.store.path), "split": plan.split,
               "pretrained": _pretrain_once(plan, driver),
               "out": str(plan.run_dir.parent / f"tune-{plan.run_key[:12]}")}
        table = _fit(plan, driver, ctx, num_samples=num_samples, space=space, seed=seed, search=search,
                     scheduler=scheduler)
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    for row in table:
        child = tracker.start_run(exp, f"tune sample {row['sample']}", {**tags, f"{TAG}kind": "tune_sample"},
                                  parent).info.run_id
        tracker.params(child, row["params"])
        tracker.metrics(child, {"mean_dice": row["mean_dice"], "folds_scored": len(row["fold_dice"]),
                                **{f"dice_fold_{f}": d for f, d in row["fold_dice"].items()}})
        tracker.end(child)
    complete = [t for t in table if not t["stopped_early"]] or table
    best = max(complete, key=lambda t: t["mean_dice"])
    tracker.metrics(parent, {"best_mean_dice": best["mean_dice"]})
    tracker.params(parent, {f"best.{k}": v for k, v in best["params"].items()})
    tracker.json_artifact(parent, table, "samples.json")
    tracker.end(parent)
    return {"best": best["params"], "best_dice": best["mean_dice"], "samples": table, "run_id": parent}


def _owner(plan):
    from ichbench.plugins import get_registry
    return get_registry().owner("methods", plan.method.name)
