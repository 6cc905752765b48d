"""Leaderboard entries: building one from a run's per-volume rows, naming, and re-scoring.

An entry stores per-volume counts (TP/FP/FN and volumes in mL), never the ratios: Dice, precision
and recall shown on the leaderboard are recomputed from the counts with the paper's eqs. 1–3
(ε = 1) by the same code that evaluates runs (`ichbench.evaluate.summarize`), and |RVD| and the mL
errors from the mL. HD, HD95 and NSD (schema version 3) cannot be recomputed from counts: they are
stored as the run computed them and checked for consistency (`surface_checks.py`) and, by
`leaderboard reproduce`, against the re-run (`reproductions.surface_failures`).
"""

from __future__ import annotations

import math
from pathlib import Path

from ichbench.evaluate.metrics import METRIC_EPS, ratios
from ichbench.evaluate.summary import summarize
from ichbench.leaderboard import classes
from ichbench.leaderboard.schema import GROUPS, METRICS, SCHEMA_VERSION, SURFACE_KEYS
from ichbench.names import inside

EPS = METRIC_EPS   # the paper's ε, as every run is scored (kept under this name for the ledger)
ROW_KEYS = ("volume_id", "fold", "tp", "fp", "fn", "pred_ml", "true_ml", "subtypes", "has_ich", *SURFACE_KEYS)


def row_has_ich(r: dict) -> bool:
    """A row's ICH flag: the one recorded from the native mask, else (older entries) TP + FN > 0.
    Validation checks a recorded flag against the counts and the canonical flags."""
    flag = r.get("has_ich")
    return bool(flag) if flag is not None else int(r["tp"]) + int(r["fn"]) > 0


def _inf_text(x):
    """A metric as an entry holds it: a float, or "inf" (JSON has no infinity; docs/score.md).
    Anything else (NaN, -inf, text) is kept as text for the schema to refuse by name."""
    if x == "inf" or x == math.inf:
        return "inf"
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return x if isinstance(x, str) else repr(x)


def surface_values(r: dict) -> dict | None:
    """A row's surface and volume metrics with "inf" read as float('inf'); None for a row of an
    entry older than schema version 3 (no HD, HD95 or NSD: shown as "–")."""
    if "hd_mm" not in r:
        return None
    return {k: r[k] if k == "empty" else (math.inf if r[k] == "inf" else float(r[k])) for k in SURFACE_KEYS}


def scored_rows(per_volume: list[dict]) -> list[dict]:
    """Entry rows with Dice/precision/recall recomputed from their counts."""
    out = []
    for r in per_volume:
        tp, fp, fn = int(r["tp"]), int(r["fp"]), int(r["fn"])
        out.append({**r, **ratios(tp, fp, fn, EPS), "tp": tp, "fp": fp, "fn": fn, "has_ich": row_has_ich(r)})
    return out


def rescore(per_volume: list[dict]) -> dict:
    """The entry summary its counts give: {"all"|"ich": {"n", metric: {"mean", "std"}}}."""
    # the union's summary: a row's `classes` are summarised apart (leaderboard.classes.summary)
    full = summarize([{k: v for k, v in r.items() if k != "classes"} for r in scored_rows(per_volume)])
    return {g: {"n": full[g]["n"], **{m: dict(full[g][m]) for m in METRICS}} for g in GROUPS}


def summary_differences(stored: dict, recomputed: dict, tol: float = 1e-9, groups: dict | None = None,
                        name: str = "summary") -> list[str]:
    """Where a stored summary disagrees with the recomputed one (beyond `tol`). `groups`: {key:
    its groups} of a summary nested one level deeper (the per-class summary), named `name`."""
    if groups is not None:
        out = [f"{name} has classes {', '.join(sorted(stored))}, but the entry's are {', '.join(groups)}"] \
            if set(stored) != set(groups) else []
        return out or [p for key, gs in groups.items()
                       for p in _differences(stored[key], recomputed[key], tol, gs, f"{name} {key}.")]
    return _differences(stored, recomputed, tol, GROUPS, f"{name} ")


def _differences(stored: dict, recomputed: dict, tol: float, groups, head: str) -> list[str]:
    out = []
    for g in groups:
        if stored[g]["n"] != recomputed[g]["n"]:
            out.append(f"{head}{g}.n = {stored[g]['n']} but the per-volume rows give {recomputed[g]['n']}")
        for m in METRICS:
            for s in ("mean", "std"):
                a, b = stored[g][m][s], recomputed[g][m][s]
                if a is None or b is None:
                    if a is not b:
                        out.append(f"{head}{g}.{m}.{s} = {a} but the per-volume counts give {b}")
                elif not math.isclose(a, b, rel_tol=0.0, abs_tol=tol):
                    out.append(f"{head}{g}.{m}.{s} = {a!r} but the per-volume counts give {b!r} "
                               f"(differs by {abs(a - b):.3g} > {tol:g})")
    return out


def numbers_key(entry: dict) -> str:
    """What two entries share when they report the same per-volume numbers: the sha256 of the
    dataset name and every row's (volume id, fold, TP, FP, FN), sorted by volume id. Every number
    shown is recomputed from these counts, so equal keys mean equal results."""
    import hashlib
    import json
    rows = sorted((str(r["volume_id"]), int(r["fold"]), int(r["tp"]), int(r["fp"]), int(r["fn"]))
                  for r in entry["per_volume"])
    text = json.dumps([entry["dataset"]["name"], rows], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def submission_id(entry: dict) -> str:
    """An external tool's entry's id (in `mlflow_run_id`; it has no MLflow run): 32 hex digits of
    the sha256 of its dataset, k and each fold's predictions digest, so it names the masks."""
    import hashlib
    text = "ichbench-external-v1\n{}\n{}\n".format(entry["dataset"]["name"], int(entry["split"]["k"])) + "".join(
        f"{int(f['fold'])} {f['predictions_sha256']}\n" for f in sorted(entry.get("folds") or [],
                                                                         key=lambda f: int(f["fold"])))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def short_id(run_id: str) -> str:
    return run_id[:8]


def filename(entry: dict) -> str:
    return f"{entry['method']}--{short_id(entry['mlflow_run_id'])}.json"


def relpath(entry: dict) -> Path:
    """Where an entry belongs inside the leaderboard folder."""
    return inside(Path("entries"), entry["dataset"]["name"], filename(entry))


def entry_row(r: dict) -> dict:
    """A run's per-volume row as an entry holds it: counts, mL, subtypes, ICH flag and SURFACE_KEYS."""
    subs = r.get("subtypes")
    return {"volume_id": str(r["volume_id"]), "fold": int(r["fold"]), "tp": int(r["tp"]),
            "fp": int(r["fp"]), "fn": int(r["fn"]), "pred_ml": float(r["pred_ml"]),
            "true_ml": float(r["true_ml"]), "subtypes": None if subs is None else sorted(subs),
            "has_ich": row_has_ich(r),
            **{k: str(r[k]) if k == "empty" else _inf_text(r[k]) for k in SURFACE_KEYS}}


def build_entry(*, method: str, plugin_dist, plugin_version, dataset: str, fingerprint: str, split_hash: str,
                k: int, profile: str, config: dict, per_volume: list[dict], ichbench_version: str, hardware,
                gpu_hours, run_id: str, date: str, code_url, code_commit, nsd_mm: float, ichbench_commit=None,
                folds: list[dict] | None = None) -> dict:
    """`code_commit`: the commit of the method's own code (its plugin's, ichbench's for a built-in);
    `ichbench_commit`: the commit of the ichbench that ran it; `folds`: per fold its model and
    prediction digests and numerics (the driver's `folds.json`); `nsd_mm`: the NSD tolerance of
    the rows' `nsd`. Every row carries its SURFACE_KEYS (infinite values as float or "inf"). Rows
    of the subtypes task (with `classes`) make an entry of task subtypes (`leaderboard.classes`)."""
    rows = sorted(({**entry_row(r), **classes.row_fields(r)} for r in per_volume), key=lambda r: r["volume_id"])
    return {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "plugin": {"distribution": plugin_dist, "version": plugin_version},
        "dataset": {"name": dataset, "fingerprint": fingerprint},
        "split": {"hash": split_hash, "k": int(k)},
        "profile": profile,
        "config": config,
        "per_volume": rows,
        "summary": rescore(rows),
        "ichbench_version": ichbench_version,
        "ichbench_commit": ichbench_commit,
        "hardware": hardware,
        "gpu_hours": gpu_hours,
        "mlflow_run_id": run_id,
        "date": date,
        "code": {"url": code_url, "commit": code_commit},
        "nsd_mm": float(nsd_mm),
        "folds": [fold_record(f) for f in sorted(folds or [], key=lambda f: int(f["fold"]))],
        **classes.entry_fields(rows),
    }


def fold_record(f: dict) -> dict:
    num = f.get("numerics") or {}
    threads = num.get("cpu_threads")
    model = f.get("model_sha256")
    return {"fold": int(f["fold"]), "model_sha256": None if model is None else str(model),
            "predictions_sha256": str(f["predictions_sha256"]),
            "numerics": {"cpu_threads": None if threads is None else int(threads),
                         "cpu_capability": num.get("cpu_capability"), "gpu": num.get("gpu")}}


def _find_key(obj, key: str, depth: int = 0):
    if depth > 20:
        return None
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], (int, float)) and not isinstance(obj[key], bool):
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key, depth + 1)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key, depth + 1)
            if found is not None:
                return found
    return None


def labeled_amount(entry: dict) -> dict:
    """How many labeled volumes the fine-tuning saw per fold: {"fraction", "n_volumes", "declared"}.

    Taken from `n_labeled_volumes` or `labeled_fraction` anywhere in the resolved config; without
    either the run used every training volume of its folds (fraction 1). A fraction converts to
    volumes through the mean training-set size of a fold, n·(k−1)/k.
    """
    n_total = len(entry["per_volume"])
    k = entry["split"]["k"]
    n_train = n_total * (k - 1) / k
    n = _find_key(entry["config"], "n_labeled_volumes")
    if n is not None:
        return {"fraction": float(n) / n_train if n_train else None, "n_volumes": float(n), "declared": True}
    f = _find_key(entry["config"], "labeled_fraction")
    if f is not None:
        return {"fraction": float(f), "n_volumes": float(f) * n_train, "declared": True}
    return {"fraction": 1.0, "n_volumes": n_train, "declared": False}
