"""Which processes are alive, from /proc (Linux): for tests that a stopped command left nothing."""

from __future__ import annotations

import os
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
