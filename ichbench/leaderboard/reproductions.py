"""Reproduction records: who re-ran an entry, when, on what, and how close the re-run came.

`ichbench leaderboard reproduce` appends a record to `<entry stem>.reproductions.json` beside the
entry. Validation checks each record against the entry it names (by the sha256 of the entry's
content: an entry edited after it was reproduced loses its records until reproduced again) and
against itself (the entry's Dice recomputed from its counts, the verdict recomputed from the
deltas and tolerances). The page marks an entry "reproduced" when a record passed, else
"self-reported". A record is as trustworthy as its author, whom it names; it cannot be forged
into agreeing with numbers the entry does not hold.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from ichbench.leaderboard.entries import ratios, row_has_ich, surface_values
from ichbench.leaderboard.jsonio import read_json, write_json
from ichbench.leaderboard.paths import RECORDS_SUFFIX
from ichbench.leaderboard.schema import _ONE_LINE, _problems

SUFFIX = RECORDS_SUFFIX
# Tolerances of a reproduction, from the run-to-run spread measured in docs/leaderboard.md
# ("Reproducing an entry"). A volume with ICH: its Dice within VOLUME_TOLERANCE (1.5x the largest
# change measured, 16.5 points). A volume without ICH scores 1/(FP + 1), so one stray voxel moves
# it 50 points: its false-positive voxels are compared instead, within FP_VOXELS + FP_RELATIVE x
# the larger count (measured: changes of 1 and 4 voxels). The mean Dice change over the n ICH
# volumes compared: within MEAN_SPREAD / sqrt(n) (2.5 standard errors of the mean for the
# measured per-volume spread of about 6 points). Records may use narrower tolerances only.
VOLUME_TOLERANCE = 0.25
MEAN_SPREAD = 0.15
FP_VOXELS = 10
FP_RELATIVE = 0.25


def tolerance_for(n_ich: int, entry: dict | None = None) -> dict:
    """The tolerances of a comparison over n_ich volumes with ICH (and any without); those of an
    entry over several seeds widened to the spread between its seeds (`seeds.widen`)."""
    from ichbench.leaderboard.seeds import widen
    mean = min(VOLUME_TOLERANCE, MEAN_SPREAD / math.sqrt(max(n_ich, 1)))
    return widen({"volume": VOLUME_TOLERANCE, "mean": mean, "fp_voxels": FP_VOXELS,
                  "fp_relative": FP_RELATIVE}, entry)

RECORD_VERSION = 1

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# text is one line without control characters, as in an entry (schema.CONTROL): records are shown too
_STR = {"type": "string", "maxLength": 500, **_ONE_LINE}
_OPT_STR = {"type": ["string", "null"], "maxLength": 500, **_ONE_LINE}
_STRS = {"type": "array", "maxItems": 20000, "items": {"type": "string", "maxLength": 1000, **_ONE_LINE}}
_DICE = {"type": "number", "minimum": 0, "maximum": 1}
_DELTA = {"type": "number", "minimum": -1, "maximum": 1}
_FOLD = {"type": "integer", "minimum": 0, "maximum": 99}
_FOLD_RECORD = {
    "type": "object", "additionalProperties": False,
    "required": ["fold", "numerics", "model_sha256", "predictions_sha256", "predictions_identical"],
    "properties": {"fold": _FOLD, "numerics": {"type": "object", "maxProperties": 10},
                   "model_sha256": {**_HEX64, "type": ["string", "null"]},
                   "predictions_sha256": _HEX64,
                   "predictions_identical": {"type": ["boolean", "null"]}}}
_VOLUME = {
    "type": "object", "additionalProperties": False,
    "required": ["volume_id", "fold", "dice_entry", "dice_reproduced", "delta", "has_ich",
                 "fp_entry", "fp_reproduced"],
    "properties": {"volume_id": {"type": "string", "maxLength": 64, **_ONE_LINE}, "fold": _FOLD,
                   "dice_entry": _DICE, "dice_reproduced": _DICE, "delta": _DELTA,
                   "has_ich": {"type": "boolean"},
                   "fp_entry": {"type": "integer", "minimum": 0},
                   "fp_reproduced": {"type": "integer", "minimum": 0}}}
_RECORD = {
    "type": "object", "additionalProperties": False,
    "required": ["entry_sha256", "who", "date", "ichbench_version", "hardware", "folds",
                 "tolerance", "volumes", "mean_delta", "passed", "failures"],
    "properties": {
        "entry_sha256": _HEX64,
        "who": _STR,
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"},
        "ichbench_version": _STR, "ichbench_commit": _OPT_STR, "plugin_version": _OPT_STR,
        "hardware": _STR,
        "config_filled": {**_STRS, "maxItems": 100},
        "folds": {"type": "array", "minItems": 1, "maxItems": 100, "items": _FOLD_RECORD},
        "tolerance": {"type": "object", "additionalProperties": False,
                      "required": ["volume", "mean", "fp_voxels", "fp_relative"],
                      "properties": {"volume": _DICE, "mean": _DICE,
                                     "fp_voxels": {"type": "integer", "minimum": 0},
                                     "fp_relative": _DICE}},
        "volumes": {"type": "array", "minItems": 1, "maxItems": 20000, "items": _VOLUME},
        "mean_delta": _DELTA,
        "passed": {"type": "boolean"},
        "failures": _STRS,
    },
}
RECORDS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False,
    "required": ["schema_version", "entry", "records"],
    "properties": {
        "schema_version": {"const": RECORD_VERSION},
        "entry": {"type": "string",
                  "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}--[A-Za-z0-9_-]{8}\.json$"},
        "records": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _RECORD},
    },
}


def is_record_file(path: Path) -> bool:
    return Path(path).name.endswith(SUFFIX)


def record_path(entry_path: Path) -> Path:
    entry_path = Path(entry_path)
    return entry_path.with_name(entry_path.name[:-len(".json")] + SUFFIX)


def entry_of(record_file: Path) -> Path:
    record_file = Path(record_file)
    return record_file.with_name(record_file.name[:-len(SUFFIX)] + ".json")


def entry_sha256(entry: dict) -> str:
    """sha256 of the entry's content (keys sorted, compact): the same entry however formatted."""
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fp_slack(v: dict, tolerance: dict) -> float:
    larger = max(v["fp_entry"], v["fp_reproduced"])
    return tolerance["fp_voxels"] + tolerance["fp_relative"] * larger


def _volume_failure(v: dict, tolerance: dict) -> str | None:
    head = f"volume {v['volume_id']} (fold {v['fold']})"
    if not v["has_ich"]:
        if abs(v["fp_reproduced"] - v["fp_entry"]) <= _fp_slack(v, tolerance):
            return None
        return (f"{head}, without ICH: {v['fp_entry']} false-positive voxels in the entry, "
                f"{v['fp_reproduced']} re-run (tolerance {_fp_slack(v, tolerance):.0f})")
    if abs(v["delta"]) <= tolerance["volume"] + 1e-12:
        return None
    return (f"{head}: Dice {100 * v['dice_entry']:.2f} % in the entry, "
            f"{100 * v['dice_reproduced']:.2f} % re-run (Δ {100 * v['delta']:+.2f} points, "
            f"tolerance {100 * tolerance['volume']:.3g})")


def verdict(volumes: list[dict], tolerance: dict, missing=()) -> tuple[float, list[str]]:
    """(mean Dice delta over ICH volumes, failures) of a comparison: each volume within its
    tolerance, the mean within `tolerance["mean"]`, and no entry volume left unscored."""
    failures = [f for f in (_volume_failure(v, tolerance) for v in volumes) if f]
    ich = [v["delta"] for v in volumes if v["has_ich"]]
    mean = sum(ich) / len(ich) if ich else 0.0
    if abs(mean) > tolerance["mean"] + 1e-12:
        failures.append(f"mean Dice Δ {100 * mean:+.2f} points over {len(ich)} volumes with ICH "
                        f"(tolerance {100 * tolerance['mean']:.3g})")
    failures += [f"volume {v} was not scored by the re-run" for v in missing]
    return mean, failures


SURFACE_REL = 1e-6   # the same masks and code: only the order of float sums may differ


def surface_failures(entry: dict, rows: list[dict], folds: list[dict]) -> list[str]:
    """HD, HD95, NSD and the volume metrics cannot be re-derived from counts; a re-run checks them
    where it can tell exactly what they must be: in a fold whose predictions are bit-identical to
    the entry's (the same digest), on the same store, every volume's metrics are the entry's. One
    failure per volume that differs. Folds whose predictions differ are not compared: how far
    surface distances move with the last bits of a model was not measured (docs/leaderboard.md)."""
    identical = {f["fold"] for f in folds if f.get("predictions_identical")}
    again = {str(r["volume_id"]): r for r in rows}
    out = []
    for r in sorted(entry["per_volume"], key=lambda r: r["volume_id"]):
        mine, theirs = surface_values(r), again.get(r["volume_id"])
        if r["fold"] not in identical or mine is None or theirs is None or "hd_mm" not in theirs:
            continue
        other = surface_values(theirs)
        wrong = [k for k in mine if not (mine[k] == other[k] or (
            k != "empty" and math.isclose(mine[k], other[k], rel_tol=SURFACE_REL, abs_tol=1e-9)))]
        if wrong:
            diff = ", ".join(f"{k} {mine[k]} in the entry, {other[k]} re-run" for k in wrong)
            out.append(f"surface metrics of volume {r['volume_id']} (fold {r['fold']}), from predictions "
                       f"bit-identical to the entry's: {diff}")
    return out


def append(entry_path: Path, entry: dict, record: dict) -> Path:
    path = record_path(entry_path)
    data = {"schema_version": RECORD_VERSION, "entry": Path(entry_path).name, "records": []}
    if path.exists():
        old = read_json(path)
        if isinstance(old, dict) and isinstance(old.get("records"), list):
            data["records"] = old["records"]
    data["records"].append(record)
    return write_json(path, data)


def _disagreeing(rec: dict, rows: dict) -> list[str]:
    """Volumes whose recorded entry Dice is not the entry's, or whose delta does not add up."""
    out = []
    for v in rec["volumes"]:
        r = rows.get(v["volume_id"])
        if r is None:
            out.append(v["volume_id"])
            continue
        own = ratios(r["tp"], r["fp"], r["fn"])["dice"]
        adds_up = math.isclose(v["delta"], v["dice_reproduced"] - v["dice_entry"], abs_tol=1e-9)
        same = v["fp_entry"] == r["fp"] and v["has_ich"] == row_has_ich(r)
        if not math.isclose(v["dice_entry"], own, abs_tol=1e-9) or not adds_up or not same:
            out.append(v["volume_id"])
    return out


def record_problems(data, entry: dict, entry_name: str) -> list[str]:
    """Why a records file does not hold for `entry` (empty: it does)."""
    problems = _problems(RECORDS_SCHEMA, data)
    if problems:
        return problems[:3]
    if data["entry"] != entry_name:
        return [f"names entry {data['entry']}, but sits beside {entry_name}"]
    digest = entry_sha256(entry)
    rows = {r["volume_id"]: r for r in entry["per_volume"]}
    out = []
    for i, rec in enumerate(data["records"]):
        who = f"record {i + 1} ({rec['who']}, {rec['date']})"
        if rec["entry_sha256"] != digest:
            out.append(f"{who} is of another version of the entry (its sha256 differs): "
                       "reproduce it again")
            continue
        wrong = _disagreeing(rec, rows)
        if wrong:
            out.append(f"{who}: its entry Dice or delta disagrees with the entry's counts for "
                       f"{', '.join(wrong[:5])}")
            continue
        tol = rec["tolerance"]
        limit = tolerance_for(sum(v["has_ich"] for v in rec["volumes"]), entry)
        wide = [k for k in tol if tol[k] > limit[k] + 1e-12]
        if wide:
            used = ", ".join(f"{k} {tol[k]:.4g}" for k in wide)
            ours = ", ".join(f"{k} {limit[k]:.4g}" for k in wide)
            out.append(f"{who}: its tolerance ({used}) is wider than ichbench's ({ours})")
            continue
        mean, failures = verdict(rec["volumes"], tol)
        should_pass = not failures and not rec["failures"]
        if not math.isclose(mean, rec["mean_delta"], abs_tol=1e-9) or rec["passed"] != should_pass:
            out.append(f"{who}: its verdict does not follow from its deltas and tolerances")
    return out


def status(records: list[dict] | None, k: int | None = None) -> dict:
    """What the page shows: the latest passing record, else the latest failing one, else none."""
    records = records or []
    passed = [r for r in records if r["passed"]]
    chosen = (passed or records or [None])[-1]
    if chosen is None:
        return {"mark": "self-reported"}
    return {"mark": "reproduced" if chosen["passed"] else "reproduction failed",
            "who": chosen["who"], "date": chosen["date"], "hardware": chosen["hardware"],
            "folds": sorted(f["fold"] for f in chosen["folds"]), "k": k,
            "max_delta": max(abs(v["delta"]) for v in chosen["volumes"]),
            "mean_delta": chosen["mean_delta"],
            "identical": all(f["predictions_identical"] for f in chosen["folds"])}
