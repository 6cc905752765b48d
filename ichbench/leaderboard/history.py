"""Which of two entries was on the leaderboard first, for the duplicate checks.

A copier chooses everything inside a copied entry (method, run id, date) and its file name, but
not when its file entered the leaderboard's git history: after the original's. So an entry file
committed earlier is earlier; one not committed yet (untracked or staged) comes after every
committed one. Between files added in the same commit, and outside a git checkout (a folder copy,
an unpacked archive), the submission each entry records decides: its `date` (when its MLflow run
ended, as `submit` wrote it), then its path. That fallback is only as good as the dates, which a
copier can backdate: validate the leaderboard in its checkout, with its full history.
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
import subprocess
from dataclasses import dataclass

from ichbench.leaderboard.paths import Folder

GIT_TIMEOUT_S = 60


def _git(folder: Folder, *args: str) -> bytes | None:
    """git's output in the folder; None without git, outside a checkout or on any failure."""
    git = shutil.which("git")
    if git is None or not folder.root.is_dir():
        return None
    try:
        out = subprocess.run([git, *args], cwd=folder.root, capture_output=True, timeout=GIT_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def additions(folder: Folder) -> dict[str, int] | None:
    """Shown path (`folder.rel`) -> position of the commit that added the file there now (0: the
    oldest), for every file git history holds under entries/; None outside a git checkout (or one
    without commits: nothing is committed) or without git. A path deleted and added again counts
    from its last addition: a copy written at the path of an entry removed long ago is new."""
    # --topo-order: a parent before its children whatever the commit dates say (they are chosen
    # too); --no-renames: a file moved to a new path counts as added there.
    out = _git(folder, "log", "--reverse", "--topo-order", "--no-renames", "--diff-filter=A", "--name-only",
               "--relative", "--no-show-signature", "-z", "--format=%x01", "--", "entries")
    if out is None:
        return None
    added: dict[str, int] = {}
    for i, commit in enumerate(out.decode("utf-8", "surrogateescape").split("\x01")[1:]):
        for name in commit.split("\0"):
            name = name[1:] if name.startswith("\n") else name   # git puts one newline before the names
            if name:
                added[folder.rel(folder.root / name)] = i   # oldest first: the last addition stays
    return added


def _when(entry) -> float:
    try:
        return _dt.datetime.fromisoformat(str(entry.get("date"))).timestamp()
    except (ValueError, TypeError, AttributeError, OverflowError):
        return math.inf


@dataclass(frozen=True)
class Order:
    """Sort key of an entry: committed before not, then by first-adding commit, then its date and path."""
    added: dict[str, int] | None
    shallow: bool = False   # a shallow clone: every older entry looks added in its first commit

    @classmethod
    def of(cls, folder: Folder) -> "Order":
        added = additions(folder)
        shallow = added is not None and _git(folder, "rev-parse", "--is-shallow-repository") == b"true\n"
        return cls(added, shallow)

    def key(self, shown: str, entry) -> tuple:
        commit = None if self.added is None else self.added.get(shown)
        return (commit is None, commit or 0, _when(entry), shown)


FALLBACK = Order(None)   # outside git: the recorded submission (date), then the path
