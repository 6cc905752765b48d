"""The one workspace root for stores, raw data, caches and tracking."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ichbench.errors import IchbenchError

ENV = "ICHBENCH_HOME"


def home(explicit: str | Path | None = None) -> Path:
    """`--home` wins over ICHBENCH_HOME, which wins over ~/.ichbench. Created if missing; a home
    that cannot be a writable folder is one IchbenchError naming where it came from."""
    if explicit:
        # the CLI's --home option also reads ICHBENCH_HOME: name the one the user set
        root, where = Path(explicit), ENV if os.environ.get(ENV) == str(explicit) else "--home"
    elif os.environ.get(ENV):
        root, where = Path(os.environ[ENV]), ENV
    else:
        root, where = Path.home() / ".ichbench", "the default home"
    root = root.expanduser()
    problem = _folder_problem(root)
    if problem:
        raise IchbenchError(f"{where} {root}: {problem}")
    return root.resolve()


def _folder_problem(root: Path) -> str | None:
    """Why `root` cannot be used as a writable folder (created if missing), or None."""
    if root.exists() and not root.is_dir():
        return "is a file, not a folder"
    for parent in root.parents:
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create it ({exc.strerror})"
    try:   # a real write: os.access says yes to root on read-only kernel file systems
        fd, probe = tempfile.mkstemp(prefix=".ichbench-write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"not writable ({exc.strerror})"
    return None
