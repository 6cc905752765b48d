"""`ichbench tune`: Ray Tune over fine-tuning hyperparameters, folds as a grid dimension.

Hyperparameter samples are drawn up front (seeded), so every sample is scored on every fold
(Tune's own random sampling would draw new values for each grid point); the objective is each
sample's mean volume Dice over the folds. Only the driver writes to MLflow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichbench.config import split_assignment
from ichbench.errors import IchbenchError

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


def parse_dist(key: str, text: str) -> Dist:
    m = _DIST.match(text)
    if not m:
        raise IchbenchError(f"--space {key}={text}: expected uniform(a,b), loguniform(a,b), randint(a,b) or choice(x,y,...)")
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


def draw_samples(space: dict[str, Dist], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{k: d.sample(rng) for k, d in sorted(space.items())} for _ in range(n)]


def overrides_for(sample: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sample.items()]


def _trial(config: dict) -> dict:
    """One (sample, fold) trial, run by Ray Tune in a worker."""
    import ray

    from ichbench.resolve import resolve
    from ichbench.train.engine import finetune
    c = config["ctx"]
    cfg = resolve(c["method"], c["dataset"], c["profile"], c["overrides"] + overrides_for(c["samples"][config["sample"]]),
                  c["pretrain_dataset"])
    out = Path(c["out"]) / f"sample_{config['sample']}" / f"fold_{config['fold']}"
    res = finetune(c["method_obj"], Path(c["store"]), c["split"], config["fold"], cfg, out,
                   pretrained=Path(c["pretrained"]) if c["pretrained"] else None,
                   device="cuda" if ray.get_gpu_ids() else "cpu", progress=False)
    return {"dice": res["summary"]["all"]["dice"]["mean"], "dice_ich": res["summary"]["ich"]["dice"]["mean"]
            if res["summary"]["ich"]["n"] else float("nan")}


def run_search(plan, tracker, driver, *, num_samples: int, space: dict[str, Dist], seed: int = 0) -> dict:
    """Returns {"best": sample, "best_dice": x, "samples": [{"params", "fold_dice", "mean_dice"}]}."""
    from ray import tune

    from ichbench.tracking import records
    from ichbench.tracking.mlflow_store import TAG

    samples = draw_samples(space, num_samples, seed)
    for s in samples:  # every sample must resolve before anything runs
        from ichbench.resolve import resolve
        resolve(plan.method, plan.cfg.dataset, plan.cfg.profile, plan.overrides + overrides_for(s), plan.cfg.pretrain_dataset)
    exp = tracker.experiment(plan.cfg.dataset)
    tags = {**records.base_tags(plan, _owner(plan), driver.resources), f"{TAG}kind": "tune"}
    parent = tracker.start_run(exp, f"tune {plan.method.name}/{plan.cfg.dataset}", tags).info.run_id
    tracker.params(parent, {"num_samples": num_samples, "seed": seed, "folds": plan.folds,
                            "space": {k: f"{d.kind}{tuple(d.args)}" for k, d in space.items()}})
    try:
        pretrained = None
        if plan.method.has_pretext:
            from ichbench.orchestrate.tasks import pretrain_task
            gpus = 1 if driver.resources.get("GPU", 0) >= 1 else 0
            board = driver._board()
            pretrained = driver._wait_one(pretrain_task.options(num_gpus=gpus, num_cpus=1).remote(
                plan.method, str(plan.pretrain_store.path), plan.cfg, str(plan.pretrain_dir), board),
                plan.method.name, board, {"pretraining": plan.cfg.pretrain.epochs})["checkpoint"]
        ctx = {"method": plan.method.name, "method_obj": plan.method, "dataset": plan.cfg.dataset,
               "profile": plan.cfg.profile, "pretrain_dataset": plan.cfg.pretrain_dataset, "overrides": plan.overrides,
               "samples": samples, "store": str(plan.store.path), "split": plan.split, "pretrained": pretrained,
               "out": str(plan.run_dir.parent / f"tune-{plan.run_key[:12]}-s{seed}n{num_samples}")}
        gpf = driver.gpus_per_fold if driver.gpus_per_fold is not None else (
            min(1.0, driver.resources.get("GPU", 0) / max(1, len(plan.folds))))
        tuner = tune.Tuner(
            tune.with_resources(_trial, {"cpu": 1, "gpu": gpf}),
            param_space={"sample": tune.grid_search(list(range(num_samples))),
                         "fold": tune.grid_search(plan.folds), "ctx": ctx},
            tune_config=tune.TuneConfig(metric="dice", mode="max"),
            run_config=tune.RunConfig(name=f"{plan.method.name}-{plan.cfg.dataset}",
                                      storage_path=str(Path(ctx["out"]).resolve() / "ray"), verbose=0))
        grid = tuner.fit()
        errors = [r.error for r in grid if r.error is not None]
        if errors:
            raise IchbenchError(f"{len(errors)} tuning trial(s) failed; first: {errors[0]}")
        scores: dict[int, dict[int, float]] = {}
        for r in grid:
            scores.setdefault(r.config["sample"], {})[r.config["fold"]] = r.metrics["dice"]
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    table = []
    for i, s in enumerate(samples):
        fold_dice = scores[i]
        mean = float(np.mean(list(fold_dice.values())))
        table.append({"sample": i, "params": s, "fold_dice": fold_dice, "mean_dice": mean})
        child = tracker.start_run(exp, f"tune sample {i}", {**tags, f"{TAG}kind": "tune_sample"}, parent).info.run_id
        tracker.params(child, s)
        tracker.metrics(child, {"mean_dice": mean, **{f"dice_fold_{f}": d for f, d in fold_dice.items()}})
        tracker.end(child)
    best = max(table, key=lambda t: t["mean_dice"])
    tracker.metrics(parent, {"best_mean_dice": best["mean_dice"]})
    tracker.params(parent, {f"best.{k}": v for k, v in best["params"].items()})
    tracker.json_artifact(parent, table, "samples.json")
    tracker.end(parent)
    return {"best": best["params"], "best_dice": best["mean_dice"], "samples": table, "run_id": parent}


def _owner(plan):
    from ichbench.plugins import get_registry
    return get_registry().owner("methods", plan.method.name)
