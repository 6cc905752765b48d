"""Hostile store roots and the data commands (issue 26 §2), dry runs that must refuse what the
real command refuses, and Ctrl-C during `icm train` (§3).

A store root is a folder (also written `file:///FOLDER`) or `s3://BUCKET/PREFIX`; any other scheme
is one line naming those, before a filesystem object is made. A root that is a file, or an S3
endpoint nobody answers at, is one line naming the root and the problem on every data command,
never "no store yet". Each case gives exactly one stderr line, no traceback, exit 2.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from ichbench.cli.data import app as data_app
from ichbench.errors import IchbenchError
from ichbench.store.location import ENV as STORE_ENV, ObjectPath, parse
from tests.procs import sigint_at_default
from tests.cli import call as _call

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = "(a store root is a folder, file:///FOLDER or s3://BUCKET/PREFIX)"
SCHEMES = ["ftp://host/x", "http://127.0.0.1:9/x", "gcs://bucket/x", "memory://bucket/x", "FTP://host/x"]
# every `ichbench data` command, with arguments that reach the stores (checked against the app below)
DATA = {"info": ["phantom"], "verify": ["phantom"], "splits": ["phantom"],
        "ingest": ["phantom", "--size", "32", "-o", "volumes=2"],
        "export-folds": ["phantom", "--out", "refused-before-writing"]}


def _one_line(code, out, err) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err and "Exception ignored" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ichbench: error: "), err
    return lines[0]


def _cli(*args, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ichbench.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_the_table_covers_every_data_command():
    assert set(typer.main.get_command(data_app).commands) == set(DATA)


@pytest.mark.parametrize("route", ["--store-root", STORE_ENV])
@pytest.mark.parametrize("url", SCHEMES)
def test_an_unsupported_scheme_is_one_line_naming_the_supported_ones(url, route, home, monkeypatch, capsys):
    argv = ["data", "verify", "phantom"]
    if route == STORE_ENV:
        monkeypatch.setenv(STORE_ENV, url)
    else:
        argv = ["--store-root", url, *argv]
    line = _one_line(*_call(argv, monkeypatch, capsys))
    protocol = url.split(":")[0].lower()
    assert line == (f"ichbench: error: {route} {url}: store URLs of protocol {protocol!r} cannot be opened "
                    f"{SUPPORTED}")
    assert not list(home.iterdir())   # nothing made


@pytest.mark.parametrize("route", ["--store-root", STORE_ENV])
def test_the_real_command_says_it_without_a_destructor_traceback(route, tmp_path):
    """fsspec's FTPFileSystem, half made, printed "Exception ignored in ... __del__" at exit."""
    env = {"ICHBENCH_HOME": str(tmp_path), "ICHBENCH_LOAD_PLUGINS": ""}
    args = ["data", "info", "phantom"]
    if route == STORE_ENV:
        env[STORE_ENV] = "ftp://host/x"
    else:
        args = ["--store-root", "ftp://host/x", *args]
    out = _cli(*args, env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"ichbench: error: {route} ftp://host/x: store URLs of protocol 'ftp' "
                                       f"cannot be opened {SUPPORTED}"]


def test_file_urls_are_local_folders_and_schemes_ignore_case(tmp_path, home, monkeypatch, capsys):
    assert parse(f"file://{tmp_path}/stores") == tmp_path / "stores"
    assert parse(f"FILE://{tmp_path}") == tmp_path
    assert parse("S3://bucket/a/") == ObjectPath("s3://bucket/a")
    with pytest.raises(IchbenchError, match=r"^file://host/x: a file URL names an absolute folder"):
        parse("file://host/x")   # another machine's file: not silently a folder named "host"
    # through the CLI: the stores are looked for in the folder the URL names
    line = _one_line(*_call(["--store-root", f"file://{tmp_path}/elsewhere", "data", "info", "phantom",
                             "--role", "segmentation"], monkeypatch, capsys))
    assert f"no store yet at {tmp_path}/elsewhere/phantom/segmentation.zarr" in line


@pytest.mark.parametrize("command", sorted(DATA))
@pytest.mark.parametrize("below", [False, True], ids=["file", "below-a-file"])
def test_a_store_root_that_is_a_file_is_named_by_every_data_command(command, below, tmp_path, home,
                                                                    monkeypatch, capsys):
    file = tmp_path / "a_file"
    file.write_bytes(b"precious")
    root = file / "stores" if below else file
    line = _one_line(*_call(["--store-root", str(root), "data", command, *DATA[command]], monkeypatch, capsys))
    problem = f"{file} is a file, not a folder" if below else "is a file, not a folder"
    assert line == f"ichbench: error: --store-root {root}: {problem}"
    assert file.read_bytes() == b"precious" and not list(home.iterdir())   # nothing lost, nothing made


def test_a_default_store_root_that_is_a_file_is_named_too(home, monkeypatch, capsys):
    (home / "stores").write_text("not a folder")
    line = _one_line(*_call(["data", "verify", "phantom"], monkeypatch, capsys))
    assert line == f"ichbench: error: the store root {home / 'stores'}: is a file, not a folder"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", sorted(DATA))
def test_an_unreachable_s3_endpoint_is_named_by_every_data_command(command, tmp_path):
    """Real processes (botocore reads the endpoint from the environment, and fsspec caches
    filesystems per process); one attempt, so refusing takes about a second, not botocore's retries."""
    pytest.importorskip("s3fs")
    port = _closed_port()
    env = {"ICHBENCH_HOME": str(tmp_path), "ICHBENCH_LOAD_PLUGINS": "", STORE_ENV: "s3://bucket/x",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    started = time.monotonic()
    out = _cli("data", command, *DATA[command], env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("ichbench: error: s3://bucket/x: the object store failed the request "
                                 "(EndpointConnectionError: Could not connect"), out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert not (tmp_path / "raw").exists()   # ingest said it before generating any source
    assert time.monotonic() - started < 30


DRY_RUNS = [
    (["icm", "train", "--dataset", "nosuch", "--dry-run"], "unknown dataset 'nosuch'"),
    (["icm", "train", "--dataset", "rsna", "--dry-run"], "dataset 'rsna' has no 'segmentation' store"),
    (["icm", "train", "--dataset", "nosuch", "--profile", "smoke"], "unknown dataset 'nosuch'"),
    (["run", "-m", "unet_mixed", "-d", "nosuch", "--dry-run"], "unknown dataset 'nosuch'"),
    (["finetune", "-m", "unet_mixed", "-d", "nosuch", "--fold", "0", "--dry-run"], "unknown dataset 'nosuch'"),
    (["pretrain", "-m", "multilabel_dl", "-d", "nosuch", "--dry-run"], "unknown dataset 'nosuch'"),
]


@pytest.mark.parametrize("args, says", DRY_RUNS, ids=[" ".join(a) for a, _ in DRY_RUNS])
def test_a_dry_run_refuses_what_the_command_refuses(args, says, home, monkeypatch, capsys):
    line = _one_line(*_call(args, monkeypatch, capsys))
    assert says in line, line
    assert not list(home.iterdir())


# -- Ctrl-C during `icm train` -------------------------------------------------------------------

def _icm_runs(home: Path):
    from mlflow.tracking import MlflowClient
    from ichbench.tracking import default_tracking_uri
    client = MlflowClient(default_tracking_uri(home))
    exp = client.get_experiment_by_name("ichbench/phantom")
    runs = client.search_runs([exp.experiment_id], "tags.`ichbench.kind` = 'icm'") if exp else []
    return sorted(runs, key=lambda r: r.info.start_time)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"ICM worker {pid} still running after Ctrl-C")


@pytest.mark.slow
def test_ctrl_c_during_icm_train_marks_its_run_killed_and_a_rerun_resumes(phantom_home, tmp_path):
    from ichbench.train import checkpoint as ckpt
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ichbench.cli.main", "icm", "train", "--dataset", "phantom", "--profile", "smoke",
           "--set", "icm.steps_per_epoch=8"]
    # output to files: a pipe nobody reads while the test polls could fill and stall the command
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, preexec_fn=sigint_at_default)
    pattern = str(phantom_home / "icm" / "phantom" / "*" / "state_tissue.pt")
    deadline = time.time() + 180
    while time.time() < deadline and not glob.glob(pattern) and proc.poll() is None:
        time.sleep(0.1)
    assert glob.glob(pattern), "the ICM never finished an epoch: " + (tmp_path / "err").read_text()[-2000:]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, (tmp_path / "err").read_text()[-2000:]
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("ichbench: interrupted: the ICM training stopped"), err[-2000:]
    [killed] = _icm_runs(phantom_home)
    assert killed.info.status == "KILLED"
    state_path = Path(glob.glob(pattern)[0])
    _wait_gone(ckpt.load(state_path)["history"][-1]["pid"])   # the Ray worker that trained, stopped too
    done = ckpt.load(state_path)["history"]   # the epochs the interrupted command finished
    assert done and not (state_path.parent / "icm.pt").exists()

    again = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    payload = ckpt.load(state_path.parent / "icm.pt")
    tissue = payload["history"]["tissue"]
    # resumed, not redone: the finished epochs are the interrupted worker's, the rest another's
    assert len(tissue) == 4 and tissue[:len(done)] == done
    assert {h["pid"] for h in tissue[len(done):]}.isdisjoint({h["pid"] for h in done})
    first, second = _icm_runs(phantom_home)
    assert first.info.run_id == killed.info.run_id and first.info.status == "KILLED"
    assert second.info.status == "FINISHED"
