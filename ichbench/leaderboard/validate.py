"""Validation of the leaderboard folder: every rejection names the file and the reason.

Checks, per entry: size limit and strict JSON, that it is a plain file, then the checks of its
content (checks.py: schema, identifiers, claims, placement, rows, summary, split, canonical.json).
Across entries: one entry per MLflow run, and no two runs with the same per-volume counts, the
entry that came later being the duplicate (history.py: by git history, else recorded dates);
reproduction records against their entries (reproductions.py). Folder-wide: the published tables
byte-identical to the pinned ones, canonical.json consistent, the schema copy unchanged. Whatever
canonical.json cannot support yet is reported as a note, never passed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ichbench.errors import IchbenchError
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.claims import duplicate_problem
from ichbench.leaderboard.history import Order
from ichbench.leaderboard.jsonio import read_json
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.published import check_published
from ichbench.leaderboard.reproductions import SUFFIX, entry_of, is_record_file, record_problems
from ichbench.leaderboard.schema import ENTRY_SCHEMA, printable


@dataclass
class Rejection:
    path: str
    reason: str

    def __str__(self) -> str:   # one line, whatever a file name or a quoted value holds
        return printable(f"REJECT {self.path}: {self.reason}")


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
        return [printable(line) for line in out]


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
    others: dict[str, dict] = {}
    if not whole:
        chosen = {p.resolve() for p in targets}
        for path in folder.entry_files():
            if path.resolve() in chosen or path.suffix != ".json" or _linked(folder, path):
                continue
            try:
                others[folder.rel(path)] = read_json(path, shown=folder.rel(path))
            except IchbenchError:
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
        if problems:
            report.reject(shown, problems)
            continue
        report.accepted.append(shown)
        report.entries[shown] = entry
    if report.entries:
        order = Order.of(folder)
        _reject_duplicate_runs(report, others, order)
        _reject_duplicate_numbers(report, others, order)
        if order.shallow:
            report.notes.append("the leaderboard's git checkout is shallow: entries older than its history "
                                "look added in its first commit, and their dates decide which duplicates "
                                "which; fetch the full history (`git fetch --unshallow`)")
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


def _drop(report: Report, shown: str, problem: str) -> None:
    report.accepted.remove(shown)
    del report.entries[shown]
    report.reject(shown, problem)


def _reject_duplicate_runs(report: Report, others: dict[str, dict], order: Order) -> None:
    """One entry per MLflow run: the one on the leaderboard first keeps it."""
    candidates = {**others, **report.entries}
    for shown, entry in list(report.entries.items()):
        run, mine = entry["mlflow_run_id"], order.key(shown, entry)
        first = min(((order.key(where, o), where) for where, o in candidates.items()
                     if where != shown and isinstance(o, dict) and o.get("mlflow_run_id") == run),
                    default=None)
        if first is not None and first[0] < mine:
            _drop(report, shown, f"duplicate: MLflow run {run} is already on the leaderboard as {first[1]}")


def _reject_duplicate_numbers(report: Report, others: dict[str, dict], order: Order) -> None:
    candidates = {**others, **report.entries}
    for shown in list(report.entries):
        problem = duplicate_problem(report.entries[shown], shown, candidates, order)
        if problem:
            _drop(report, shown, problem)


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
