"""Entries over several seeds (`ichbench run --seeds`, issue 25 §2).

An entry of schema version 3 may carry `seeds`: the seeds' pretraining setting, one record per
seed (its seed, its MLflow parent run and its folds' digests; the first is the entry's own) and the
other seeds' per-volume rows, each with its `seed`. The entry's own `per_volume`, `summary` and
`folds` stay those of its first seed, so every check, digest and reproduction of a one-seed entry
holds for it unchanged (a reproduction re-runs that seed). Validation checks that every other seed
scored exactly the first seed's volumes in the same folds, with the same ground truth.

The page shows an entry's per-seed means as mean ± std over seeds (sample std), and the paired
tests between two methods compare each volume's mean over its seeds. A reproduction's tolerances
widen to the spread the entry measured between its own seeds (`widen`).
"""

from __future__ import annotations

import copy
import math

import numpy as np

MAX_SEEDS = 100
SEED_MAX = 2 ** 32 - 1       # config.fields.MAX_SEED
# a re-run is one more draw of the training noise: it may differ from the entry as its seeds
# differ from each other. Per volume 1.5x the largest range over seeds (as VOLUME_TOLERANCE is
# 1.5x the largest run-to-run change measured), the mean 2.5 standard deviations over seeds
VOLUME_FACTOR = 1.5
MEAN_FACTOR = 2.5


def schema(row_schema: dict, run_id: dict, fold: dict, surface_keys) -> dict:
    """The JSON Schema of `seeds`, from the entry schema's own parts (schema.py); its rows carry
    the surface metrics, as every row of a version 3 entry does."""
    seed = {"type": "integer", "minimum": 0, "maximum": SEED_MAX}
    row = copy.deepcopy(row_schema)
    row["required"] = [*row["required"], *surface_keys, "seed"]
    row["properties"]["seed"] = seed
    return {"type": "object", "additionalProperties": False, "required": ["pretrain", "runs", "per_volume"],
            "description": "ichbench run --seeds: every seed's run; per_volume holds the rows of the seeds after "
                           "the first (the entry's own rows are the first seed's)",
            "properties": {
                "pretrain": {"enum": ["shared", "per_seed"]},
                "runs": {"type": "array", "minItems": 2, "maxItems": MAX_SEEDS,
                         "items": {"type": "object", "additionalProperties": False,
                                   "required": ["seed", "mlflow_run_id", "folds"],
                                   "properties": {"seed": seed, "mlflow_run_id": run_id,
                                                  "folds": {"type": "array", "minItems": 1, "maxItems": 100,
                                                            "items": fold}}}},
                "per_volume": {"type": "array", "minItems": 1, "maxItems": 20_000 * (MAX_SEEDS - 1), "items": row}}}


def by_seed(entry: dict) -> dict[int, list[dict]]:
    """{seed: rows}: the entry's own rows under its first seed, then the others'; {} without seeds."""
    s = entry.get("seeds")
    if not s:
        return {}
    out = {int(r["seed"]): [] for r in s["runs"]}
    out[int(s["runs"][0]["seed"])] = list(entry["per_volume"])
    for r in s["per_volume"]:
        out.setdefault(int(r["seed"]), []).append(r)
    return out


def problems(entry: dict) -> list[str]:
    """Reasons to reject an entry's `seeds` (after the schema passed)."""
    s = entry.get("seeds")
    if not s:
        return []
    seeds = [int(r["seed"]) for r in s["runs"]]
    if len(set(seeds)) != len(seeds):
        return [f"seeds: a seed is listed twice ({seeds})"]
    first = seeds[0]
    stray = sorted({int(r["seed"]) for r in s["per_volume"]} - set(seeds[1:]))
    if stray:
        return [f"seeds: rows of seed {stray[0]}, which is not one of the seeds after the first ({seeds[1:]})"]
    own = {r["volume_id"]: r for r in entry["per_volume"]}
    own_folds = sorted(int(f["fold"]) for f in entry.get("folds") or [])
    out = []
    if s["runs"][0]["folds"] != entry.get("folds"):
        out.append(f"seeds: the first run (seed {first}) must be the run of the entry's own rows, with its folds")
    for seed, rows in by_seed(entry).items():
        if seed == first:
            continue
        where = f"seeds: seed {seed}"
        ids = [r["volume_id"] for r in rows]
        if len(set(ids)) != len(ids) or set(ids) != set(own):
            out.append(f"{where} did not score exactly the entry's volumes, each once")
            continue
        moved = sorted(v for v in ids if next(r for r in rows if r["volume_id"] == v)["fold"] != own[v]["fold"])
        if moved:
            out.append(f"{where}: volume {moved[0]} in another fold than in the entry's rows")
        truth = sorted(r["volume_id"] for r in rows if r["tp"] + r["fn"] != own[r["volume_id"]]["tp"]
                       + own[r["volume_id"]]["fn"] or r["true_ml"] != own[r["volume_id"]]["true_ml"])
        if truth:
            out.append(f"{where}: volume {truth[0]} has another ground truth (TP + FN or true mL) than in the "
                       "entry's rows")
        from ichbench.leaderboard.surface_checks import surface_problems
        out += [f"{where}: {p}" for p in surface_problems({**entry, "per_volume": rows})]
        run_folds = [int(f["fold"]) for f in next(r for r in s["runs"] if int(r["seed"]) == seed)["folds"]]
        if sorted(run_folds) != own_folds:
            out.append(f"{where}: folds {sorted(run_folds)}, but the entry's are {own_folds}")
    return out


def volume_means(entry: dict, values: dict) -> dict:
    """The page's per-volume values (metric -> {volume_id: percent}) as each volume's mean over the
    entry's seeds; `values` (the first seed's) unchanged without seeds."""
    from ichbench.leaderboard.entries import scored_rows
    seeds = by_seed(entry)
    if not seeds:
        return values
    acc: dict = {m: {} for m in values}
    for rows in seeds.values():
        for r in scored_rows(rows):
            for m in values:
                acc[m].setdefault(r["volume_id"], []).append(100.0 * r[m])
    return {m: {v: float(np.mean(x)) for v, x in per.items()} for m, per in acc.items()}


def over_seeds(entry: dict) -> dict | None:
    """{"n": seeds, "seeds", "pretrain", group: {metric: {"mean", "std"}}} in percent: the mean and
    sample std over seeds of each seed's mean over volumes; None for a one-seed entry."""
    from ichbench.leaderboard.entries import rescore
    from ichbench.leaderboard.schema import GROUPS, METRICS
    seeds = by_seed(entry)
    if not seeds:
        return None
    summaries = [rescore(rows) for rows in seeds.values()]
    out = {"n": len(seeds), "seeds": list(seeds), "pretrain": entry["seeds"]["pretrain"]}
    for g in GROUPS:
        out[g] = {}
        for m in METRICS:
            means = [100.0 * s[g][m]["mean"] for s in summaries if s[g][m]["mean"] is not None]
            out[g][m] = {"mean": float(np.mean(means)) if means else None,
                         "std": float(np.std(means, ddof=1)) if len(means) > 1 else None}
    return out


def widen(tolerance: dict, entry: dict | None) -> dict:
    """A reproduction's tolerances, widened to the entry's own seed spread: per volume to
    VOLUME_FACTOR x the largest range of an ICH volume's Dice over the seeds, the mean to
    MEAN_FACTOR x the std over seeds of the mean Dice of the ICH volumes (never narrower, at most 1)."""
    seeds = by_seed(entry or {})
    if not seeds:
        return tolerance
    from ichbench.leaderboard.entries import row_has_ich, scored_rows
    dice: dict = {}
    means = []
    for rows in seeds.values():
        ich = [r for r in scored_rows(rows) if row_has_ich(r)]
        for r in ich:
            dice.setdefault(r["volume_id"], []).append(r["dice"])
        if ich:
            means.append(float(np.mean([r["dice"] for r in ich])))
    volume = max((max(d) - min(d) for d in dice.values()), default=0.0)
    mean = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    out = dict(tolerance)
    out["volume"] = min(1.0, max(tolerance["volume"], VOLUME_FACTOR * volume))
    out["mean"] = min(1.0, max(tolerance["mean"], MEAN_FACTOR * mean))
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else tolerance[k]) for k, v in out.items()}


def entry_from_seeds_run(client, run, code_url, entry_from_run) -> dict:
    """The entry of a finished run of kind "seeds": its first seed's entry (`entry_from_run`, every
    check of a one-seed submission) with the other seeds' rows and runs in `seeds`."""
    from ichbench.leaderboard.submit import SubmitRejected
    from ichbench.tracking.mlflow_store import TAG
    rid, tags = run.info.run_id, run.data.tags
    where = f"MLflow run {rid}"
    if run.info.status != "FINISHED":
        raise SubmitRejected(where, [f"status is {run.info.status}, only FINISHED runs are submitted"])
    seeds = [int(s) for s in (tags.get(f"{TAG}seeds") or "").split(",") if s]
    runs = [r for r in (tags.get(f"{TAG}seed_runs") or "").split(",") if r]
    if len(seeds) < 2 or len(seeds) != len(runs):
        raise SubmitRejected(where, [f"tags {TAG}seeds and {TAG}seed_runs do not name two or more seeds' runs"])
    entries = [entry_from_run(client, client.get_run(r), code_url) for r in runs]
    base = entries[0]
    same = ("method", "dataset", "split", "profile", "plugin")
    for s, e in zip(seeds[1:], entries[1:]):
        differ = [k for k in same if e[k] != base[k]]
        if differ:
            raise SubmitRejected(where, [f"seed {s}'s run differs from seed {seeds[0]}'s in {', '.join(differ)}"])
    hours = [e["gpu_hours"] for e in entries]
    return {**base, "mlflow_run_id": rid, "gpu_hours": None if None in hours else sum(hours),
            "seeds": {"pretrain": tags.get(f"{TAG}seeds_pretrain") or "shared",
                      "runs": [{"seed": s, "mlflow_run_id": e["mlflow_run_id"], "folds": e["folds"]}
                               for s, e in zip(seeds, entries)],
                      "per_volume": [dict(r, seed=s) for s, e in zip(seeds[1:], entries[1:])
                                     for r in e["per_volume"]]}}


def seed_groups(groups: dict, values: dict, has_ich: dict, over: dict) -> dict:
    """An entry row's groups (percent) from its per-volume means over seeds (`volume_means`): mean,
    std over volumes and bootstrap CI of those means, and under "seeds" the mean ± std over seeds."""
    from ichbench.evaluate.summary import _mean_std
    from ichbench.leaderboard import stats
    out = {}
    for g, cells in groups.items():
        out[g] = {"n": cells["n"]}
        for m in values:
            vals = [x for v, x in values[m].items() if g == "all" or has_ich[v]]
            out[g][m] = {**_mean_std(vals), "ci": stats.bootstrap_ci(vals), "seeds": {**over[g][m], "n": over["n"]}}
    return out
