import json
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from ichbench.cli.main import app
from ichbench.plugins import hookimpl
from ichbench.plugins.manager import PluginError, Registry, reset_registry


def make_dist(tmp_path, monkeypatch, dist: str, entries: dict[str, str], modules: dict[str, str]):
    """A real installed distribution (dist-info + entry_points.txt) on sys.path."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    info = site / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[ichbench]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    for name, src in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(site))
    for name in modules:
        sys.modules.pop(name, None)
    return site


GOOD = """
from ichbench.plugins import hookimpl
from ichbench.datasets.base import Dataset
class Extra(Dataset):
    name = "extra"
    description = "an external dataset"
@hookimpl
def register_datasets(register):
    register(Extra())
"""
BROKEN_IMPORT = "raise RuntimeError('boom at import')\n"
RAISING = """
from ichbench.plugins import hookimpl
@hookimpl
def register_datasets(register):
    raise ValueError('hook exploded')
"""
MISSPELLED = """
from ichbench.plugins import hookimpl
@hookimpl
def register_dataset(register):
    pass
"""
SHADOW = """
from ichbench.plugins import hookimpl
from ichbench.datasets.base import Dataset
class Fake(Dataset):
    name = "phantom"
@hookimpl
def register_datasets(register):
    register(Fake())
"""


@pytest.fixture
def fresh(monkeypatch):
    reset_registry()
    yield
    reset_registry()


def test_builtins_load_with_external_plugins_disabled(fresh, monkeypatch):
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "")
    reg = Registry()
    reg.load_entry_points()
    assert {"phantom", "segcq500", "hssayeni", "rsna", "cq500"} <= set(reg.datasets())
    assert all(p.builtin for p in reg.plugins.values())
    assert reg.owner("datasets", "phantom").distribution == "ichbench"


def test_broken_plugins_are_reported_and_skipped(fresh, monkeypatch, tmp_path, capsys):
    make_dist(tmp_path, monkeypatch, "ichbench-mixed",
              {"good": "ib_good", "broken": "ib_broken", "raising": "ib_raising",
               "misspelled": "ib_missp", "shadow": "ib_shadow"},
              {"ib_good": GOOD, "ib_broken": BROKEN_IMPORT, "ib_raising": RAISING,
               "ib_missp": MISSPELLED, "ib_shadow": SHADOW})
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reg = Registry()
    reg.load_entry_points()
    names = reg.datasets()
    err = capsys.readouterr().err
    assert "extra" in names and "phantom" in names
    assert type(names["phantom"]).__module__ != "ib_shadow"  # built-ins cannot be shadowed
    assert "plugin 'broken' (ichbench-mixed) failed to import: RuntimeError: boom at import; skipped" in err
    assert "plugin 'raising' raised in register_datasets: ValueError: hook exploded; skipped" in err
    assert "plugin 'misspelled' implements unknown hook 'register_dataset' (did you mean 'register_datasets'?)" in err
    assert ("plugin 'shadow' registers dataset 'phantom', the name of a built-in dataset; a plugin "
            "cannot take a built-in name, kept the built-in") in err
    assert reg.plugins["good"].version == "1.2.3" and reg.plugins["good"].hooks == ["register_datasets"]


def test_load_plugins_env_selects(fresh, monkeypatch, tmp_path):
    make_dist(tmp_path, monkeypatch, "ichbench-extra", {"good": "ib_good2"}, {"ib_good2": GOOD})
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "")
    reg = Registry()
    reg.load_entry_points()
    assert "extra" not in reg.datasets()
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-extra")
    reg = Registry()
    reg.load_entry_points()
    assert "extra" in reg.datasets()


def test_strict_mode_turns_problems_into_errors(fresh, monkeypatch, tmp_path):
    make_dist(tmp_path, monkeypatch, "ichbench-bad", {"broken": "ib_broken2"}, {"ib_broken2": BROKEN_IMPORT})
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("ICHBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken'"):
        Registry().load_entry_points()


def test_in_process_plugin_registration(fresh):
    class Plug:
        @hookimpl
        def register_datasets(self, register):
            from tests.synthetic import SyntheticDataset
            register(SyntheticDataset())

    reg = Registry()
    reg.load_entry_points()
    assert reg.add_plugin(Plug(), "testplug")
    assert "synthetic" in reg.datasets()
    assert not reg.add_plugin(Plug(), "testplug")  # a name can only load once


def test_plugins_command_prints_json(fresh):
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["phantom"]["distribution"] == "ichbench"
    assert rows["phantom"]["hooks"] == ["register_datasets"]
    assert set(rows["phantom"]) == {"name", "distribution", "version", "builtin", "hooks"}


def test_unknown_dataset_is_one_line_error(fresh, home):
    import subprocess
    out = subprocess.run([sys.executable, "-m", "ichbench.cli.main", "data", "info", "nosuch"],
                         capture_output=True, text=True, env={**__import__("os").environ})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "ichbench: error: unknown dataset 'nosuch'; known: bhsd, cq500, hssayeni, instance2022, phantom, "
        "phantom_shifted, rsna, segcq500"]


def test_datasets_command_lists_role_source_licence_layout(fresh):
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(app, ["datasets", "--json"]).stdout)}
    assert set(rows) >= {"phantom", "segcq500", "hssayeni", "rsna", "cq500"}
    assert rows["segcq500"]["roles"] == ["segmentation"] and rows["rsna"]["roles"] == ["pretraining"]
    assert rows["phantom"]["roles"] == ["segmentation", "pretraining"]
    assert "zenodo.org/records/8063221" in rows["segcq500"]["source_url"]
    for r in rows.values():
        assert r["source_url"] and r["licence"] and r["layout"] and r["plugin"]
    text = CliRunner().invoke(app, ["datasets"]).stdout
    assert "ct_scans/NNN.nii" in text and "stage_2_train" in text


@pytest.mark.parametrize("dataset, url, licence", [
    ("segcq500", "https://zenodo.org/records/8063221", "CC BY-NC-SA 4.0"),
    ("hssayeni", "https://physionet.org/content/ct-ich/1.3.1/", "PhysioNet Restricted Health Data License 1.5.0"),
    ("rsna", "https://www.kaggle.com/competitions/rsna-intracranial-hemorrhage-detection/data", "RSNA 2019"),
])
@pytest.mark.parametrize("command", ["ingest", "run"])
def test_missing_data_says_where_to_get_it(home, registry, dataset, url, licence, command):
    """At most three lines: what is missing where, the download source and licence with the
    layout to unpack, and the documentation (issue 14)."""
    import os
    import subprocess
    args = (["data", "ingest", dataset] if command == "ingest" else
            ["run", "--method", "multilabel_dl" if dataset == "rsna" else "unet_mixed",
             "--dataset", "segcq500" if dataset == "rsna" else dataset])
    if dataset == "rsna" and command == "run":
        # the pretraining store is the missing one: give the run its segmentation store first
        from tests.nifti_fixtures import phantom, write_segcq500
        from ichbench.datasets.base import IngestOptions, get_dataset
        from ichbench.ingest import ingest
        vols = {f"CQ500-CT-{i}": phantom(i, ["iph"], slices=6, size=64, marker=False) for i in range(3)}
        ingest(get_dataset("segcq500"), home, write_segcq500(home / "raw_cq", vols), options=IngestOptions(size=32))
    out = subprocess.run([sys.executable, "-m", "ichbench.cli.main", *args], capture_output=True, text=True,
                         env={**os.environ, "ICHBENCH_HOME": str(home)}, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and 1 <= len(lines) <= 3, out.stderr
    assert f"no raw data at {home / 'raw' / dataset}" in lines[0] or f"no raw {dataset} data at" in lines[0]
    text = out.stderr
    assert url in text and licence in text and "docs/datasets.md" in text and "Traceback" not in text


def _git(repo, *args) -> str:
    import subprocess
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_code_commit_of_a_plugin_installed_from_a_git_url(fresh, monkeypatch, tmp_path):
    """pip records the commit of `pip install git+https://...` in direct_url.json (PEP 610)."""
    from ichbench.plugins.provenance import code_commit
    site = make_dist(tmp_path, monkeypatch, "ichbench-fromgit", {"good": "ib_good3"}, {"ib_good3": GOOD})
    (site / "ichbench-fromgit-1.2.3.dist-info" / "direct_url.json").write_text(json.dumps(
        {"url": "https://example.org/fromgit.git", "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}}))
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-fromgit")
    reg = Registry()
    reg.load_entry_points()
    assert code_commit(reg.datasets()["extra"], reg.owner("datasets", "extra").distribution) == "ab" * 20
    assert code_commit(reg.datasets()["extra"], None) is None          # nothing to tell: unknown


def test_source_commit_only_for_files_git_tracks(tmp_path):
    from ichbench.plugins.provenance import source_commit
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert source_commit(repo / "pkg" / "__init__.py") == head
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"")
    assert source_commit(repo / "pkg" / "__init__.py") == head              # bytecode is not a change
    (repo / "pkg" / "__init__.py").write_text("x = 2\n")
    assert source_commit(repo / "pkg" / "__init__.py") == head + "-dirty"   # HEAD no longer describes it
    # a package installed into an ignored venv inside the repository is not the repository's code
    (repo / "venv" / "other").mkdir(parents=True)
    (repo / "venv" / "other" / "__init__.py").write_text("")
    assert source_commit(repo / "venv" / "other" / "__init__.py") is None
    assert source_commit(tmp_path / "elsewhere.py") is None
