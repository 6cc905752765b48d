"""The paper's published rows (Table 3), kept byte-for-byte as committed.

They ship twice, byte-identical: in the repository's leaderboard folder (`leaderboard/published/`,
validated and rendered with the entries) and inside the package (`ichbench/leaderboard/tables/`,
so an installed wheel prints the paper's rows beside a run's). Both are read through
`rows_of`, which checks the pinned sha256; an edited copy is an error, never silently dropped.

Published figures cannot be re-scored (there are no per-volume values), so the only protection
against an edited row is its hash: the sha256 of each published file is pinned here, in code,
where a change is a visible code change rather than a data edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ichbench.errors import InputError
from ichbench.leaderboard.jsonio import read_json, sha256_file
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.schema import published_problems

PUBLISHED_SHA256 = {
    "spahr2023.json": "b3f640c82d25295b6120b1a438009adb2ad418d8c8061b5d7bed405dc3e259fe",
}


@dataclass
class PublishedRow:
    dataset: str
    method: str
    label: str
    groups: dict  # {"all"|"ich": {"n", "dice": {"mean", "std"}, ...}} in percent
    bold: list
    source: str  # the file's name, e.g. spahr2023.json
    citation: str


def check_published(path: Path, shown: str) -> list[str]:
    """Problems with one published file (empty when it is exactly the pinned one)."""
    expected = PUBLISHED_SHA256.get(path.name)
    if expected is None:
        return [f"not a known published table (known: {', '.join(sorted(PUBLISHED_SHA256))}); "
                "published rows are added by a code change that pins their sha256"]
    table = read_json(path, shown=shown)
    problems = published_problems(table)
    got = sha256_file(path)
    if got != expected:
        problems.append(f"published rows were edited: sha256 {got[:12]}… differs from the pinned {expected[:12]}…")
    return problems


PACKAGED = Path(__file__).parent / "tables"


def rows_of(path: Path, shown: str) -> list[PublishedRow]:
    """The rows of one published table; InputError unless it is byte-identical to the pinned one."""
    problems = check_published(path, shown)
    if problems:
        raise InputError(shown, problems[0])
    table = read_json(path, shown=shown)
    return [PublishedRow(dataset=r["dataset"], method=r["method"], label=r["label"],
                         groups={"all": r["all"], "ich": r["ich"]}, bold=r["bold"],
                         source=path.name, citation=table["source"].get("citation", ""))
            for r in table["rows"]]


def packaged_rows() -> list[PublishedRow]:
    """Every published table shipped inside the package (what `ichbench run` prints beside its own
    numbers, installed from a wheel or not)."""
    return [row for path in sorted(PACKAGED.glob("*.json"))
            for row in rows_of(path, f"ichbench/leaderboard/tables/{path.name}")]


def load_published(folder: Folder) -> list[PublishedRow]:
    rows = []
    for path in folder.published_files():
        # Only byte-identical pinned tables are shown: an edited copy is never rendered as the paper's
        # (validate reports it; the page goes on without it).
        if PUBLISHED_SHA256.get(path.name) != sha256_file(path):
            continue
        rows += rows_of(path, folder.rel(path))
    return rows


def paper_labels(folder: Folder) -> dict[str, str]:
    """method name -> the paper's label for it (for display)."""
    try:
        return {r.method: r.label for r in load_published(folder)}
    except InputError:
        return {}
