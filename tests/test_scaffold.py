"""`ichbench plugin new`: the packages it writes install with pip into a fresh virtual
environment, their generated tests pass unchanged there, and ichbench then lists what they register."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ichbench
from ichbench.cli.main import app
from ichbench.errors import IchbenchError
from ichbench.plugins.scaffold import names_for, scaffold

pytestmark = pytest.mark.slow   # pip-installs the scaffolded packages


def test_names():
    assert names_for("my-method") == {"slug": "my-method", "dist": "ichbench-my-method", "module": "ichbench_my_method",
                                      "registered": "my_method", "camel": "MyMethod"}
    assert names_for("ichbench-Seg_Set2")["registered"] == "seg_set2"   # prefix dropped, case folded
    for bad in ("9lives", "a--b", "my method", "", "x-", "ichbench-"):
        with pytest.raises(IchbenchError, match="lowercase letters"):
            names_for(bad)


def test_refuses_unknown_kinds_and_existing_folders(tmp_path):
    with pytest.raises(IchbenchError, match="unknown plugin kind 'model'; known: method, dataset"):
        scaffold("x", "model", tmp_path)
    scaffold("x", "method", tmp_path)
    with pytest.raises(IchbenchError, match="ichbench-x already exists"):
        scaffold("x", "dataset", tmp_path)


@pytest.mark.parametrize("kind", ["method", "dataset"])
def test_cli_writes_a_complete_package(kind, tmp_path):
    result = CliRunner().invoke(app, ["plugin", "new", "my-thing", "--kind", kind, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "ichbench-my-thing"
    impl = "method" if kind == "method" else "dataset"
    rel = {"pyproject.toml", "README.md", "src/ichbench_my_thing/__init__.py", "src/ichbench_my_thing/plugin.py",
           f"src/ichbench_my_thing/{impl}.py", "tests/test_ichbench_my_thing.py"}
    if kind == "method":
        rel.add("src/ichbench_my_thing/pretext.py")          # the torch side, apart from the declarations
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == rel
    assert all(f"created {root / r}" in result.stdout for r in rel)
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "ichbench-my-thing"
    assert meta["project"]["entry-points"]["ichbench"] == {"my-thing": "ichbench_my_thing.plugin"}
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "$" not in text, path                 # every placeholder was filled
        for node in ast.walk(ast.parse(text)):       # and the code only uses the public API
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ichbench."):
                assert node.module == "ichbench.api", f"{path.name} imports {node.module}"
    hook = "register_methods" if kind == "method" else "register_datasets"
    assert f"def {hook}(register):" in (root / "src/ichbench_my_thing/plugin.py").read_text()
    if kind == "method":
        # what the entry point imports (plugin, __init__, method) imports no torch at module level,
        # nor a torch-side name of ichbench.api: `ichbench methods` imports every plugin to list it
        for name in ("plugin.py", "__init__.py", "method.py"):
            tree = ast.parse((root / "src/ichbench_my_thing" / name).read_text())
            top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            mods = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
            mods += [n.module for n in top if isinstance(n, ast.ImportFrom)]
            assert not [m for m in mods if m.split(".")[0] == "torch"], name
            from ichbench.api import _MODULE_OF
            lazy = [a.name for n in top if isinstance(n, ast.ImportFrom) and n.module == "ichbench.api"
                    for a in n.names if a.name in _MODULE_OF]
            assert not lazy, (name, lazy)


def test_cli_error_is_one_line(tmp_path):
    (tmp_path / "ichbench-taken").mkdir()
    (tmp_path / "ichbench-taken" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["plugin", "new", "taken", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"ichbench: error: {tmp_path / 'ichbench-taken'} already exists and is not empty; choose another --dir or name"]
    assert (tmp_path / "ichbench-taken" / "keep.txt").read_text() == "mine"


def make_venv(path):
    """A fresh venv that sees this environment's packages (ichbench, torch) without reinstalling
    them. `--system-site-packages` would not do it when this interpreter is itself a venv (it
    exposes the base interpreter's site-packages, not ours), so a .pth file adds ours instead."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    py = path / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    with open(os.path.join(site, "zz_parent_env.pth"), "w") as fh:
        for d in ours:
            fh.write(f"import site; site.addsitedir({d!r})\n")  # addsitedir: our editable installs' .pth run too
    return py


def test_scaffolded_packages_install_and_their_tests_pass(tmp_path):
    scaffold("my-method", "method", tmp_path / "src")
    scaffold("my-data", "dataset", tmp_path / "src")
    method_pkg, data_pkg = tmp_path / "src" / "ichbench-my-method", tmp_path / "src" / "ichbench-my-data"
    py = make_venv(tmp_path / "venv")
    # A regular (not editable) install: the wheel must really contain the package and entry point.
    # --no-build-isolation/--no-deps: build with the setuptools here, take ichbench from this env.
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-build-isolation",
                          "--no-deps", str(method_pkg), str(data_pkg)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("ICHBENCH_LOAD_PLUGINS", "PYTHONPATH")}
    # the generated code runs against the ichbench under test (its checkout first on the path), not
    # whichever copy the environment has installed
    env.update(OMP_NUM_THREADS="1", ICHBENCH_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(Path(ichbench.__file__).resolve().parents[1]))
    # the generated tests, unchanged, from outside the source folders (so the installed copies run)
    tests = subprocess.run([str(py), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                            str(method_pkg / "tests"), str(data_pkg / "tests")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert "11 passed" in summary and "skipped" not in summary, summary    # the install checks ran too

    def cli(*args):
        out = subprocess.run([str(py), "-m", "ichbench.cli.main", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    methods = {r["name"]: r for r in cli("methods", "--json")}
    assert methods["my_method"]["plugin"] == "my-method" and methods["my_method"]["transfers"] == ["encoder"]
    datasets = {r["name"]: r for r in cli("datasets", "--json")}
    assert datasets["my_data"]["plugin"] == "my-data" and datasets["my_data"]["roles"] == ["segmentation"]
    plugins = {r["name"]: r for r in cli("plugins")}
    assert plugins["my-method"]["distribution"] == "ichbench-my-method" and plugins["my-method"]["version"] == "0.1.0"
    assert plugins["my-data"]["hooks"] == ["register_datasets"] and not plugins["my-data"]["builtin"]
