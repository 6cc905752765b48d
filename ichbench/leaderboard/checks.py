"""The checks of one parsed entry, in the order `check_entry` runs them; each returns its reasons
to reject (empty: passed), worded for the `REJECT <file>: <reason>` line.

In order: the schema (nothing else runs on an entry that fails it); no patient identifiers; a
built-in method's name only from the ichbench distribution (claims.py); per-fold digests for every
fold; where it sits in the folder; its rows (each volume once, folds in range, known subtypes, ICH
flags that agree with the counts); the summary recomputed from the per-volume counts (to 1e-9);
the surface metrics' consistency with the counts and volumes (surface_checks.py); per-class results
against the union's counts, re-scored (classes.py);
the split hash against the folds its volumes were scored in (a run of some folds is named as
such); then against canonical.json: volume ids, ICH flags, fingerprint and the canonical split.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ichbench import SUBTYPES
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.claims import claim_problems
from ichbench.leaderboard.classes import problems as class_problems
from ichbench.leaderboard.entries import filename, rescore, row_has_ich, summary_differences
from ichbench.leaderboard.schema import entry_problems
from ichbench.leaderboard.seeds import problems as seed_problems
from ichbench.leaderboard.surface_checks import surface_problems
from ichbench.leaderboard.test_sets import problems as test_set_problems
from ichbench.splits import SPLIT_SEED, make_split, split_hash

# Keys that name a person or a DICOM object rather than a dataset volume. Generic "name" keys are
# fine (configs name methods and datasets); person-name keys are not.
SUSPECT_KEY = re.compile(
    r"(?i)(patient|birth|\bdob\b|accession|\bmrn\b|medical_?record|\bssn\b|social_?security|physician|"
    r"institution|(first|last|full|given|family|middle|sur|person|subject)_?name|subject_?id|"
    r"(sop|study|series)_?instance|instance_?uid)")
DICOM_UID = re.compile(r"^\d+(\.\d+){5,}$")  # dotted-decimal UIDs identify real studies and images


def check_entry(entry, exp: canon.Expectation, location: Path | None = None) -> list[str]:
    """Reasons to reject one parsed entry (empty: accepted). `location`: its path relative to the
    leaderboard folder, when it is inside one."""
    problems = entry_problems(entry)
    if problems:
        return problems[:5] + ([f"schema: {len(problems) - 5} more problems"] if len(problems) > 5 else [])
    out = identifier_problems(entry) + claim_problems(entry) + _fold_digests(entry) + _placement(entry, location)
    rows = entry["per_volume"]
    twice, out_of_range, contradicted = _twice(rows), _folds_out_of_range(entry), _contradicted_ich(rows)
    out += twice + out_of_range + _unknown_subtypes(rows) + contradicted
    if twice or out_of_range or contradicted:
        return out   # re-scoring and the split checks need each volume once, in a fold, ICH as counted
    out += summary_differences(entry["summary"], rescore(rows)) + surface_problems(entry) + test_set_problems(entry)
    out += class_problems(entry)   # the subtypes task: per-class counts against the union's, re-scored
    out += seed_problems(entry)   # ichbench run --seeds: the other seeds scored the same volumes
    partial = _partial_run(entry)
    if partial:
        return out + partial + _fingerprint(entry, exp)
    out += _own_split(entry)
    if not exp.known:
        return out + [f"dataset {entry['dataset']['name']!r} has no record in canonical.json"]
    return (out + _canonical_volumes(entry, exp) + _canonical_ich(entry, exp) + _fingerprint(entry, exp)
            + _canonical_split(entry, exp))


def identifier_problems(obj, where: str = "", depth: int = 0) -> list[str]:
    """Keys or values that look like patient or DICOM identifiers, anywhere in the document."""
    if depth > 50:
        return [f"nesting deeper than 50 levels at {where or '(top level)'}"]
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{where}/{k}" if where else str(k)
            if SUSPECT_KEY.search(str(k)):
                out.append(f"field {path!r} looks like a patient identifier; entries carry dataset volume ids only")
            out += identifier_problems(v, path, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += identifier_problems(v, f"{where}/{i}", depth + 1)
    elif isinstance(obj, str) and DICOM_UID.match(obj.strip()):
        out.append(f"value at {where!r} looks like a DICOM UID; entries carry dataset volume ids only")
    return out


def missing_folds_problem(covered, missing, k: int) -> str:
    """One line for an entry (or run) that has results for only some folds of its split."""
    def listed(folds):
        return ", ".join(str(f) for f in folds)
    return (f"run covers folds {listed(covered)} of k = {k}; missing {listed(missing)}: an entry needs every fold; "
            f"rerun the same `ichbench run` without --folds (finished folds are reused) and submit again")


def few(items, n: int = 5) -> str:
    """The first n items, and how many more."""
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def _fold_digests(entry) -> list[str]:
    listed = sorted(f["fold"] for f in entry.get("folds", ()))
    scored = sorted({r["fold"] for r in entry["per_volume"]})
    # an entry missing whole folds is told that once (_partial_run); its digests are moot until then
    if "folds" in entry and scored == list(range(entry["split"]["k"])) and listed != scored:
        return [f"folds lists digests for folds {few(listed)}, but the volumes were scored in "
                f"folds {few(scored)}: each scored fold needs its digests once"]
    return []


def _placement(entry, location: Path | None) -> list[str]:
    if location is None:
        return []
    ds = entry["dataset"]["name"]
    want = Path("entries") / ds / filename(entry)
    if Path(location) == want:
        return []
    return [f"misplaced: an entry for {entry['method']} on {ds} from run {entry['mlflow_run_id']} belongs at {want}"]


def _twice(rows) -> list[str]:
    dup = sorted(v for v, c in Counter(r["volume_id"] for r in rows).items() if c > 1)
    return [f"volumes listed more than once: {few(dup)}"] if dup else []


def _folds_out_of_range(entry) -> list[str]:
    k = entry["split"]["k"]
    bad = sorted({r["fold"] for r in entry["per_volume"] if r["fold"] >= k})
    return [f"fold numbers {few(bad)} out of range for k = {k}"] if bad else []


def _unknown_subtypes(rows) -> list[str]:
    bad = sorted({s for r in rows for s in (r["subtypes"] or ()) if s not in SUBTYPES})
    return [f"unknown subtypes {few(bad)} (known: {', '.join(SUBTYPES)})"] if bad else []


def _ich_flags(rows) -> dict:
    return {r["volume_id"]: row_has_ich(r) for r in rows}


def _contradicted_ich(rows) -> list[str]:
    flags = _ich_flags(rows)
    bad = sorted(r["volume_id"] for r in rows if r["tp"] + r["fn"] > 0 and not flags[r["volume_id"]])
    return [f"has_ich is false but tp + fn > 0 for {few(bad)}"] if bad else []


def _folds_as_scored(entry) -> list[list[str]]:
    """The volume ids of each fold, as the entry's rows were scored; their hash is what the entry's
    split hash must be, whatever canonical.json knows."""
    rows = entry["per_volume"]
    return [sorted(r["volume_id"] for r in rows if r["fold"] == i) for i in range(entry["split"]["k"])]


def _partial_run(entry) -> list[str]:
    """A run of some folds (`--folds`): said so, rather than what follows from it (a split hash that
    differs, canonical volumes missing)."""
    own, k = _folds_as_scored(entry), entry["split"]["k"]
    empty = [i for i in range(k) if not own[i]]
    if not empty or split_hash(own, k, SPLIT_SEED) == entry["split"]["hash"]:
        return []
    return [missing_folds_problem([i for i in range(k) if own[i]], empty, k)]


def _own_split(entry) -> list[str]:
    own_hash = split_hash(_folds_as_scored(entry), entry["split"]["k"], SPLIT_SEED)
    if own_hash == entry["split"]["hash"]:
        return []
    return [f"split hash {entry['split']['hash'][:12]}… is not the hash of the folds its volumes were "
            f"scored in ({own_hash[:12]}…)"]


def _ids(entry) -> list[str]:
    return [r["volume_id"] for r in entry["per_volume"]]


def _canonical_volumes(entry, exp: canon.Expectation) -> list[str]:
    ds, ids = entry["dataset"]["name"], _ids(entry)
    if exp.volume_ids is None:
        if exp.n_volumes is not None and len(ids) != exp.n_volumes:
            return [f"{len(ids)} volumes; {ds} has {exp.n_volumes}"]
        return []
    missing = sorted(set(exp.volume_ids) - set(ids))
    extra = sorted(set(ids) - set(exp.volume_ids))
    return ([f"missing canonical volumes: {few(missing)}"] if missing else []) + \
        ([f"volumes not in the canonical {ds} set: {few(extra)}"] if extra else [])


def _canonical_ich(entry, exp: canon.Expectation) -> list[str]:
    ids, flags = _ids(entry), _ich_flags(entry["per_volume"])
    if exp.has_ich is not None:
        wrong = sorted(v for v in ids if v in exp.has_ich and exp.has_ich[v] != flags[v])
        return [f"ICH presence (has_ich, or tp + fn > 0 where absent) disagrees with the canonical flags for "
                f"{few(wrong)} (edited rows, or flags taken from a resampled mask)"] if wrong else []
    # without recorded flags, only their number, and only for an entry of the full volume count
    if exp.n_ich_volumes is not None and len(ids) == exp.n_volumes and sum(flags.values()) != exp.n_ich_volumes:
        return [f"{sum(flags.values())} volumes with ICH (has_ich); {entry['dataset']['name']} has {exp.n_ich_volumes}"]
    return []


def _fingerprint(entry, exp: canon.Expectation) -> list[str]:
    got = entry["dataset"]["fingerprint"]
    if not exp.fingerprints or got in exp.fingerprints:
        return []
    return [f"dataset fingerprint {got[:12]}… is not a recorded {entry['dataset']['name']} fingerprint "
            f"({few(f[:12] + '…' for f in exp.fingerprints)})"]


def _canonical_split(entry, exp: canon.Expectation) -> list[str]:
    """The canonical split for the entry's k: recomputed where canonical.json determines the ICH
    flags (then each volume's fold is checked too), else its recorded hash, if any."""
    ds, k, ids, claimed = entry["dataset"]["name"], entry["split"]["k"], _ids(entry), entry["split"]["hash"]
    canonical_flags = exp.flags_for(ids)
    if canonical_flags is None or len(ids) < k:
        recorded = exp.split_hashes.get(str(k))
        if recorded in (None, claimed):
            return []
        return [f"split hash {claimed[:12]}… is not the canonical {ds} split for k = {k} ({recorded[:12]}…)"]
    split = make_split(ds, canonical_flags, k, SPLIT_SEED)
    out = []
    if split["hash"] != claimed:
        out.append(f"split hash {claimed[:12]}… is not the canonical {ds} split for k = {k} ({split['hash'][:12]}…)")
    fold_of = {v: f["fold"] for f in split["folds"] for v in f["test"]}
    moved = sorted(r["volume_id"] for r in entry["per_volume"] if fold_of.get(r["volume_id"]) != r["fold"])
    if moved:
        out.append(f"volumes scored in a different fold than the canonical split puts them: {few(moved)}")
    return out
