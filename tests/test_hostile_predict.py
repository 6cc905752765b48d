"""`ichbench predict` against hostile input (issue 26 §1): NIfTI headers that claim more than
their file holds, an output folder that already holds a prediction, checkpoints that are not
ichbench's (a pickle that would run code among them), Ctrl-C, and an output folder that cannot
be written. Each is one line on stderr naming what is wrong, and nothing is lost or left over.

The model is a tiny U-Net with random weights saved the way a fold saves `model.pt` (no training:
only the path from file to outputs is under test), the scan a small synthetic NIfTI volume.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ichbench.cli.main import main
from ichbench.errors import InputError
from ichbench.predict import read_scan
from tests.procs import sigint_at_default

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A fold model as `ichbench run` writes it, with an untrained 4-channel U-Net."""
    from ichbench.models.unet import UNet
    from ichbench.resolve import resolve
    from ichbench.train.engine import save_model

    cfg = resolve("unet_mixed", "phantom", "smoke", ["model.base_channels=4"])
    mc = cfg.to_dict()["model"]
    torch.manual_seed(0)
    net = UNet(base=mc["base_channels"], depth=mc["depth"], encoder_growth=mc.get("encoder_growth", "first"))

    class Method:
        name = "unet_mixed"
    return save_model(tmp_path_factory.mktemp("model") / "model.pt", net, Method, cfg, 0, 64)


def write_ct(path: Path, shape=(64, 64, 4)) -> Path:
    hu = np.full(shape, -1000, np.int16)
    hu[16:48, 16:48] = 40
    nib.save(nib.Nifti1Image(hu, np.diag([0.5, 0.5, 5.0, 1.0])), str(path))
    return path


@pytest.fixture
def ct(tmp_path) -> Path:
    return write_ct(tmp_path / "ct.nii.gz")


def call(monkeypatch, capsys, tmp_path, *args) -> tuple[int, str, str]:
    """`ichbench predict ARGS` in-process, as the `ichbench` script runs it."""
    monkeypatch.setattr(sys, "argv", ["ichbench", "--home", str(tmp_path / "home"), "predict", "--device", "cpu",
                                      *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def one_line(code: int, err: str) -> str:
    lines = err.splitlines()
    assert code not in (0, None) and len(lines) == 1 and "Traceback" not in err, (code, err)
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary or replaced folders that predict made beside its output."""
    return sorted(p.name for p in folder.iterdir() if ".predict-" in p.name or ".replaced-" in p.name)


# -- NIfTI headers that claim more than the file holds -------------------------------------------

def header(shape, dtype=np.int16) -> bytes:
    """A real NIfTI-1 single-file header (and its 4 extension bytes) claiming `shape` voxels."""
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(dtype)
    h.set_zooms((0.5, 0.5, 5.0))
    h.set_sform(np.eye(4), code=1)
    h.set_data_offset(352)
    buf = io.BytesIO()
    h.write_to(buf)
    return buf.getvalue() + b"\0" * 4


def _header_only_gz(path: Path, shape) -> None:
    path.write_bytes(gzip.compress(header(shape)))


def _truncated_gz(path: Path, shape) -> None:
    """A real volume's .nii.gz cut short: the header intact, most of its voxels gone (noise, so
    that a third of the file is well past the header)."""
    noise = np.random.default_rng(0).integers(-1000, 1000, shape, np.int16)
    nib.save(nib.Nifti1Image(noise, np.eye(4)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 3])


def _short_multi_member_gz(path: Path, shape) -> None:
    """Two gzip members (as concatenated files are) that together hold an eighth of the claim:
    the trailer speaks for the last member only, so the stream must be counted."""
    body = header(shape) + np.random.default_rng(0).integers(-1000, 1000, 64 * 64 * 8, np.int16).tobytes()
    path.write_bytes(gzip.compress(body[:1000]) + gzip.compress(body[1000:]))


def _short_nii(path: Path, shape) -> None:
    path.write_bytes(header(shape) + b"\0" * 4096)


def _sparse_huge_nii(path: Path, shape) -> None:
    """A .nii as long as its header says (sparse: no disk used), with more voxels than the limit."""
    path.write_bytes(header(shape, np.uint8))
    with open(path, "r+b") as fh:
        fh.truncate(352 + int(np.prod(shape)))


# (file, writer, claimed shape, what the one line must say besides the file's name)
HEADERS = [
    ("big.nii.gz", _header_only_gz, (4096, 4096, 512),
     "header claims 4096 x 4096 x 512 voxels (17.2 GB) but the file holds {size}"),
    ("two_gib.nii.gz", _header_only_gz, (1024, 1024, 1024),
     "header claims 1024 x 1024 x 1024 voxels (2.1 GB) but the file holds {size}"),
    ("cut.nii.gz", _truncated_gz, (64, 64, 4), "but the file holds {size}, "),
    ("members.nii.gz", _short_multi_member_gz, (64, 64, 64), "(524.6 KB) but the file holds {size}, "),
    ("short.nii", _short_nii, (512, 512, 300), "voxels (157.3 MB) but the file holds 4.5 KB"),
    ("huge.nii", _sparse_huge_nii, (2048, 1024, 1024), "more than the 1073741824 (2**30) voxels"),
]


@pytest.mark.parametrize("name, write, shape, says", HEADERS, ids=[h[0] for h in HEADERS])
def test_a_header_claiming_more_than_its_file_is_refused_before_reading(
        name, write, shape, says, model, tmp_path, monkeypatch, capsys):
    """One line naming the file, the claim and what the file holds, and nothing allocated for
    the claim (issue 26: a 74-byte file took 148 s to refuse; a 2 GiB claim peaked at 2.4 GB)."""
    path = tmp_path / name
    write(path, shape)
    size = path.stat().st_size
    says = says.format(size=f"{size} bytes" if size < 1000 else f"{size / 1000:.1f} KB")   # files under 1 MB
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as refused:
            read_scan(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB allocated before refusing"
    assert str(refused.value).startswith(f"{path}: ") and says in str(refused.value), str(refused.value)
    code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", path, "-o", tmp_path / "out")
    line = one_line(code, err)
    assert line == f"ichbench: error: {refused.value}"
    assert not (tmp_path / "out").exists()


def test_gzip_files_that_hold_what_they_claim_still_load(tmp_path):
    """The size check refuses no real file: single-member (nibabel's own), several members, and
    zero padding after the stream (which some tools add) read the same voxels."""
    from ichbench.datasets.nifti_io import load_ct
    ct = write_ct(tmp_path / "ct.nii.gz", (64, 64, 8))
    raw = gzip.decompress(ct.read_bytes())
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    (tmp_path / "padded.nii.gz").write_bytes(ct.read_bytes() + b"\0" * 512)
    want = load_ct(ct).data
    for name in ("members.nii.gz", "padded.nii.gz"):
        assert np.array_equal(load_ct(tmp_path / name).data, want), name


# -- the output folder --------------------------------------------------------------------------

def test_a_folder_holding_a_prediction_is_refused_and_force_replaces_it_whole(
        model, ct, tmp_path, monkeypatch, capsys):
    """Issue 26: `mask.dcm` of another scan stayed beside a NIfTI input's outputs, and
    report.json listed 3 outputs in a folder of 4."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"mask.dcm": b"SEG of another scan", "report.json": b"{}", "notes.txt": b"mine"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", ct, "-o", out)
    assert f"--output {out}: the folder is not empty" in one_line(code, err) and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier

    code, stdout, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", ct, "-o", out,
                             "--force", "--json")
    assert code in (0, None) and "Traceback" not in err, err
    listed = json.loads(stdout)["outputs"]
    assert sorted(p.name for p in out.iterdir()) == sorted(listed) == ["mask.nii.gz", "overlay.png", "report.json"]
    assert leftovers(tmp_path) == []


def test_force_never_replaces_a_folder_holding_what_predict_reads(model, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    ct = write_ct(data / "ct.nii.gz")
    code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", ct, "-o", data, "--force")
    assert f"--output {data}: holds {ct}, which this command reads" in one_line(code, err)
    assert sorted(p.name for p in data.iterdir()) == ["ct.nii.gz"] and leftovers(tmp_path) == []


def test_an_unwritable_output_folder_is_named_not_the_temporary_one(model, ct, tmp_path, monkeypatch, capsys):
    """Root writes through chmod, so the folder that cannot be written is one under /sys; as any
    other user, also the issue's case: an existing read-only output folder."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux /sys")
    out = Path("/sys/kernel/ichbench-predict-out")
    code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", ct, "-o", out)
    line = one_line(code, err)
    assert line.startswith(f"ichbench: error: --output {out}: cannot write the outputs there"), line
    assert ".predict-" not in line
    if os.geteuid() == 0:
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", model, "-i", ct, "-o", ro)
        assert f"--output {ro}: the folder is read-only" in one_line(code, err)
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == [] and leftovers(tmp_path) == []


# -- checkpoints that are not ichbench's ----------------------------------------------------------

class _Hostile:
    """Unpickled by a trusting loader, this creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _hostile_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Hostile(marker)))


def _hostile_pickle_v2(path: Path, marker: Path) -> None:
    """Protocol 2, the one torch's legacy format uses: the safe loader sees the call it names."""
    path.write_bytes(pickle.dumps(_Hostile(marker), protocol=2))


def _hostile_in_torch_zip(path: Path, marker: Path) -> None:
    torch.save({"kind": "segmentation_model", "state": _Hostile(marker)}, path)


def _random_bytes(path: Path, marker: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(4096))


def _legacy_module(path: Path, marker: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=False)


def _foreign_list(path: Path, marker: Path) -> None:
    torch.save([torch.zeros(2)], path)


MKDIR = f"{os.mkdir.__module__}.mkdir"    # posix.mkdir
CHECKPOINTS = [
    (_hostile_pickle, "not a checkpoint torch can read"),
    (_hostile_pickle_v2, f"it names {MKDIR}, which no ichbench model holds; nothing in it was run"),
    (_hostile_in_torch_zip, f"it names {MKDIR}"),
    (_random_bytes, "not a checkpoint torch can read"),
    (_legacy_module, "it names torch.nn.modules.linear.Linear, which no ichbench model holds"),
    (_foreign_list, "(a list saved by another program)"),
]


@pytest.mark.parametrize("write, says", CHECKPOINTS, ids=[c[0].__name__.strip("_") for c in CHECKPOINTS])
def test_a_checkpoint_that_is_not_an_ichbench_model_is_one_line(write, says, ct, tmp_path, monkeypatch, capsys):
    """torch's 6-8 lines (and their advice to load with weights_only=False) become one line
    naming the file; a pickle that would run code does not run."""
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    write(path, marker)
    code, _, err = call(monkeypatch, capsys, tmp_path, "--checkpoint", path, "-i", ct, "-o", tmp_path / "out")
    line = one_line(code, err)
    assert line.startswith(f"ichbench: error: {path}: not an ichbench model (") and says in line, line
    assert "weights_only" not in line and "trust" not in line
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- Ctrl-C ---------------------------------------------------------------------------------------

def _interrupt_while_writing(argv, env, out: Path, attempts: int = 5) -> str:
    """Start `argv` and send SIGINT while its temporary output folder exists and the last file is
    not yet in it; returns its stderr (exit 130 asserted). A run that finished before the poll
    caught the window (a loaded machine) is not the behaviour under test: its outputs are put back
    as they were and it is started again, up to `attempts` times."""
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else None
    for _ in range(attempts):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_at_default)
        tmp = out.parent / f".{out.name}.predict-{proc.pid}"
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if tmp.is_dir() and not (tmp / "overlay.png").exists():   # writing, not yet swapping
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 130, (out.name, proc.returncode, err)
                return err
            time.sleep(0.002)
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"{out.name}: never caught writing in 240 s")
        assert proc.returncode == 0, proc.stderr.read()   # missed the window: undo its outputs, try again
        shutil.rmtree(out)
        if before is not None:
            out.mkdir()
            for name, data in before.items():
                (out / name).write_bytes(data)
    pytest.fail(f"{out.name}: finished before the interrupt {attempts} times")


@pytest.mark.slow
def test_ctrl_c_while_writing_says_interrupted_and_leaves_nothing(model, tmp_path):
    """Two real commands interrupted while writing their outputs (their temporary folder exists):
    one into a new folder, which must not appear; one replacing an earlier set with --force,
    which must be back as it was. Exit 130, one line, no temporary or replaced folder left."""
    ct = write_ct(tmp_path / "ct.nii.gz", (256, 256, 24))   # an overlay of many slices: time to catch it
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "report.json").write_bytes(b'{"earlier": true}')
    env = {**os.environ, "ICHBENCH_HOME": str(tmp_path / "home")}
    for out, extra in ((tmp_path / "new", []), (kept, ["--force"])):
        argv = [sys.executable, "-m", "ichbench.cli.main", "predict", "--device", "cpu", "--checkpoint",
                str(model), "-i", str(ct), "-o", str(out), *extra]
        err = _interrupt_while_writing(argv, env, out)
        assert err == f"ichbench: interrupted; nothing written, {out} left as it was\n", err
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == {"report.json": b'{"earlier": true}'}
    assert leftovers(tmp_path) == []
