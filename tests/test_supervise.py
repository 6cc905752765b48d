"""`run_group`: one stop signal to ichbench stops the command's whole process group, escalating to
SIGKILL for processes that ignore SIGTERM, and the exit code says which signal it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ichbench.cli.supervise import run_group
from tests.procs import alive_in_session, children

# A shell with two children, all ignoring SIGTERM (the children inherit the ignored signal): only
# the escalation to SIGKILL can stop them.
TREE = "trap '' TERM; sleep 300 & sleep 300 & echo ready; wait; wait"
DRIVER = """
import sys
from ichbench.cli.supervise import run_group
code, sig = run_group(["sh", "-c", sys.argv[1]], grace=float(sys.argv[2]))
print("result", code, sig, flush=True)
sys.exit(code)
"""


def test_the_commands_own_exit_code_passes_through():
    assert run_group([sys.executable, "-c", "import sys; sys.exit(3)"]) == (3, None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_stops_the_whole_group(sig, tmp_path):
    # the driver's output goes to a file, not a pipe: a pipe's end comes only when every process
    # holding it is gone, so a survivor would hang the read instead of failing the check below
    log = tmp_path / "driver.out"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, TREE, "1.0"], stdout=out, text=True,
                                start_new_session=True)
    group = None
    try:
        deadline = time.monotonic() + 60
        while group is None and time.monotonic() < deadline:
            # the command runs in a session of its own, not in the driver's
            own = [p for p, session in children(proc.pid) if session == p]
            if own and len(children(own[0])) == 2:
                group = own[0]
            time.sleep(0.05)
        assert group is not None, "the command tree never started"
        assert len(alive_in_session(group)) == 3
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == 128 + sig
        assert f"result {128 + sig} {int(sig)}" in log.read_text()
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
        assert alive_in_session(group) == [] and alive_in_session(proc.pid) == []
    finally:
        for pgid in (group, proc.pid):
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(timeout=30)
