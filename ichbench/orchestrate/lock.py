"""One `ichbench run` at a time per run folder.

Two runs of the same config share one run folder, one MLflow parent and one child per fold; at
once they both trained fold 0 in the same folder and logged the parent's metrics twice. So a run
takes an exclusive advisory lock (`flock`) on `<run folder>/run.lock` before it starts work; a
second run of the same config says who holds it, waits, and then goes on as a rerun does: the
folds the first finished are reused, not trained again. The kernel drops the lock when its
holder's process ends, however it ends, so a killed run never leaves a stale lock behind.

Within one process the lock is re-entrant (`ichbench run` takes it before starting Ray, the driver
again for its plan): two `flock`s of one file from one process would block each other.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

LOCK_NAME = "run.lock"

_held: set[Path] = set()   # run folders this process holds


def _say(line: str) -> None:
    try:
        print(f"ichbench: {line}", file=sys.stderr, flush=True)
    except OSError:   # the terminal went away
        pass


def holder_text(content: str) -> str:
    """What the lock file says about its holder, as the waiting line shows it."""
    try:
        info = json.loads(content)
        started = time.strftime("%H:%M", time.localtime(float(info["started"])))
        where = "" if info.get("host") in (None, socket.gethostname()) else f" on {info['host']}"
        return f"another ichbench run (pid {int(info['pid'])}{where}, started {started})"
    except (ValueError, KeyError, TypeError):   # its holder has not written it yet
        return "another ichbench run"


@contextmanager
def run_lock(run_dir: Path, say: Callable[[str], None] = _say) -> Iterator[bool]:
    """Hold the lock of `run_dir` for the block; yields whether another run had to be waited for
    (then what it finished is on disk and in MLflow). Ctrl-C while waiting raises KeyboardInterrupt
    with nothing of this run started."""
    key = Path(run_dir).resolve()
    if key in _held:
        yield False
        return
    key.mkdir(parents=True, exist_ok=True)
    with open(key / LOCK_NAME, "a+") as f:   # "a+": opening must not erase the holder's line
        waited = _acquire(f, key, say)
        _held.add(key)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
            f.flush()
            yield waited
        finally:
            _held.discard(key)
            f.truncate(0)   # then closing the file releases the lock


def _acquire(f, run_dir: Path, say: Callable[[str], None]) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        pass
    except OSError as exc:   # a file system without locks (some network mounts): run unguarded
        say(f"cannot lock {run_dir} ({exc.strerror}): a second run of this config at the same time "
            "would repeat its work")
        return False
    f.seek(0)
    say(f"{holder_text(f.read())} is working on {run_dir}; waiting for it to finish (Ctrl-C stops waiting)")
    fcntl.flock(f, fcntl.LOCK_EX)   # a KeyboardInterrupt leaves through here, the file closed
    say(f"the other run on {run_dir} has ended; going on with what it finished")
    return True
