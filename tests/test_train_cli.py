"""`ichbench methods`, `pretrain`, `finetune` through the real entry point (one-line errors)."""

import json
import shutil
import sys

import pytest

from tests.test_engine import TINY

BASELINES = ["unet_ich_only", "unet_ich_only_icm", "unet_mixed", "unet_mixed_icm"]


@pytest.fixture
def cli(monkeypatch, capsys, home, registry):
    def run(*args):
        from ichbench.cli.main import main
        monkeypatch.setattr(sys, "argv", ["ichbench", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_methods_json_lists_the_baselines_with_their_plugin(cli):
    code, out, _ = cli("methods", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(BASELINES) <= set(rows)
    for name in BASELINES:
        assert rows[name]["plugin"] == "methods"
        assert rows[name]["label_needs"] == ["segmentation"] and rows[name]["transfers"] == []
    assert rows["unet_mixed_icm"]["icm"] is True and rows["unet_ich_only"]["sampling"] == "ich_only"
    assert rows["unet_mixed"]["tasks"] == ["binary", "subtypes"]   # the shared recipe takes both
    code, out, _ = cli("methods")
    assert code == 0 and "unet_mixed_icm" in out


def test_dry_run_prints_the_resolved_config(cli):
    code, out, _ = cli("finetune", "-m", "unet_mixed", "-d", "phantom", "--fold", "0", "--dry-run",
                       "--set", "finetune.epochs=3", "--set", "finetune.augment.rotate=20")
    assert code == 0
    cfg = json.loads(out)
    assert cfg["method"] == "unet_mixed" and cfg["dataset"] == "phantom" and cfg["profile"] == "paper"
    assert cfg["finetune"]["epochs"] == 3 and cfg["finetune"]["augment"]["rotate"] == 20.0
    assert cfg["finetune"]["batch_size"] == 32 and cfg["pretrain_dataset"] == "phantom"
    code, out, _ = cli("pretrain", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke", "--dry-run")
    assert code == 0 and json.loads(out)["model"]["base_channels"] == 8


@pytest.mark.parametrize("args, message", [
    (["finetune", "-m", "nope", "-d", "phantom", "--fold", "0"],
     "unknown method 'nope'; known: binary_classification, "),
    (["finetune", "-m", "unet_mixed", "-d", "nowhere", "--fold", "0", "--dry-run"],
     "unknown dataset 'nowhere'; known:"),
    (["pretrain", "-m", "nope", "-d", "phantom", "--dry-run"], "unknown method 'nope'"),
    (["finetune", "-m", "unet_mixed", "-d", "phantom", "--fold", "0", "--set", "finetune.epoch=2"],
     "unknown config key 'finetune.epoch'"),
    (["finetune", "-m", "unet_mixed", "-d", "phantom", "--fold", "0", "--profile", "huge"], "unknown profile 'huge'"),
    (["pretrain", "-m", "unet_mixed", "-d", "phantom"], "no pretext to pretrain"),
])
def test_errors_are_one_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ichbench: error: ")


def test_finetune_without_data_says_where_to_get_it(cli):
    """The same refusal as `ichbench run`: one line of error, then where the data comes from."""
    code, out, err = cli("finetune", "-m", "unet_mixed", "-d", "hssayeni", "--fold", "0")
    lines = err.strip().splitlines()
    assert code == 2 and lines[0].startswith("ichbench: error: no segmentation store for 'hssayeni'")
    assert len(lines) <= 3 and "physionet" in err.lower()


@pytest.mark.slow
def test_finetune_writes_per_volume_results_with_config(cli, home, phantom_store):  # noqa: F811
    dst = home / "stores" / "phantom" / "segmentation.zarr"
    shutil.copytree(phantom_store, dst)
    args = ["finetune", "-m", "unet_mixed_icm", "-d", "phantom", "--fold", "1", "--k", "3", "--profile", "smoke",
            "--device", "cpu"] + [a for s in TINY + ["finetune.epochs=1"] for a in ("--set", s)]
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    printed = json.loads(out)
    path = home / "runs" / "phantom" / "unet_mixed_icm"   # the fold `ichbench run` would write
    files = list(path.glob("smoke-*/fold_1/result.json"))
    assert [str(f) for f in files] == [printed["result"]]
    result = json.loads(files[0].read_text())
    assert result["config"]["finetune"]["epochs"] == 1 and result["config"]["method"] == "unet_mixed_icm"
    split = json.loads((home / "splits" / "phantom-k3.json").read_text())
    assert [v["volume_id"] for v in result["volumes"]] == split["folds"][1]["test"]
    assert result["split_hash"] == split["hash"] and printed["summary"] == result["summary"]
    # out-of-range fold: refused before training
    code, _, err = cli(*args[:5], "--fold", "3", *args[7:])
    assert code == 2 and "--fold must be in 0..2" in err
