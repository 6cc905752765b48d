"""No traceback on any input (issue 15 §2): a table of hostile arguments and leaderboard entries
thrown at the command line. Each must give exactly one line on stderr naming the problem, a
non-zero exit, no "Traceback", and leave what was there unchanged.

The table runs through `ichbench.cli.main.main` in-process (what the `ichbench` script calls),
so a case that raises fails the test with the traceback; a few cases also run as a real process.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import call as _call
from tests.test_leaderboard_support import (copy_folder, flags_of, make_entry, phantom_store,
                                            write_entry)

FLAGS = {f"V{i:03d}": i % 2 == 0 for i in range(6)}
DRY = ["finetune", "-m", "unet_mixed", "-d", "phantom", "--fold", "0", "--profile", "smoke",
       "--dry-run"]
RUN = ["run", "-m", "unet_mixed", "-d", "phantom"]
TUNE = ["finetune", "-m", "unet_mixed", "-d", "phantom"]

# (arguments, what the one line must say); {file} is a plain file, {home} an empty workspace
ARGS = [
    (["--home", "{file}", "data", "info", "phantom"], "--home {file}: is a file, not a folder"),
    (["--home", "{file}/below", "data", "splits", "phantom"],
     "--home {file}/below: {file} is a file"),
    (["--home", "/proc/self/ichbench", "data", "info", "phantom"],
     "--home /proc/self/ichbench: cannot create it"),
    # unwritable: EPERM for root, EACCES for anyone else
    (["--home", "/sys/kernel/ichbench", "data", "info", "phantom"],
     "--home /sys/kernel/ichbench: cannot create it"),
    (["data", "ingest", "phantom", "--size", "0"], "--size 0: slices are resampled to SIZE x SIZE"),
    (["data", "ingest", "phantom", "--size", "-5"], "--size -5: slices are resampled"),
    (["data", "ingest", "phantom", "--size", "abc"], "Invalid value for '--size'"),
    (["data", "ingest", "phantom", "--workers", "0"], "--workers 0: need at least 1"),
    (["data", "ingest", "no_such_dataset"], "unknown dataset 'no_such_dataset'"),
    (["data", "ingest", "../../evil"], "unknown dataset '../../evil'"),
    (["data", "splits", "phantom", "--k", "0"], "--k 0: cross-validation needs at least 2 folds"),
    (["data", "splits", "phantom", "--k", "-3"], "--k -3: cross-validation needs at least 2 folds"),
    (["run", "--method", "", "-d", "phantom", "--dry-run"], "--method '' names no method"),
    (["run", "--method", ",", "-d", "phantom", "--dry-run"], "--method ',' names no method"),
    (["run", "--method", " , ,", "-d", "phantom", "--dry-run"], "names no method"),
    (RUN + ["--k", "1", "--dry-run"], "--k 1: cross-validation"),
    (RUN + ["--folds", "x", "--dry-run"], "--folds expects"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", "-m", "unet_mixed"], "Missing option '--dataset'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (TUNE + ["--fold", "99", "--dry-run"], "--fold must be in 0..4 for k=5, got 99"),
    (TUNE + ["--fold", "-1", "--dry-run"], "--fold must be in"),
    (DRY + ["--set", "finetune.lr=nan"],
     "--set finetune.lr=nan: expected a finite number, got 'nan'"),
    (DRY + ["--set", "finetune.lr=inf"], "expected a finite number, got 'inf'"),
    (DRY + ["--set", "finetune.lr=-Infinity"], "expected a finite number"),
    (DRY + ["--set", "finetune.lr=1e400"], "expected a finite number, got '1e400'"),
    (DRY + ["--set", "finetune.augment.scale=nan,1"], "expected a finite number"),
    (DRY + ["--set", 'finetune.augment={"translate": 0, "rotate": 0, "scale": [NaN, 1], '
                     '"hflip": 0}'],
     "finetune.augment.scale.0 must be a finite number"),
    (DRY + ["--set", "finetune.epochs=nan"], "--set finetune.epochs=nan"),
    (DRY + ["--set", "finetune.epochs=" + "9" * 5000], "--set finetune.epochs="),
    (DRY + ["--set", "finetune.lr=0"], "finetune.lr must be > 0, got 0.0"),
    (DRY + ["--set", "finetune.threshold=2"], "finetune.threshold must be < 1, got 2.0"),
    (DRY + ["--set", "finetune.lr"], "--set expects key=value"),
    (DRY + ["--set", "=1"], "--set expects key=value, got '=1'"),
    (DRY + ["--set", "no.such.key=1"], "unknown config key 'no.such.key'"),
    (DRY + ["--set", "pretrain_dataset=../../evil"],
     "pretrain_dataset '../../evil': not a valid name"),
    (DRY + ["--set", "model.depth=1"], "model.depth must be >= 2, got 1"),
]


def _fill(text, file, home):
    return text.replace("{file}", str(file)).replace("{home}", str(home))


@pytest.mark.parametrize("args, says", ARGS, ids=[" ".join(a)[:60] for a, _ in ARGS])
def test_hostile_arguments_give_one_line(args, says, tmp_path, monkeypatch, capsys):
    file = tmp_path / "a_file"
    file.write_bytes(b"precious")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ICHBENCH_HOME", str(home))
    args = [_fill(a, file, home) for a in args]
    if any(a.startswith(("/proc/", "/sys/")) for a in args) and not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux /proc and /sys")
    code, out, err = _call(args, monkeypatch, capsys)
    assert code not in (0, None), (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ichbench: error: "), lines[0]
    assert _fill(says, file, home) in lines[0], lines[0]
    assert file.read_bytes() == b"precious"   # nothing lost
    assert not (home / "stores").exists() and not (home / "raw").exists()   # nothing half-made


def _hostile_entries(entry):
    """(name, file text) of malformed entries, each with one problem."""
    def with_(edit):
        e = copy.deepcopy(entry)
        edit(e)
        return json.dumps(e, indent=2)

    def row(key, value):
        return lambda e: e["per_volume"][0].__setitem__(key, value)
    good = json.dumps(entry, indent=2)
    return [
        ("nested", "[" * 100_000 + "]" * 100_000, "nested deeper than the 32 levels"),
        ("nested_object", '{"a":' * 500 + "1" + "}" * 500, "nested deeper than the 32 levels"),
        ("tp_10e400", with_(row("tp", 10**400)),
         "per_volume/0/tp: 100000… (401 digits) is greater"),
        ("tp_5000_digits", good.replace('"tp": ', '"tp": ' + "1" * 5000 + "", 1),
         "a number of over 4,300 digits"),
        ("gpu_hours_1e308", with_(lambda e: e.__setitem__("gpu_hours", 1e308)),
         "gpu_hours: 1e+308 is greater than the maximum of 100,000"),
        ("gpu_hours_1e400", good.replace('"gpu_hours": 0.5', '"gpu_hours": 1e400'),
         "gpu_hours: inf is greater than the maximum"),
        ("pred_ml_1e308", with_(row("pred_ml", 1e308)), "per_volume/0/pred_ml: 1e+308 is greater"),
        ("true_ml_negative", with_(row("true_ml", -1.0)), "per_volume/0/true_ml: -1 is less than"),
        ("fp_float", with_(row("fp", 1.5)), "per_volume/0/fp: 1.5 is not of type 'integer'"),
        ("fold_huge", with_(row("fold", 10**12)),
         "per_volume/0/fold: 1000000000000 is greater than the maximum of 99"),
        ("nan", good.replace('"gpu_hours": 0.5', '"gpu_hours": NaN'), "NaN is not valid JSON"),
        ("mean_above_1", with_(lambda e: e["summary"]["all"]["dice"].__setitem__("mean", 3.0)),
         "summary/all/dice/mean: 3 is greater than the maximum of 1"),
        ("not_json", "{", "malformed JSON"),
        ("not_utf8", "\udcff", "not UTF-8"),
        ("a_list", "[1, 2]", "an entry is a JSON object"),
        ("empty", "", "malformed JSON"),
    ]


ENTRY = make_entry(FLAGS)
ENTRY_CASES = _hostile_entries(ENTRY)


@pytest.fixture(scope="module")
def hostile_board(tmp_path_factory):
    folder = copy_folder(tmp_path_factory.mktemp("board"))
    write_entry(folder, ENTRY)
    return folder


@pytest.mark.parametrize("name, text, says", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_hostile_entries_give_one_line(name, text, says, hostile_board, tmp_path, monkeypatch, capsys):
    folder = hostile_board
    path = tmp_path / f"{name}.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    before = path.read_bytes()
    code, out, err = _call(["leaderboard", "validate", str(path), "--root", str(folder.root)],
                           monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"REJECT {path}: "), err
    assert says in lines[0], lines[0]
    assert path.read_bytes() == before


def test_render_skips_or_refuses_hostile_entries_without_a_traceback(home, tmp_path, monkeypatch,
                                                                     capsys):
    """In the folder, every hostile entry at once: render refuses (one REJECT line each, then one
    error line) and, with --skip-invalid, renders the valid entry and names each skipped one."""
    folder = copy_folder(tmp_path)
    res = phantom_store(home)
    record = ["leaderboard", "canonical", "record", "--dataset", "phantom", "--k", "3",
              "--root", str(folder.root)]
    code, out, err = _call(record, monkeypatch, capsys)
    assert code == 0, err
    entry = make_entry(flags_of(res), fingerprint=res.fingerprint)
    write_entry(folder, entry)
    cases = _hostile_entries(entry)
    for i, (name, text, _) in enumerate(cases):
        e_path = folder.entries_dir / "phantom" / f"multilabel_dl--{i:08d}.json"
        e_path.write_bytes(text.encode("utf-8", "surrogateescape"))
    render = ["leaderboard", "render", "--root", str(folder.root)]
    code, out, err = _call(render, monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out + err
    last = err.splitlines()[-1]
    assert last.startswith("ichbench: error: the leaderboard folder does not validate"), err
    assert not folder.readme.exists()
    code, out, err = _call(render + ["--skip-invalid"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out + err, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped: REJECT")]
    assert len({line.split(":")[1] for line in skipped}) == len(cases)
    assert "1 re-scored" in out and "e+308" not in folder.readme.read_text()


@pytest.mark.parametrize("args", [["--home", "{file}", "data", "info", "phantom"],
                                  ["run", "--bogus"],
                                  DRY + ["--set", "finetune.lr=nan"]])
def test_the_real_command_prints_no_traceback(args, tmp_path):
    file = tmp_path / "a_file"
    file.write_text("x")
    env = {**os.environ, "ICHBENCH_HOME": str(tmp_path / "home"), "ICHBENCH_LOAD_PLUGINS": ""}
    argv = [sys.executable, "-m", "ichbench.cli.main", *[_fill(a, file, "") for a in args]]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("ichbench: error: ")


@pytest.mark.slow
def test_a_damaged_store_is_one_line_and_nothing_after_it(phantom_home, tmp_path):
    """A broken shard index fails zarr's read while sibling chunk reads are still running on its
    event loop; the process must not exit under them ("Task was destroyed but it is pending!",
    "Event loop is closed"): the whole of stderr is the one error line."""
    from tests.test_integrity import flip, shard_file
    array = "images"   # (a masks shard fails the same way, but leaves fewer reads pending)
    seg = phantom_home / "stores" / "phantom" / "segmentation.zarr"
    flip(shard_file(seg, array, 0), offset_from_end=8, n=4)   # the index and its crc32c sit at the end
    env = {**os.environ, "ICHBENCH_HOME": str(phantom_home), "ICHBENCH_LOAD_PLUGINS": "",
           "ICHBENCH_NODE_CACHE": str(tmp_path / "node-cache")}   # read the store, not a cached copy
    argv = [sys.executable, "-m", "ichbench.cli.main", "finetune", "-m", "unet_mixed", "-d", "phantom",
            "--fold", "0", "--profile", "smoke", "--device", "cpu", "--set", "finetune.epochs=1"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("ichbench: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert f"array {array}, shard 0 (slices 0-63) cannot be decoded (" in out.stderr
