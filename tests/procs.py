"""Which processes are alive, from /proc (Linux): for tests that a stopped command left nothing;
and how such a command is started so that it can be stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _stats():
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            text = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue  # ended while listing
        # after "pid (comm) ": state ppid pgrp session ...; comm may hold spaces and parentheses
        state, ppid, pgrp, session = text[text.rindex(")") + 2:].split()[:4]
        yield int(d), state, int(ppid), int(pgrp), int(session)


def alive_in_session(sid: int) -> list[int]:
    """Pids of the processes (zombies aside) whose session is `sid`."""
    return [pid for pid, state, _, _, session in _stats() if session == sid and state != "Z"]


def children(pid: int) -> list[tuple[int, int]]:
    """(pid, session) of the live children of `pid`."""
    return [(p, session) for p, state, ppid, _, session in _stats() if ppid == pid and state != "Z"]


def sigint_at_default() -> None:
    """A `preexec_fn` for a command a test stops with Ctrl-C: SIGINT at its default, as a command
    typed at a terminal gets it. A suite started in the background of a non-interactive shell
    (`cmd &`, nohup, some CI runners) inherits SIGINT ignored, every process it starts inherits
    that, and Python then leaves it ignored: the command would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
