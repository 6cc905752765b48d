"""The "predicts nothing" reference row: what an empty prediction scores on a dataset.

With ε = 1 an empty prediction scores 1 on every volume without ICH, so a model that predicts
nothing has an all-volume Dice equal to the dataset's healthy fraction (issue 22, "Show the
floor"): 24 of the phantom's 60 volumes, 0.40; 39 of Hssayeni's 75, 0.52. Each dataset's table
shows it, computed from canonical.json's volume and ICH-volume counts, so a reader sees how far
above doing nothing each method is. It is a reference, never ranked among the methods.

Per volume (docs/score.md's empty-case rule): a volume without ICH has both masks empty: Dice,
precision, recall and NSD 1, HD = HD95 = 0, |RVD| 0. A volume with ICH of n voxels: precision 1,
Dice and recall 1/(n + 1), HD = HD95 = inf, NSD 0, |RVD| 1. canonical.json records no voxel
counts, so 1/(n + 1) is taken as 0: Dice and recall are understated by the mean of 1/(n + 1) over
the group (`understatement`; from the entries' own counts, tp + fn, where a dataset has any).
The results table `ichbench run` prints ends with the same reference, exact there: computed from
the run's own volumes (`empty_prediction`).
"""

from __future__ import annotations

import math

from ichbench.evaluate.metrics import ratios
from ichbench.evaluate.summary import metric_stats, summarize
from ichbench.leaderboard.schema import GROUPS, METRICS

LABEL = "Predicts nothing (reference)"


def _mean_std(values: list[float]) -> dict:
    stats = metric_stats(values)
    return {"mean": stats["mean"], "std": stats["std"]}


def per_volume(n_volumes: int, n_ich: int) -> list[dict]:
    """The per-volume metrics of an empty prediction: n_volumes - n_ich healthy volumes, then n_ich
    with ICH (1/(n + 1) taken as 0)."""
    # the paper's ratios with its ε (eqs. 1-3): (0 + ε)/(0 + ε) on an empty truth, and on n
    # hemorrhage voxels precision ε/ε and Dice, recall ε/(n + ε), taken as 0
    healthy = {**ratios(0, 0, 0), "hd_mm": 0.0, "hd95_mm": 0.0, "nsd": 1.0, "abs_rvd": 0.0, "has_ich": False}
    ich = {"dice": 0.0, "precision": ratios(0, 0, 1)["precision"], "recall": 0.0, "hd_mm": math.inf,
           "hd95_mm": math.inf, "nsd": 0.0, "abs_rvd": 1.0, "has_ich": True}
    return [healthy] * (n_volumes - n_ich) + [ich] * n_ich


def floor(n_volumes: int | None, n_ich: int | None) -> dict | None:
    """{"groups": {group: {"n", metric: {"mean", "std"}}}, "surface": {group: {key: metric_stats}}}
    as fractions and mm, or None when canonical.json does not give both counts."""
    if not n_volumes or n_ich is None:
        return None
    rows = per_volume(n_volumes, n_ich)
    groups, surface = {}, {}
    for g in GROUPS:
        chosen = [r for r in rows if g == "all" or r["has_ich"]]
        groups[g] = {"n": len(chosen), **{m: _mean_std([r[m] for r in chosen]) for m in METRICS}}
        surface[g] = {k: metric_stats([r[k] for r in chosen]) for k in ("hd_mm", "hd95_mm", "nsd", "abs_rvd")}
    return {"groups": groups, "surface": surface}


def understatement(true_voxels: list[int], n_volumes: int) -> dict:
    """How much Dice and recall the floor understates by taking 1/(n + 1) as 0, given the hemorrhage
    voxel counts n of the ICH volumes (an entry's tp + fn): {"all", "ich"} as fractions."""
    missed = sum(1.0 / (n + 1) for n in true_voxels)
    return {"all": missed / n_volumes if n_volumes else 0.0,
            "ich": missed / len(true_voxels) if true_voxels else 0.0}


def empty_prediction(rows: list[dict]) -> dict:
    """The summary (`evaluate.summarize`) an empty prediction would get on a run's own volumes:
    exact, from each row's hemorrhage voxels (tp + fn), for the results table `ichbench run` prints."""
    empty = []
    for r in rows:
        n = int(r["tp"]) + int(r["fn"])
        empty.append({"volume_id": r["volume_id"], **ratios(0, 0, n), "tp": 0, "fp": 0, "fn": n,
                      "has_ich": bool(r.get("has_ich", n > 0)), "subtypes": r.get("subtypes"),
                      "pred_ml": 0.0, "true_ml": float(r.get("true_ml", 0.0))})
    return summarize(empty)
