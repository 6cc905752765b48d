"""Validation of the leaderboard folder: every rejection names the file and the reason.

Checks, per entry: size limit and strict JSON; the schema; no patient identifiers; that it sits at
entries/<dataset>/<method>--<run id prefix>.json; a built-in method's name only from the ichbench
distribution; per-fold digests for every fold (schema 2); each volume once and folds in range; the
summary recomputed from the per-volume counts (to 1e-9); the split hash against the folds its
volumes were scored in (an entry with folds missing is named as a run of some folds); then against
canonical.json: volume ids (each canonical volume exactly once), ICH flags, fingerprint, and the
canonical split (hash and each volume's fold). Across entries: one entry per MLflow run, and no
two runs with the same per-volume counts; reproduction records against their entries
(reproductions.py). Folder-wide: the published tables byte-identical to the pinned ones,
canonical.json consistent, the schema copy unchanged. Whatever canonical.json cannot support yet
is reported as a note, never passed silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ichbench import SUBTYPES
from ichbench.errors import IchbenchError
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.claims import claim_problems, duplicate_problem
from ichbench.leaderboard.entries import (filename, rescore, row_has_ich,
                                          summary_differences)
from ichbench.leaderboard.jsonio import read_json
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.published import check_published
from ichbench.leaderboard.reproductions import SUFFIX, entry_of, is_record_file, record_problems
from ichbench.leaderboard.schema import ENTRY_SCHEMA, entry_problems
from ichbench.splits import SPLIT_SEED, make_split, split_hash

# Keys that name a person or a DICOM object rather than a dataset volume. Generic "name" keys are
# fine (configs name methods and datasets); person-name keys are not.
SUSPECT_KEY = re.compile(
    r"(?i)(patient|birth|\bdob\b|accession|\bmrn\b|medical_?record|\bssn\b|social_?security|physician|"
    r"institution|(first|last|full|given|family|middle|sur|person|subject)_?name|subject_?id|"
    r"(sop|study|series)_?instance|instance_?uid)")
DICOM_UID = re.compile(r"^\d+(\.\d+){5,}$")  # dotted-decimal UIDs identify real studies and images


@dataclass
class Rejection:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"REJECT {self.path}: {self.reason}"


@dataclass
class Report:
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    entries: dict[str, dict] = field(default_factory=dict)  # shown path -> entry, accepted ones
    # shown entry path -> its valid reproduction records
    reproductions: dict[str, list] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.rejections

    def reject(self, path: str, reasons) -> None:
        for r in ([reasons] if isinstance(reasons, str) else reasons):
            self.rejections.append(Rejection(path, r))

    def lines(self) -> list[str]:
        out = [f"ok     {p}" for p in self.accepted]
        out += [str(r) for r in self.rejections]
        out += [f"note: {n}" for n in self.notes]
        return out


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


def _few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def missing_folds_problem(covered, missing, k: int) -> str:
    """One line for an entry (or run) that has results for only some folds of its split."""
    def listed(folds):
        return ", ".join(str(f) for f in folds)
    return (f"run covers folds {listed(covered)} of k = {k}; missing {listed(missing)}: an entry needs every fold; "
            f"rerun the same `ichbench run` without --folds (finished folds are reused) and submit again")


def check_entry(entry, exp: canon.Expectation, location: Path | None = None) -> list[str]:
    """Reasons to reject one parsed entry (empty: accepted). `location`: its path relative to the
    leaderboard folder, when it is inside one."""
    problems = entry_problems(entry)
    if problems:
        return problems[:5] + ([f"schema: {len(problems) - 5} more problems"] if len(problems) > 5 else [])
    out = identifier_problems(entry)
    out += claim_problems(entry)
    ds = entry["dataset"]["name"]
    k = entry["split"]["k"]
    rows = entry["per_volume"]
    listed = sorted(f["fold"] for f in entry.get("folds", ()))
    scored = sorted({r["fold"] for r in rows})
    # an entry missing whole folds is told that once, below; its digests are moot until then
    if "folds" in entry and scored == list(range(k)) and listed != scored:
        out.append(f"folds lists digests for folds {_few(listed)}, but the volumes were scored in "
                   f"folds {_few(scored)}: each scored fold needs its digests once")
    if location is not None:
        want = Path("entries") / ds / filename(entry)
        if Path(location) != want:
            out.append(f"misplaced: an entry for {entry['method']} on {ds} from run "
                       f"{entry['mlflow_run_id']} belongs at {want}")
    ids = [r["volume_id"] for r in rows]
    dup = sorted(v for v, c in Counter(ids).items() if c > 1)
    if dup:
        out.append(f"volumes listed more than once: {_few(dup)}")
    bad_folds = sorted({r["fold"] for r in rows if r["fold"] >= k})
    if bad_folds:
        out.append(f"fold numbers {_few(bad_folds)} out of range for k = {k}")
    bad_sub = sorted({s for r in rows for s in (r["subtypes"] or ()) if s not in SUBTYPES})
    if bad_sub:
        out.append(f"unknown subtypes {_few(bad_sub)} (known: {', '.join(SUBTYPES)})")
    flags = {r["volume_id"]: row_has_ich(r) for r in rows}
    contradicted = sorted(r["volume_id"] for r in rows if r["tp"] + r["fn"] > 0 and not flags[r["volume_id"]])
    if contradicted:
        out.append(f"has_ich is false but tp + fn > 0 for {_few(contradicted)}")
    if dup or bad_folds or contradicted:
        return out
    out += summary_differences(entry["summary"], rescore(rows))

    # The split hash is the hash of the fold lists, so it can be recomputed from the folds the
    # entry's volumes were scored in, whatever canonical.json knows.
    own = [sorted(r["volume_id"] for r in rows if r["fold"] == i) for i in range(k)]
    own_hash = split_hash(own, k, SPLIT_SEED)
    empty = [i for i in range(k) if not own[i]]
    if own_hash != entry["split"]["hash"] and empty:
        # a run of some folds (`--folds`): say so, rather than what follows from it (a split hash
        # that differs, canonical volumes missing)
        out.append(missing_folds_problem([i for i in range(k) if own[i]], empty, k))
        if exp.fingerprints and entry["dataset"]["fingerprint"] not in exp.fingerprints:
            out.append(f"dataset fingerprint {entry['dataset']['fingerprint'][:12]}… is not a recorded {ds} "
                       f"fingerprint ({_few(f[:12] + '…' for f in exp.fingerprints)})")
        return out
    if own_hash != entry["split"]["hash"]:
        out.append(f"split hash {entry['split']['hash'][:12]}… is not the hash of the folds its volumes were "
                   f"scored in ({own_hash[:12]}…)")

    if not exp.known:
        out.append(f"dataset {ds!r} has no record in canonical.json")
        return out
    if exp.volume_ids is not None:
        missing = sorted(set(exp.volume_ids) - set(ids))
        extra = sorted(set(ids) - set(exp.volume_ids))
        if missing:
            out.append(f"missing canonical volumes: {_few(missing)}")
        if extra:
            out.append(f"volumes not in the canonical {ds} set: {_few(extra)}")
    elif exp.n_volumes is not None and len(ids) != exp.n_volumes:
        out.append(f"{len(ids)} volumes; {ds} has {exp.n_volumes}")
    if exp.has_ich is not None:
        wrong = sorted(v for v in ids if v in exp.has_ich and exp.has_ich[v] != flags[v])
        if wrong:
            out.append(f"ICH presence (has_ich, or tp + fn > 0 where absent) disagrees with the canonical "
                       f"flags for {_few(wrong)} (edited rows, or flags taken from a resampled mask)")
    elif exp.n_ich_volumes is not None and len(ids) == exp.n_volumes:
        n_ich = sum(flags.values())
        if n_ich != exp.n_ich_volumes:
            out.append(f"{n_ich} volumes with ICH (has_ich); {ds} has {exp.n_ich_volumes}")
    if exp.fingerprints and entry["dataset"]["fingerprint"] not in exp.fingerprints:
        out.append(f"dataset fingerprint {entry['dataset']['fingerprint'][:12]}… is not a recorded {ds} "
                   f"fingerprint ({_few(f[:12] + '…' for f in exp.fingerprints)})")
    canonical_flags = exp.flags_for(ids)
    if canonical_flags is not None and len(ids) >= k:
        split = make_split(ds, canonical_flags, k, SPLIT_SEED)
        if split["hash"] != entry["split"]["hash"]:
            out.append(f"split hash {entry['split']['hash'][:12]}… is not the canonical {ds} split for k = {k} "
                       f"({split['hash'][:12]}…)")
        fold_of = {v: f["fold"] for f in split["folds"] for v in f["test"]}
        moved = sorted(r["volume_id"] for r in rows if fold_of.get(r["volume_id"]) != r["fold"])
        if moved:
            out.append(f"volumes scored in a different fold than the canonical split puts them: {_few(moved)}")
    elif exp.split_hashes.get(str(k)) not in (None, entry["split"]["hash"]):
        out.append(f"split hash {entry['split']['hash'][:12]}… is not the canonical {ds} split for k = {k} "
                   f"({exp.split_hashes[str(k)][:12]}…)")
    return out


def _load_entry(path: Path, shown: str, report: Report):
    try:
        return read_json(path, shown=shown)
    except IchbenchError as exc:
        report.reject(shown, getattr(exc, "problem", str(exc)))
        return None


def _entry_location(folder: Folder, path: Path) -> Path | None:
    try:
        return Path(path).resolve().relative_to(folder.root.resolve())
    except ValueError:
        return None


def validate(folder: Folder, only: list[Path] | None = None) -> Report:
    """Validate the whole folder, or only the given entry files (still checked against the
    folder's canonical.json and its other entries for duplicates)."""
    report = Report()
    whole = only is None
    try:
        data = canon.load(folder)
    except IchbenchError as exc:
        report.reject(folder.rel(folder.canonical), getattr(exc, "problem", str(exc)))
        return report

    if whole:
        for path in folder.published_files():
            problems = check_published(path, folder.rel(path)) if path.suffix == ".json" else \
                ["not a published table (published/*.json)"]
            if problems:
                report.reject(folder.rel(path), problems)
            else:
                report.accepted.append(folder.rel(path))
        if not folder.published_files():
            report.reject(folder.rel(folder.published_dir), "no published tables (the paper's Table 3 is missing)")
        _check_schema_copy(folder, report)
        targets = _all_entry_files(folder, report)
    else:
        targets = [Path(p) for p in only]
    records = [p for p in targets if is_record_file(p)]
    targets = [p for p in targets if not is_record_file(p)]
    # a record is checked against its entry: validate that too
    targets += [entry_of(p) for p in records if entry_of(p).exists() and entry_of(p) not in targets]

    # Other entries in the folder, for the one-entry-per-run and duplicate checks when validating
    # only some.
    run_owner: dict[str, str] = {}
    others: dict[str, dict] = {}
    if not whole:
        chosen = {p.resolve() for p in targets}
        for path in folder.entry_files():
            if path.resolve() in chosen or path.suffix != ".json" or _linked(folder, path):
                continue
            try:
                other = read_json(path, shown=folder.rel(path))
                run_owner.setdefault(str(other.get("mlflow_run_id")), folder.rel(path))
                others[folder.rel(path)] = other
            except (IchbenchError, AttributeError):
                continue

    for path in targets:
        shown = folder.rel(path)
        if _linked(folder, path):
            report.reject(_shown(folder, Path(path).absolute()), SYMLINK)
            continue
        entry = _load_entry(path, shown, report)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            report.reject(shown, "schema: an entry is a JSON object")
            continue
        name = entry.get("dataset", {}).get("name") if isinstance(entry.get("dataset"), dict) else None
        problems = check_entry(entry, canon.expectation(data, str(name)), _entry_location(folder, path))
        run = str(entry.get("mlflow_run_id"))
        if not problems and run in run_owner:
            problems.append(f"duplicate: MLflow run {run} is already on the leaderboard as {run_owner[run]}")
        if problems:
            report.reject(shown, problems)
            continue
        run_owner[run] = shown
        report.accepted.append(shown)
        report.entries[shown] = entry
    _reject_duplicate_numbers(report, others)
    _check_records(folder, report, records, whole)

    for name in sorted(data["datasets"]):
        left = canon.expectation(data, name).left_out()
        if left:
            report.notes.append(f"{name}: not yet recorded from a real ingest, so these checks are left out: "
                                f"{'; '.join(left)}. Record it from a real ingest with "
                                f"`ichbench leaderboard canonical record --dataset {name}`.")
    return report


SYMLINK = ("a symbolic link; entries are plain files inside entries/, never links (to files "
           "elsewhere)")


def _reject_duplicate_numbers(report: Report, others: dict[str, dict]) -> None:
    candidates = {**others, **report.entries}
    for shown in list(report.entries):
        problem = duplicate_problem(report.entries[shown], shown, candidates)
        if problem:
            report.accepted.remove(shown)
            del report.entries[shown]
            report.reject(shown, problem)


def _check_records(folder: Folder, report: Report, records: list[Path], whole: bool) -> None:
    """Reproduction records beside accepted entries (every entry's, when validating the folder)."""
    if whole and folder.entries_dir.is_dir():
        records = sorted(folder.entries_dir.glob(f"*/*{SUFFIX}"))
    for path in records:
        shown = folder.rel(path)
        entry_shown = folder.rel(entry_of(path))
        entry = report.entries.get(entry_shown)
        if entry is None:
            if not entry_of(path).exists():
                report.reject(shown, f"reproduction records of {entry_of(path).name}, which does "
                                     "not exist")
            continue   # else its entry is rejected, which says why
        data = _load_entry(path, shown, report)
        if data is None:
            continue
        problems = record_problems(data, entry, entry_of(path).name)
        if problems:
            report.reject(shown, problems)
            continue
        report.accepted.append(shown)
        report.reproductions[entry_shown] = data["records"]


def _all_entry_files(folder: Folder, report: Report) -> list[Path]:
    out = []
    if not folder.entries_dir.is_dir():
        return out
    # walked by hand: rglob neither reports nor enters a symlinked folder, and one must be refused
    pending = [folder.entries_dir]
    while pending:
        for path in sorted(pending.pop().iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_symlink():
                report.reject(_shown(folder, path), SYMLINK)
            elif path.is_dir():
                pending.append(path)
            elif path.is_file():
                rel = path.relative_to(folder.entries_dir)
                if len(rel.parts) == 2 and is_record_file(path):
                    continue   # reproduction records: checked with their entry
                if len(rel.parts) != 2 or path.suffix != ".json":
                    report.reject(folder.rel(path), "not an entry: entries are "
                                                    "entries/<dataset>/<method>--<run id>.json")
                    continue
                out.append(path)
    return sorted(out)


def _shown(folder: Folder, path: Path) -> str:
    """A link's own path as shown (folder.rel resolves, which would name the link's target)."""
    try:
        return str(path.relative_to(folder.root.parent))
    except ValueError:
        return str(path)


def _linked(folder: Folder, path: Path) -> bool:
    """Whether `path`, or a folder between the leaderboard folder and it, is a symbolic link."""
    path = Path(path).absolute()
    if path.is_symlink():
        return True
    try:
        parts = path.relative_to(folder.root.absolute()).parts
    except ValueError:
        return False   # a file outside the folder, checked before it is submitted
    return any(folder.root.joinpath(*parts[:i]).is_symlink() for i in range(1, len(parts)))


def _check_schema_copy(folder: Folder, report: Report) -> None:
    shown = folder.rel(folder.schema)
    if not folder.schema.exists():
        report.reject(shown, "missing: `ichbench leaderboard render` writes it")
        return
    try:
        copy = read_json(folder.schema, shown=shown)
    except IchbenchError as exc:
        report.reject(shown, getattr(exc, "problem", str(exc)))
        return
    if copy != ENTRY_SCHEMA:
        report.reject(shown, "differs from the schema ichbench validates with (edit ichbench/leaderboard/schema.py "
                             "instead, then render)")
