"""`ichbench ui`: the MLflow UI on loopback, stopped whole by one signal, and a port in use refused."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow   # starts the MLflow server


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_serves_the_tracking_store_on_loopback(home, tmp_path, sig):
    """`ichbench ui` serves on 127.0.0.1, and one SIGTERM (`kill PID`) or SIGINT (Ctrl-C) to ichbench
    stops the MLflow server with all its workers and frees the port."""
    import socket
    import urllib.request

    from tests.procs import alive_in_session, children
    log = tmp_path / "ui.log"
    server = proc = None
    try:
        # A free port is only free until someone takes it: another worker's Ray may, between the
        # probe and the server's bind. Then `ichbench ui` refuses it in one line; take another.
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "ichbench.cli.main", "ui", "--port", str(port)],
                                        env={**os.environ, "ICHBENCH_HOME": str(home)}, start_new_session=True,
                                        stdout=out, stderr=subprocess.STDOUT)
            deadline, body = time.time() + 120, None
            while time.time() < deadline and body is None and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search"
                                                "?max_results=10", timeout=2) as r:
                        body = json.loads(r.read())
                except (OSError, ValueError):
                    time.sleep(0.5)
            if body is not None or "is in use" not in log.read_text():
                break
        assert body is not None, "the MLflow UI never answered: " + log.read_text()[-2000:]
        assert "experiments" in body
        # mlflow runs in a session of its own, out of reach of the terminal's Ctrl-C
        [(server, session)] = children(proc.pid)
        assert session == server and len(alive_in_session(server)) > 1  # its workers too
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == 128 + sig
        with pytest.raises(ProcessLookupError):
            os.killpg(server, 0)
        assert alive_in_session(server) == [] and alive_in_session(proc.pid) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        lines = log.read_text().splitlines()
        assert f"ichbench ui: stopped the MLflow UI ({sig.name})" in lines
    finally:
        for pgid in (server, proc.pid if proc else None):
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            proc.wait(timeout=30)


def test_ui_refuses_a_port_in_use(home):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "ichbench.cli.main", "ui", "--port", str(port)],
                             env={**os.environ, "ICHBENCH_HOME": str(home)}, capture_output=True, text=True,
                             timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"ichbench: error: port {port} on 127.0.0.1 is in use; choose another with --port"
