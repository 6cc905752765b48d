"""Run a server command (`mlflow ui`) so that stopping ichbench stops all of it.

`mlflow ui` forks uvicorn workers, a job runner and huey consumers. Killing only the direct child
leaves them serving, and the terminal's Ctrl-C reaching every one of them makes uvicorn wait for
its graceful shutdown. So the command gets its own session (one process group, out of reach of
the terminal's signals), and a SIGINT, SIGTERM or SIGHUP to ichbench becomes a SIGTERM to that
whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists, owned by someone else
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(proc: subprocess.Popen, until: float) -> bool:
    """Reap the leader and wait for every process of its group to end; False at the deadline."""
    while True:
        proc.poll()  # an unreaped leader would still count as a member of the group
        if not group_alive(proc.pid):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the group, SIGKILL to whatever is left after `grace` seconds."""
    _signal_group(proc.pid, signal.SIGTERM)
    if _wait_group(proc, time.monotonic() + grace):
        return
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_group(proc, time.monotonic() + 5.0)  # orphans are reaped by init a moment later


def run_group(cmd: list[str], grace: float = 5.0) -> tuple[int, int | None]:
    """Run `cmd` in its own session until it exits or ichbench gets a stop signal.

    Returns (exit code, signal): the command's own exit code and None, or 128 + the signal's
    number and the signal once the whole group has been stopped.
    """
    received: list[int] = []
    waiting = [True]  # raise out of the wait only once, and never after it

    def on_signal(signum, _frame):
        if not received:
            received.append(signum)
        if waiting[0]:
            waiting[0] = False
            raise _Stop()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    proc = None
    try:
        try:
            proc = subprocess.Popen(cmd, start_new_session=True)
            code = proc.wait()
            waiting[0] = False
        except _Stop:
            code = None
        if not received:
            return code, None
        if proc is not None:
            stop_group(proc, grace)
        return 128 + received[0], received[0]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
