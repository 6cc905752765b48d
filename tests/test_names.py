"""Names cannot escape their folder (issue 15 §3): one strict pattern for method and dataset
names, checked when a plugin registers them; built-in names stay the built-ins'; every path built
from a name stays under its root; leaderboard entries that are links are refused."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ichbench.leaderboard.validate import validate
from ichbench.methods.base import Method
from ichbench.names import PathEscapeError, inside, name_problem
from ichbench.plugins import hookimpl
from ichbench.store import store_path
from tests.test_leaderboard_support import copy_folder, make_entry, write_entry

FLAGS = {f"V{i:03d}": i % 2 == 0 for i in range(6)}


def _method(name):
    return type("M", (Method,), {"name": name})()


@pytest.mark.parametrize("name", ["unet_mixed", "vicreg", "m2", "a" * 64])
def test_good_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["../../evil", "my méthod ☃ x", "Upper", "2fast", "_x", "a-b",
                                  "a.b", "", "a" * 65, "x/y", "evil\n", 7])
def test_bad_names(name):
    assert name_problem(name)


def test_plugin_names_checked_at_registration(registry, capsys):
    class Plug:
        @hookimpl
        def register_methods(self, register):
            for name in ("../../evil", "my méthod ☃ x", "fine_one"):
                register(_method(name))

    assert registry.add_plugin(Plug(), "evilplug")
    methods = registry.methods()
    err = capsys.readouterr().err
    assert "fine_one" in methods   # the plugin's good method still loads
    assert not {"../../evil", "my méthod ☃ x"} & set(methods)
    assert ("ichbench: warning: plugin 'evilplug' registers method '../../evil': not a valid name "
            "(lowercase letters, digits and underscores, starting with a letter, at most 64 "
            "characters); skipped") in err
    # shown as ASCII: a plugin's name cannot put control or look-alike characters on the terminal
    assert "plugin 'evilplug' registers method 'my m\\xe9thod \\u2603 x': not a valid name" in err


def test_plugin_cannot_take_a_builtin_name(registry, capsys):
    builtin = registry.methods()["multilabel_dl"]

    class Plug:
        @hookimpl
        def register_methods(self, register):
            register(_method("multilabel_dl"))

    registry.add_plugin(Plug(), "forger", distribution="ichbench-evil", version="6.6.6")
    assert registry.methods()["multilabel_dl"] is builtin
    assert registry.owner("methods", "multilabel_dl").builtin
    assert ("plugin 'forger' registers method 'multilabel_dl', the name of a built-in method; a "
            "plugin cannot take a built-in name, kept the built-in") in capsys.readouterr().err


def test_paths_built_from_names_stay_inside(tmp_path):
    assert inside(tmp_path, "runs", "phantom", "m") == tmp_path / "runs" / "phantom" / "m"
    for parts in (("..", "x"), ("runs", "../../evil"), ("/etc",), ("a/b",), ("",), (".",)):
        with pytest.raises(PathEscapeError, match=f"refusing a path under {tmp_path}"):
            inside(tmp_path, *parts)
    with pytest.raises(PathEscapeError):
        store_path(tmp_path, "../../evil", "segmentation")


def test_a_name_from_the_command_line_cannot_leave_home(tmp_path):
    """`--set pretrain_dataset=` is free text: refused in one line, nothing written outside (the
    name check of config validation; `inside` would refuse the path next)."""
    home = tmp_path / "home"
    env = {**os.environ, "ICHBENCH_HOME": str(home), "ICHBENCH_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "ichbench.cli.main", "pretrain", "-m", "multilabel_dl", "-d",
           "phantom", "--profile", "smoke", "--set", "pretrain_dataset=../../evil"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "ichbench: error: pretrain_dataset '../../evil': not a valid name (lowercase letters, "
        "digits and underscores, starting with a letter, at most 64 characters)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def _board(tmp_path):
    folder = copy_folder(tmp_path)
    entry = make_entry(FLAGS)
    return folder, entry, write_entry(folder, entry)


def test_entry_symlinked_from_outside_is_refused(tmp_path):
    folder, entry, path = _board(tmp_path)
    outside = tmp_path / "elsewhere.json"
    path.rename(outside)
    path.symlink_to(outside)
    report = validate(folder)
    assert [str(r) for r in report.rejections if "phantom" in r.path] == [
        f"REJECT leaderboard/entries/phantom/{path.name}: a symbolic link; entries are plain files "
        "inside entries/, never links (to files elsewhere)"]
    assert not report.entries
    # named on the command line, too
    out = CliRunner().invoke(__import__("ichbench.cli.leaderboard", fromlist=["app"]).app,
                             ["validate", str(path), "--root", str(folder.root)])
    assert out.exit_code == 1 and "a symbolic link" in out.output


def test_symlinked_dataset_folder_is_refused(tmp_path):
    folder, entry, path = _board(tmp_path)
    real = tmp_path / "outside_dir"
    path.parent.rename(real)
    path.parent.symlink_to(real, target_is_directory=True)
    report = validate(folder)
    assert [r.path for r in report.rejections] == ["leaderboard/entries/phantom"]
    assert "a symbolic link" in report.rejections[0].reason and not report.entries
