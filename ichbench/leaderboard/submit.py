"""`ichbench leaderboard submit`: turn a finished `ichbench run` parent run into an entry.

Reads only the tags and JSON artifacts the run logged (per_volume.json, config.json, split.json,
summary.json), cross-checks them against each other, then validates the entry exactly as
`validate` would before writing it; a rejected entry is never written.
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
from pathlib import Path

from ichbench.errors import IchbenchError
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.classes import run_problems as class_run_problems
from ichbench.leaderboard.entries import build_entry, relpath, rescore
from ichbench.leaderboard.jsonio import MAX_BYTES, read_json, write_json
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.schema import EXTERNAL_TOOL, GROUPS, METRICS, SURFACE_KEYS
from ichbench.leaderboard.claims import duplicate_problem
from ichbench.tracking.mlflow_store import TAG, Tracker

REQUIRED_TAGS = ("method", "dataset", "dataset_fingerprint", "split_hash", "k", "profile")
ARTIFACTS = ("per_volume.json", "config.json", "split.json", "summary.json", "folds.json")
OLD_RUN = ("the run was logged before entries carried each fold's model and prediction digests: "
           "rerun the same `ichbench run` (finished folds are re-evaluated, not retrained) and "
           "submit again")
# rows scored before the surface metrics (issue 22): an entry of schema version 3 needs them
OLD_ROWS = ("the run was scored before per-volume rows carried HD, HD95 and NSD: rerun the same "
            "`ichbench run` with this ichbench (finished folds are re-evaluated, not retrained) and "
            "submit again")


class SubmitRejected(IchbenchError):
    def __init__(self, where: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{where}: not submitted: " + "; ".join(problems))


def _client(uri: str):
    return Tracker.existing(uri).client


def find_run(uri: str, run_id: str | None = None, method: str | None = None, dataset: str | None = None):
    """The parent run by id, or the latest finished parent run of (method, dataset)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    if run_id:
        try:
            return client, client.get_run(run_id)
        except MlflowException:
            raise IchbenchError(f"{uri}: no MLflow run {run_id!r}") from None
    if not (method and dataset):
        raise IchbenchError("give --run-id, or both --method and --dataset")
    exp = client.get_experiment_by_name(f"ichbench/{dataset}")
    if exp is None:
        raise IchbenchError(f"{uri}: no experiment 'ichbench/{dataset}' (no `ichbench run` on {dataset} yet)")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.`{TAG}kind` = 'parent' and tags.`{TAG}method` = '{_quote(method)}' "
                       f"and tags.`{TAG}dataset` = '{_quote(dataset)}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise IchbenchError(f"{uri}: no finished parent run of {method} on {dataset}")
    return client, runs[0]


def _quote(s: str) -> str:
    if "'" in s or "\\" in s:
        raise IchbenchError(f"invalid name {s!r}")
    return s


def _iso(ms) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000.0, _dt.timezone.utc).replace(microsecond=0) \
        .isoformat().replace("+00:00", "Z")


def _float_or_none(s):
    if s in (None, ""):
        return None
    try:
        v = float(s)
    except ValueError:
        raise IchbenchError(f"tag {TAG}gpu_hours = {s!r} is not a number") from None
    return v if math.isfinite(v) and v >= 0 else None


def entry_from_run(client, run, code_url: str | None = None) -> dict:
    rid = run.info.run_id
    where = f"MLflow run {rid}"
    tags = run.data.tags
    if tags.get(f"{TAG}kind") != "parent":
        raise SubmitRejected(where, [f"not an ichbench parent run (tag {TAG}kind = {tags.get(TAG + 'kind')!r})"])
    if run.info.status != "FINISHED":
        raise SubmitRejected(where, [f"status is {run.info.status}, only FINISHED runs are submitted"])
    missing = [t for t in REQUIRED_TAGS if not tags.get(TAG + t)]
    if missing:
        raise SubmitRejected(where, [f"missing tags {', '.join(TAG + t for t in missing)}"])
    art = {}
    with tempfile.TemporaryDirectory(prefix="ichbench-submit-") as tmp:
        for name in ARTIFACTS:
            try:
                local = client.download_artifacts(rid, name, tmp)
            except Exception as exc:  # MLflow raises several types for a missing artifact
                if name == "folds.json":
                    raise SubmitRejected(where, [f"artifact folds.json missing: {OLD_RUN}"]) \
                        from None
                raise SubmitRejected(where, [f"artifact {name} missing ({type(exc).__name__})"]) from None
            art[name] = read_json(Path(local), max_bytes=4 * MAX_BYTES, shown=f"{where}/{name}")
    rows, split, summary, config = art["per_volume.json"], art["split.json"], art["summary.json"], art["config.json"]
    problems = []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SubmitRejected(where, ["per_volume.json is not a list of rows"])
    need = ("volume_id", "fold", "tp", "fp", "fn", "pred_ml", "true_ml", "subtypes")
    for r in rows:
        lack = [k for k in need if k not in r]
        if lack:
            raise SubmitRejected(where, [f"per_volume.json row {r.get('volume_id', '?')} lacks {', '.join(lack)}"])
        if any(k not in r for k in SURFACE_KEYS):
            raise SubmitRejected(where, [f"per_volume.json row {r['volume_id']} has no surface metrics: {OLD_ROWS}"])
    nsd_mm = summary.get("nsd_mm") if isinstance(summary, dict) else None
    if not isinstance(nsd_mm, (int, float)) or isinstance(nsd_mm, bool) or not 0 <= nsd_mm <= 100:
        raise SubmitRejected(where, [f"summary.json does not say the NSD tolerance its rows were scored at "
                                     f"(nsd_mm = {nsd_mm!r}): {OLD_ROWS}"])
    if not isinstance(config, dict):
        problems.append("config.json is not an object")
    try:
        k = int(tags[TAG + "k"])
    except ValueError:
        raise SubmitRejected(where, [f"tag {TAG}k = {tags[TAG + 'k']!r} is not an integer"]) from None
    if not isinstance(split, dict) or split.get("hash") != tags[TAG + "split_hash"] or split.get("k") != k:
        problems.append("split.json does not match the run's split_hash/k tags")
    else:
        fold_of = {v: f["fold"] for f in split.get("folds", []) for v in f.get("test", [])}
        moved = sorted(str(r["volume_id"]) for r in rows if fold_of.get(r["volume_id"]) != r["fold"])
        if moved:
            problems.append(f"per_volume.json folds differ from split.json for {', '.join(moved[:5])}")
    recomputed = rescore([{**r, "tp": int(r["tp"]), "fp": int(r["fp"]), "fn": int(r["fn"])} for r in rows])
    for g in GROUPS:
        for m in METRICS:
            logged = (summary.get(g, {}).get(m, {}) if isinstance(summary, dict) else {}).get("mean")
            want = recomputed[g][m]["mean"]
            if logged is not None and want is not None and abs(float(logged) - want) > 1e-9:
                problems.append(f"summary.json {g}.{m}.mean = {logged} but per_volume.json gives {want}")
    problems += _fold_problems(art["folds.json"], rows)
    problems += class_run_problems(rows, summary, config)   # finetune.task=subtypes: per-class results
    if problems:
        raise SubmitRejected(where, problems)
    entry = build_entry(
        method=tags[TAG + "method"], plugin_dist=tags.get(TAG + "plugin_dist") or None,
        plugin_version=tags.get(TAG + "plugin_version") or None, dataset=tags[TAG + "dataset"],
        fingerprint=tags[TAG + "dataset_fingerprint"], split_hash=tags[TAG + "split_hash"], k=k,
        profile=tags[TAG + "profile"], config=config, per_volume=rows,
        ichbench_version=tags.get(TAG + "version") or "unknown", hardware=tags.get(TAG + "hardware") or None,
        gpu_hours=_float_or_none(tags.get(TAG + "gpu_hours")), run_id=rid,
        date=_iso(run.info.end_time or run.info.start_time), code_url=code_url,
        code_commit=method_commit(tags), ichbench_commit=_commit(tags.get(TAG + "git_commit")),
        nsd_mm=float(nsd_mm), folds=art["folds.json"])
    from ichbench.leaderboard.test_sets import from_run   # --test-on results, when the run has them
    with tempfile.TemporaryDirectory(prefix="ichbench-submit-") as tmp:
        external = from_run(client, run, tmp, where)
    return {**entry, "external": external} if external else entry


def _fold_problems(folds, rows: list[dict]) -> list[str]:
    """folds.json must give both digests for exactly the folds the per-volume rows were scored
    in."""
    need = ("fold", "predictions_sha256")   # model_sha256 may be null (no model file)
    if not isinstance(folds, list) or not all(
            isinstance(f, dict) and all(f.get(k) is not None for k in need) for f in folds):
        return [f"folds.json is not a list of folds with model and prediction digests: {OLD_RUN}"]
    listed = sorted(int(f["fold"]) for f in folds)
    scored = sorted({int(r["fold"]) for r in rows})
    if listed != scored:
        return [f"folds.json lists folds {listed} but per_volume.json was scored in folds {scored}"]
    return []


def _commit(value) -> str | None:
    return None if value in (None, "", "unknown") else value


def method_commit(tags: dict) -> str | None:
    """The commit of the code that produced the method: its plugin's (tag plugin_commit). Runs
    logged before that tag existed have only ichbench's commit, which describes a built-in method
    but not a plugin's: then unknown rather than wrong."""
    if TAG + "plugin_commit" in tags:
        return _commit(tags[TAG + "plugin_commit"])
    return _commit(tags.get(TAG + "git_commit")) if tags.get(TAG + "plugin_dist") == "ichbench" else None


def submit(folder: Folder, uri: str, run_id: str | None = None, method: str | None = None,
           dataset: str | None = None, code_url: str | None = None) -> Path:
    client, run = find_run(uri, run_id, method, dataset)
    if run.data.tags.get(f"{TAG}kind") == "seeds":   # ichbench run --seeds: every seed in one entry
        from ichbench.leaderboard.seeds import entry_from_seeds_run
        entry = entry_from_seeds_run(client, run, code_url, entry_from_run)
    else:
        entry = entry_from_run(client, run, code_url)
    return write_checked(folder, entry, f"MLflow run {run.info.run_id}")


def write_checked(folder: Folder, entry: dict, where: str) -> Path:
    """Write `entry` into the folder if `validate` would accept it there (its own checks, canonical.json,
    one entry per run id, no duplicate numbers); else SubmitRejected and nothing written."""
    rel = relpath(entry)
    data = canon.load(folder)
    problems = check_entry(entry, canon.expectation(data, entry["dataset"]["name"]), rel)
    others = {}
    for other in folder.entry_files():
        try:
            others[folder.rel(other)] = read_json(other, shown=folder.rel(other))
            if others[folder.rel(other)].get("mlflow_run_id") == entry["mlflow_run_id"]:
                what = (f"these predictions (submission {entry['mlflow_run_id']}) are" if entry.get("kind") ==
                        EXTERNAL_TOOL else f"MLflow run {entry['mlflow_run_id']} is")
                problems.append(f"duplicate: {what} already on the leaderboard as {folder.rel(other)}")
        except (IchbenchError, AttributeError):
            continue
    if not problems:
        # a new submission comes after everything already on the leaderboard, whatever its date
        dup = duplicate_problem({**entry, "date": "~"}, folder.rel(folder.root / rel), others)
        if dup:
            problems.append(dup)
    if problems:
        raise SubmitRejected(where, problems)
    return write_json(folder.root / rel, entry)
