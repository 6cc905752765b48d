"""Names of methods and datasets, and the paths built from names.

A method or dataset name becomes a folder (`runs/<dataset>/<method>/`, `stores/<dataset>/`, ...)
and a command-line argument, so it is held to one pattern: lowercase ASCII letters, digits and
underscores, starting with a letter, at most 64 characters. A plugin registering another name
is refused at registration (`plugins/manager.py`).

Every path built from a name goes through `inside`, which refuses a part that is not one plain
folder or file name and a result outside its root, so no name (a plugin's, an entry's, a
`--set pretrain_dataset=`) can reach outside `$ICHBENCH_HOME` or the leaderboard folder. The check
is on the names, not on the disk: a store folder the user symlinked to a bigger disk still works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ichbench.errors import IchbenchError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def name_problem(name) -> str | None:
    """Why `name` cannot be a method or dataset name; None when it can."""
    if not isinstance(name, str):
        return f"a name is a string, not {type(name).__name__}"
    if _NAME.fullmatch(name):
        return None
    return ("not a valid name (lowercase letters, digits and underscores, starting with a "
            "letter, at most 64 characters)")


class PathEscapeError(IchbenchError):
    """A path built from a name would leave its root folder."""


def _part_problem(part: str) -> str | None:
    if not part:
        return "an empty name"
    if part in (".", ".."):
        return f"{part!r} names a folder, not an item in it"
    if "/" in part or "\\" in part or os.sep in part or "\0" in part:
        return f"{part!r} is not a single file or folder name"
    return None


def inside(root: str | Path, *parts: str) -> Path:
    """`root / part / ...`, each part one plain name and the result under `root` (lexically)."""
    root = Path(root)
    for part in parts:
        problem = _part_problem(str(part))
        if problem:
            raise PathEscapeError(f"refusing a path under {root}: {problem}")
    path = root.joinpath(*map(str, parts))
    top = os.path.normpath(root)
    if os.path.commonpath([top, os.path.normpath(path)]) != top:
        raise PathEscapeError(f"refusing {path}: it is not inside {root}")
    return path
