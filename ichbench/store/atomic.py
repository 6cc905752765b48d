"""Write-then-rename for store directories.

A store is built at `.NAME.tmp-PID` beside its final path. Publishing renames any previous store
to `.NAME.old`, renames the new one into place and deletes the old one. A process killed at any
point leaves either the previous store or the new one at the final path, or — killed between the
two renames — the previous one at `.NAME.old`, which `recover` puts back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def tmp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.tmp-{os.getpid()}"


def _old_path(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(final: Path) -> None:
    """Undo what a killed writer left: restore an interrupted swap, remove dead writers' temps."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = _old_path(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, final: Path) -> None:
    old = _old_path(final)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
