"""Which code produced a method: the commit of the source its class was imported from.

A run records it (tag `ichbench.plugin_commit`) and a leaderboard entry carries it as
`code.commit`, so a plugin method's entry names the plugin's code, not ichbench's (which is kept
apart as `ichbench_commit`). Light: git and importlib.metadata only, no torch.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def source_commit(path: Path | str) -> str | None:
    """HEAD of the git work tree that tracks the file `path`, with `-dirty` appended when its
    folder differs from HEAD (changed or new files): the commit then does not describe the code.
    None when git does not track the file, e.g. a wheel installed into an ignored `.venv` inside
    some other repository, whose HEAD would describe the wrong code."""
    path = Path(path).resolve()
    folder = path.parent
    tracked = _git(folder, "ls-files", "--error-unmatch", "--", path.name)
    if tracked is None or tracked.returncode != 0:
        return None
    head = _git(folder, "rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    status = _git(folder, "status", "--porcelain", "--", ".")
    changed = [line for line in (status.stdout.splitlines() if status is not None else [])
               if "__pycache__" not in line and not line.endswith(".pyc")]
    return head.stdout.strip() + ("-dirty" if changed else "")


def installed_commit(distribution: str | None) -> str | None:
    """The commit pip recorded for a distribution installed from a VCS URL
    (`pip install git+https://...@rev`: `vcs_info.commit_id` in its direct_url.json, PEP 610)."""
    if not distribution:
        return None
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        # found by its metadata Name, as entry points find it, whatever its folder is called
        want = _normal(distribution)
        dist = next((d for d in md.distributions() if _normal(d.metadata["Name"] or "") == want), None)
    try:
        text = dist.read_text("direct_url.json") if dist is not None else None
        commit = json.loads(text or "{}").get("vcs_info", {}).get("commit_id")
    except (ValueError, AttributeError, OSError):
        return None
    return str(commit) if commit else None


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def code_commit(obj, distribution: str | None = None) -> str | None:
    """The commit of the code that defines `obj` (a registered method or dataset): the git
    checkout its top-level package was imported from (an editable install, a source checkout on
    sys.path; `-dirty` if that package has uncommitted changes), else the commit its distribution
    was installed from, else None (unknown)."""
    module = sys.modules.get(type(obj).__module__.split(".")[0])
    where = getattr(module, "__file__", None)   # the package's __init__.py: its folder is the package
    if where is None:
        try:
            where = inspect.getfile(type(obj))
        except (TypeError, OSError):
            where = None
    return (source_commit(where) if where else None) or installed_commit(distribution)
