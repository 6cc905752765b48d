"""What nnunet_2d declares, how its profiles resolve, that listing it stays light, that the
package uses only `ichbench.api`, and that the installed package is found by its entry point."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ichbench.api import IchbenchError, get_registry, reset_registry, resolve
from ichbench_nnunet import NnUNet2D
from ichbench_nnunet.fold_run import job_for, nnunet_env
from ichbench_nnunet.export import NnUNetFolders, write_splits

PACKAGE = Path(__file__).resolve().parents[1]


def test_declares_a_method_with_its_own_fine_tuning():
    m = NnUNet2D()
    assert m.name == "nnunet_2d" and not m.has_pretext and m.owns_finetuning
    assert m.label_needs.describe() == ["segmentation"] and not m.icm


@pytest.mark.parametrize("setting, says", [
    ("input.context=1", "method 'nnunet_2d' takes input.context <= 0 and at most 1 window(s) in its fine-tuning, "
                        "got context 1 and 1 window(s)"),
    ("input.windows=[[0,80]]", "method 'nnunet_2d' normalises HU by nnU-Net's own CT rule and takes no "
                               "input.windows (got [[0.0, 80.0]]); leave the default")])
def test_2_5d_inputs_are_refused_in_one_line_before_anything_trains(setting, says):
    with pytest.raises(IchbenchError) as exc:
        resolve(NnUNet2D(), "phantom", "smoke", [setting])
    assert str(exc.value).startswith(says) and "\n" not in str(exc.value)


@pytest.mark.parametrize("dataset", ["segcq500", "hssayeni", "phantom"])
def test_paper_profile_is_nnunets_defaults_whatever_the_dataset(dataset):
    cfg = resolve(NnUNet2D(), dataset, "paper")
    fc = cfg.finetune
    # nnUNetTrainer: 1000 epochs x 250 iterations, 50 validation iterations, SGD lr 1e-2, wd 3e-5
    assert (fc.epochs, fc.steps_per_epoch, fc.lr, fc.weight_decay) == (1000, 250, 1e-2, 3e-5)
    assert fc.params["val_iterations"] == 50 and fc.params["batch_size"] == 0   # planned batch
    assert fc.params["mirroring"] is True and fc.params["tile_step_size"] == 0.5
    assert fc.image_size == 256                        # the store's grid, as the paper's methods
    assert cfg.to_dict()["finetune"]["params"] == fc.params   # recorded with every result


def test_smoke_profile_is_a_handful_of_iterations_and_overridable(tmp_path):
    cfg = resolve(NnUNet2D(), "phantom", "smoke",
                  ["finetune.params.batch_size=4", "finetune.epochs=3"])
    fc = cfg.finetune
    assert fc.epochs * fc.steps_per_epoch <= 12 and fc.image_size == 64
    assert fc.params["batch_size"] == 4
    folders = NnUNetFolders(tmp_path)
    write_splits(folders.splits, ["b", "a"])

    class FoldStub:   # the attributes job_for reads; the real Fold is tested in test_nnunet_export
        device, test_ids, classes = "cpu", ["c"], None
    FoldStub.cfg = cfg
    job = job_for(FoldStub(), "2d", folders, tmp_path / "out")
    assert job["schedule"] == {"epochs": 3, "iterations": fc.steps_per_epoch, "val_iterations": 1,
                               "lr": 1e-2, "weight_decay": 3e-5, "batch_size": 4}
    assert job["splits"] == [{"train": ["a", "b"], "val": ["a", "b"]}]
    with pytest.raises(Exception, match="unknown config key 'finetune.params.batchsize'"):
        resolve(NnUNet2D(), "phantom", "smoke", ["finetune.params.batchsize=4"])


def test_nnunet_folders_come_from_the_plugin_not_the_users_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/home/user/my_nnunet_raw")
    monkeypatch.setenv("nnUNet_n_proc_DA", "12")
    env = nnunet_env(NnUNetFolders(tmp_path / "nnunet"), 2)
    assert env["nnUNet_raw"] == str(tmp_path / "nnunet" / "raw")
    assert env["nnUNet_preprocessed"] == str(tmp_path / "nnunet" / "preprocessed")
    assert env["nnUNet_results"] == str(tmp_path / "nnunet" / "results")
    assert "nnUNet_n_proc_DA" not in env and env["nnUNet_def_n_proc"] == "2"


def test_registering_imports_neither_torch_nor_nnunet():
    code = ("import sys, ichbench_nnunet.plugin; "
            "print(sorted(m for m in ('torch', 'nnunetv2', 'SimpleITK') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_package_imports_only_the_public_api():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {m}" for m in mods
                    if m.split(".")[0] == "ichbench" and m != "ichbench.api"]
    assert not bad


def test_installed_plugin_is_found_through_its_entry_point(monkeypatch):
    try:
        dist = md.distribution("ichbench-nnunet")
    except md.PackageNotFoundError:
        pytest.skip("ichbench-nnunet is not installed (pip install -e plugins/ichbench-nnunet)")
    assert [(e.name, e.value) for e in dist.entry_points if e.group == "ichbench"] == \
        [("nnunet", "ichbench_nnunet.plugin")]
    assert any(r.startswith("nnunetv2") and "<2.9" in r for r in dist.requires)
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-nnunet")
    monkeypatch.setenv("ICHBENCH_STRICT_PLUGINS", "1")
    reset_registry()
    try:
        reg = get_registry()
        owner = reg.owner("methods", "nnunet_2d")
        assert owner.distribution == "ichbench-nnunet" and not owner.builtin and not reg.problems
    finally:
        reset_registry()
