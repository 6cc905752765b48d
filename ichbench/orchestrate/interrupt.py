"""Ctrl-C while a local Ray cluster starts: stop everything it started, then say so.

Ray's processes block SIGINT, so the terminal's Ctrl-C reaches only the driver. Raised in the
middle of `ray.init`, a KeyboardInterrupt left Ray's agents (children of a raylet that died)
running for minutes and once crashed the interpreter, because `ray.shutdown()` does not know a
node whose start was cut short. So during `ray.init` the first SIGINT is only noted (and said at
once); `ray.init` finishes, `ray.shutdown()` stops the cluster the normal way, and the caller gets
its KeyboardInterrupt. A second SIGINT raises at once. Either way, whatever is left of this
driver's Ray session is then found by its session name (which ends in the driver's pid) and by
descent from the driver, and terminated.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from contextlib import contextmanager

GRACE_S = 3.0   # SIGTERM, then SIGKILL for what is still there


class Pending:
    """Whether a SIGINT arrived while it was deferred."""

    def __init__(self) -> None:
        self.hit = False


@contextmanager
def deferred_sigint(message: str):
    """Within the block the first SIGINT prints `message` and is noted in the yielded `Pending`;
    a second raises KeyboardInterrupt. Outside the main thread signals cannot be handled: no-op."""
    pending = Pending()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def on_sigint(_signum, _frame):
        if pending.hit:
            raise KeyboardInterrupt
        pending.hit = True
        try:
            print(f"ichbench: {message}", file=sys.stderr, flush=True)
        except OSError:   # the terminal went away
            pass

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)


def _session_pattern(pid: int) -> re.Pattern:
    # Ray names a local cluster's session `session_<date>_<time>_<microseconds>_<driver pid>` and
    # passes it (or the session dir) to every process it starts.
    return re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{pid}(?!\d)")


def _psutil():
    """Ray ships psutil (ray/thirdparty_files, on sys.path once ray is imported); without it the
    clean-up is `ray.shutdown()` alone."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def children() -> set[int]:
    """Pids of this process's descendants (to leave alone those that were there before Ray)."""
    psutil = _psutil()
    if psutil is None:
        return set()
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def session_processes(pid: int | None = None, exclude=frozenset()) -> list:
    """psutil processes of the local Ray cluster driver `pid` (default: this one) started: its
    descendants not in `exclude` and any process whose command line names its session."""
    psutil = _psutil()
    if psutil is None:
        return []
    pid = os.getpid() if pid is None else pid
    found = {}
    try:
        for p in psutil.Process(pid).children(recursive=True):
            if p.pid not in exclude:
                found[p.pid] = p
    except psutil.Error:
        pass
    pattern = _session_pattern(pid)
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != pid and pattern.search(" ".join(p.info["cmdline"] or ())):
                found.setdefault(p.pid, p)
        except psutil.Error:
            continue
    return list(found.values())


def stop_session(exclude=frozenset(), grace: float = GRACE_S) -> None:
    """Terminate what is left of this driver's local Ray session (after `ray.shutdown()`);
    descendants in `exclude` were there before Ray started and are left alone."""
    psutil = _psutil()
    if psutil is None:
        return
    for _ in range(2):   # a dying raylet may have started one more worker: look twice
        procs = session_processes(exclude=exclude)
        if not procs:
            return
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace)


def shut_down_started_cluster(ray, exclude=frozenset()) -> None:
    """After an interrupted start: `ray.shutdown()`, then the sweep; no SIGINT can cut it short."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - a half-started node; the sweep below stops it
            pass
        stop_session(exclude)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
