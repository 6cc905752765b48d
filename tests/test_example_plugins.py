"""The example third-party plugins (plugins/ichbench-vicreg, plugins/ichbench-mae), the plugin API
they are written against, and every way a method plugin can be broken.

Plugins are registered through a real dist-info with an `ichbench` entry point placed on sys.path
(importlib.metadata finds it exactly as it finds a pip-installed package), with the example
packages' `src/` folders on sys.path, so most tests need no install. The installed examples (the
README's set-up; CI installs them) are exercised too: the listing test needs them, the others skip
without them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ichbench.api as api
from ichbench.cli.main import app
from ichbench.plugins.manager import PluginError, Registry, reset_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"vicreg": ROOT / "plugins" / "ichbench-vicreg", "mae": ROOT / "plugins" / "ichbench-mae"}
FAST = ["pretrain.epochs=1", "pretrain.steps_per_epoch=3", "finetune.epochs=1", "finetune.steps_per_epoch=3"]


def make_dist(tmp_path, monkeypatch, dist: str, entries: dict[str, str], modules: dict[str, str] | None = None):
    """A real installed distribution (dist-info + entry_points.txt) on sys.path, plus the example
    plugins' source folders so their modules import without being installed."""
    site = tmp_path / f"site-{dist}"
    site.mkdir()
    info = site / f"{dist.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[ichbench]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    for name, src in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(src))
        sys.modules.pop(name, None)
    for pkg in EXAMPLES.values():
        monkeypatch.syspath_prepend(str(pkg / "src"))
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def fresh():
    reset_registry()
    yield
    reset_registry()


# -- the API --------------------------------------------------------------------------------------

def test_api_reexports_the_objects_builtins_use():
    from ichbench.datasets.base import Dataset
    from ichbench.methods.base import Method
    from ichbench.models.unet import UNet
    from ichbench.plugins.hookspecs import hookimpl
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing
    assert api.Method is Method and api.Dataset is Dataset and api.UNet is UNet and api.hookimpl is hookimpl
    assert api.API_VERSION == 2 and api.COMPATIBLE == (1, 2)
    api.require_api(1)   # API 2 only added names: plugins written for 1 (the examples) still load
    api.require_api(2)
    with pytest.raises(api.IchbenchError,
                       match="needs ichbench plugin API 3, but ichbench .* provides API 2"):
        api.require_api(3)


def test_example_batch_is_shaped_like_the_engines():
    b = api.example_batch(8, size=64)
    assert b["images"].shape == (8, 1, 64, 64) and b["images"].dtype == torch.float32
    assert 0.0 <= float(b["images"].min()) and float(b["images"].max()) <= 1.0
    assert b["labels"].shape == (8, 7) and b["labels"].dtype == torch.uint8
    any_ich = b["labels"][:, 1]
    assert torch.equal(b["labels"][:, 0], 1 - any_ich) and 0 < int(any_ich.sum()) < 8   # ICH and not
    assert torch.equal(api.example_batch(8, size=64)["images"], b["images"])              # deterministic
    with pytest.raises(ValueError):
        api.example_batch(1)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_plugins_import_only_the_public_api(name):
    """Plugins import `ichbench.api` and nothing else of ichbench: the surface that is versioned."""
    bad = []
    for path in sorted((EXAMPLES[name] / "src").rglob("*.py")) + sorted((EXAMPLES[name] / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {m}" for m in mods if m.split(".")[0] == "ichbench" and m != "ichbench.api"]
    assert not bad


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_packages_declare_their_entry_point(name):
    import tomllib
    meta = tomllib.loads((EXAMPLES[name] / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"ichbench-{name}"
    assert meta["project"]["entry-points"]["ichbench"] == {name: f"ichbench_{name}.plugin"}
    assert (EXAMPLES[name] / "README.md").is_file() and list((EXAMPLES[name] / "tests").glob("test_*.py"))


# -- loading through entry points -----------------------------------------------------------------

def test_example_plugins_load_through_entry_points(fresh, monkeypatch, tmp_path, capsys):
    make_dist(tmp_path, monkeypatch, "example-checkout",
              {"vicreg-src": "ichbench_vicreg.plugin", "mae-src": "ichbench_mae.plugin"})
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "example-checkout")   # only these, not installed copies
    reg = Registry()
    reg.load_entry_points()
    methods = reg.methods()
    assert {"vicreg", "mae", "unet_mixed"} <= set(methods)
    assert methods["vicreg"].label_needs.describe() == ["segmentation", "unlabeled"]
    assert methods["vicreg"].transfers == ("encoder",) and methods["mae"].transfers == ("all",)
    for ep, method in (("vicreg-src", "vicreg"), ("mae-src", "mae")):
        owner = reg.owner("methods", method)
        assert (owner.name, owner.distribution, owner.version, owner.builtin) == \
            (ep, "example-checkout", "0.3.0", False)
        assert owner.hooks == ["register_methods"]
    assert not reg.problems and "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_method_pretrains_and_finetunes_end_to_end(name, fresh, phantom_home, monkeypatch):
    """Through the engine in this process: the method is found by name, pretrains on the phantom's
    pretraining store, hands over exactly its declared parts, and a U-Net fine-tunes from them."""
    from ichbench.models.unet import UNet, part_state
    from ichbench.orchestrate.plan import plan_method
    from ichbench.plugins import get_registry
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import finetune, pretrain

    monkeypatch.syspath_prepend(str(EXAMPLES[name] / "src"))
    module = importlib.import_module(f"ichbench_{name}.plugin")
    assert get_registry().add_plugin(module, name, distribution=f"ichbench-{name}", version="0.1.0")
    plan = plan_method(name, "phantom", "smoke", phantom_home, folds=[0], overrides=FAST)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny convolutions: one thread beats two on a shared 2-core box
    try:
        path = pretrain(plan.method, plan.pretrain_store.path, plan.cfg, plan.pretrain_dir, device="cpu",
                        progress=False)
        pre = ckpt.load_pretrained(path)
        expected = part_state(UNet(base=8), plan.method.transfers)
        assert pre["method"] == name and set(pre["state"]) == set(expected)
        assert len(pre["history"]) == 1 and pre["history"][0]["steps"] == 3
        result = finetune(plan.method, plan.store.path, plan.split, 0, plan.cfg, plan.fold_dir(0),
                          pretrained=path, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result["pretrained"]["method"] == name and result["pretrained"]["tensors"] == len(expected)
    assert result["volumes"] and (plan.fold_dir(0) / "result.json").exists()
    if name == "vicreg":
        assert not any(k.startswith(("decoder", "head")) for k in pre["state"])
    else:
        assert any(k.startswith("head.") for k in pre["state"]) and any(k.startswith("decoder.") for k in pre["state"])


LISTING_PROBE = """
import contextlib, io, json, sys
from ichbench.cli.main import main
sys.argv = ["ichbench", "methods", "--json"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "ray", "mlflow", "zarr") if m in sys.modules)
print(json.dumps({"methods": json.loads(out.getvalue()), "heavy": heavy}))
"""


def test_listing_with_the_example_plugins_loads_them_and_imports_no_heavy_module():
    """`ichbench methods` as a user runs it with the installed examples selected by entry-point
    name (as tests/test_listing.py does): both register and are described, and registering them
    imports none of torch, Ray, MLflow, zarr (docs/plugins.md). Fails, not skips, without them:
    the README's set-up installs them."""
    import os
    import subprocess
    env = {**os.environ, "ICHBENCH_LOAD_PLUGINS": "vicreg,mae"}
    res = subprocess.run([sys.executable, "-c", LISTING_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    rows = {r["name"]: r for r in got["methods"]}
    for name in EXAMPLES:
        assert name in rows, f"example plugin {name} did not load: {sorted(rows)}"
        assert (rows[name]["plugin"], rows[name]["distribution"]) == (name, f"ichbench-{name}")
    assert rows["vicreg"]["transfers"] == ["encoder"] and rows["mae"]["transfers"] == ["all"]
    assert got["heavy"] == []


# -- every way a method plugin can be broken --------------------------------------------------------

SHADOW = """
from ichbench.api import Method, hookimpl
class Fake(Method):
    name = "unet_mixed"
@hookimpl
def register_methods(register):
    register(Fake())
"""
TWIN = """
from ichbench.api import Method, hookimpl
class Twin(Method):
    name = "vicreg"
@hookimpl
def register_methods(register):
    register(Twin())
"""
UNKNOWN_HOOK = """
from ichbench.api import hookimpl
@hookimpl
def register_method(register):
    pass
"""
WRONG_ARGS = """
from ichbench.api import hookimpl
@hookimpl
def register_methods(registry):
    pass
"""
BROKEN_IMPORT = "import ichbench_no_such_dependency\n"
OLD_API = "from ichbench.api import require_api\nrequire_api(3)\n"   # a plugin for a newer ichbench
RAISING = """
from ichbench.api import hookimpl
@hookimpl
def register_methods(register):
    raise KeyError('no weights')
"""
BAD = {"shadow": SHADOW, "twin": TWIN, "unknown": UNKNOWN_HOOK, "wrongargs": WRONG_ARGS,
       "broken": BROKEN_IMPORT, "oldapi": OLD_API, "raising": RAISING}
WARNINGS = {
    "shadow": ("plugin 'shadow' registers method 'unet_mixed', the name of a built-in method; a plugin "
               "cannot take a built-in name, kept the built-in"),
    "twin": "plugin 'twin' registers method 'vicreg', already registered by 'a-vicreg'; kept 'a-vicreg''s",
    "unknown": ("plugin 'unknown' implements unknown hook 'register_method' (did you mean 'register_methods'?); "
                "plugin skipped"),
    "wrongargs": ("plugin 'wrongargs' implements register_methods(registry), but the hook is "
                  "register_methods(register); plugin skipped"),
    "broken": ("plugin 'broken' (ichbench-bad) failed to import: ModuleNotFoundError: No module named "
               "'ichbench_no_such_dependency'; skipped"),
    "oldapi": ("plugin 'oldapi' (ichbench-bad) failed to import: IchbenchError: "
               "this plugin needs ichbench plugin API 3"),
    "raising": "plugin 'raising' raised in register_methods: KeyError: 'no weights'; skipped",
}


def bad_dist(tmp_path, monkeypatch, names):
    entries = {"a-vicreg": "ichbench_vicreg.plugin", **{n: f"ib_bad_{n}" for n in names}}
    return make_dist(tmp_path, monkeypatch, "ichbench-bad", entries, {f"ib_bad_{n}": BAD[n] for n in names})


def test_broken_method_plugins_are_named_and_the_rest_keeps_working(fresh, monkeypatch, tmp_path, capsys):
    bad_dist(tmp_path, monkeypatch, list(BAD))
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-bad")
    reg = Registry()
    reg.load_entry_points()
    methods = reg.methods()
    err = capsys.readouterr().err
    for name, line in WARNINGS.items():
        assert f"ichbench: warning: {line}" in err, name
    assert len(reg.problems) == len(WARNINGS)
    # built-ins are never shadowed; the first plugin to claim a name keeps it; the rest works
    assert type(methods["unet_mixed"]).__module__ == "ichbench.methods.baselines"
    assert type(methods["vicreg"]).__module__ == "ichbench_vicreg.method"
    assert {"unet_ich_only", "unet_mixed_icm", "vicreg"} <= set(methods) and "phantom" in reg.datasets()
    assert {"unknown", "wrongargs", "broken", "oldapi"}.isdisjoint(reg.plugins)


@pytest.mark.parametrize("name", sorted(BAD))
def test_strict_mode_makes_each_problem_an_error(name, fresh, monkeypatch, tmp_path):
    bad_dist(tmp_path, monkeypatch, [name])
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-bad")
    monkeypatch.setenv("ICHBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=f"plugin '{name}'"):
        reg = Registry()
        reg.load_entry_points()
        reg.methods()   # name clashes and raising hooks surface when the hooks are collected


def test_cli_survives_a_broken_method_plugin(fresh, monkeypatch, tmp_path):
    bad_dist(tmp_path, monkeypatch, ["raising", "shadow"])
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-bad")
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["a-vicreg"]["distribution"] == "ichbench-bad" and rows["a-vicreg"]["hooks"] == ["register_methods"]
    assert "methods" in rows and rows["methods"]["builtin"]


# -- the installed example packages (CI installs them; skipped where they are not) -------------------

def _installed(dist: str):
    try:
        return md.distribution(dist)
    except md.PackageNotFoundError:
        return None


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_installed_example_plugin_is_listed_with_its_distribution(name, fresh, monkeypatch):
    dist = _installed(f"ichbench-{name}")
    if dist is None:
        pytest.skip(f"ichbench-{name} is not installed (pip install -e plugins/ichbench-{name})")
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", f"ichbench-{name}")
    reg = Registry()
    reg.load_entry_points()
    owner = reg.owner("methods", name)
    assert (owner.name, owner.distribution, owner.version, owner.builtin) == \
        (name, f"ichbench-{name}", dist.version, False)
    assert not reg.problems


def _checkout_commit(module_file: str) -> str:
    """The oracle for `ichbench.plugin_commit`, straight from git: HEAD of the checkout holding the
    package, with `-dirty` when `git status` lists a change in the package's folder other than
    bytecode (docs: a commit with uncommitted changes does not describe the code)."""
    import subprocess
    pkg = Path(module_file).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout
    head = git("rev-parse", "HEAD").strip()
    assert len(head) == 40 and int(head, 16) >= 0, head
    changed = [line for line in git("status", "--porcelain", "--", ".").splitlines()
               if "__pycache__" not in line and not line.endswith(".pyc")]
    return head + ("-dirty" if changed else "")


@pytest.mark.slow
def test_installed_vicreg_runs_through_ray_and_is_tracked_as_a_plugin(fresh, phantom_home, ray_session, monkeypatch):
    """`ichbench run --method vicreg` as the CLI does it: Ray workers import the installed package,
    and MLflow records which distribution and version the method came from (the leaderboard's
    provenance of a third-party entry)."""
    dist = _installed("ichbench-vicreg")
    if dist is None:
        pytest.skip("ichbench-vicreg is not installed (pip install -e plugins/ichbench-vicreg)")
    import mlflow

    from ichbench.orchestrate.driver import Driver
    from ichbench.orchestrate.plan import plan_method
    from ichbench.tracking import Tracker, default_tracking_uri

    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-vicreg")
    reset_registry()
    import ichbench_vicreg
    # the editable install (README): the code is the checkout's plugins/ichbench-vicreg
    assert Path(ichbench_vicreg.__file__).resolve().is_relative_to(EXAMPLES["vicreg"])
    commit_before = _checkout_commit(ichbench_vicreg.__file__)   # a commit elsewhere may move HEAD during the run
    plan = plan_method("vicreg", "phantom", "smoke", phantom_home, folds=[0], overrides=FAST)
    out = Driver(Tracker(default_tracking_uri(phantom_home), phantom_home)).run(plan)
    assert out.rows and (plan.pretrain_dir / "pretrained.pt").exists()
    mlflow.set_tracking_uri(default_tracking_uri(phantom_home))
    [parent] = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list",
                                  filter_string="tags.`ichbench.kind` = 'parent'")
    tags = parent.data.tags
    assert (tags["ichbench.method"], tags["ichbench.plugin_dist"], tags["ichbench.plugin_version"]) == \
        ("vicreg", "ichbench-vicreg", dist.version)
    # the method's code is the installed plugin's checkout (ichbench's own commit is git_commit):
    # its HEAD, plus -dirty if its package folder has changes, asked of git here
    assert tags["ichbench.plugin_commit"] in (commit_before, _checkout_commit(ichbench_vicreg.__file__))
    assert tags["ichbench.pretrain_role"] == "pretraining"
