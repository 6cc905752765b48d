"""`ichbench run --method nnunet_2d --dataset phantom --profile smoke --folds 0` as a user types
it: a real local Ray cluster, nnU-Net in a subprocess of the fold's worker, MLflow in SQLite;
then what `ichbench leaderboard submit` says of the run. The full five-fold run whose entry is
accepted takes several minutes on two CPU cores: it is in the long tier (`scripts/test.sh --long`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow   # nnU-Net trains a fold

ICHBENCH = str(Path(sys.executable).with_name("ichbench"))
RUN = ["run", "--method", "nnunet_2d", "--dataset", "phantom", "--profile", "smoke"]
SPLIT_SEED = 20230725   # ichbench's canonical split seed (canonical.json must name it)


def cli(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "ICHBENCH_HOME": str(home), "ICHBENCH_LOAD_PLUGINS": "ichbench-nnunet",
           "ICHBENCH_STRICT_PLUGINS": "1", "COLUMNS": "100"}
    env = {k: v for k, v in env.items() if not k.startswith("nnUNet_")}   # never needed from a user
    return subprocess.run([ICHBENCH, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def parent_and_folds(home: Path):
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("ichbench.kind") == "parent"]
    folds = [r for r in runs if r.data.tags.get("ichbench.kind") == "fold"]
    return parents, folds


def empty_leaderboard(root: Path) -> Path:
    """A leaderboard folder of its own: canonical.json without any dataset yet."""
    root.mkdir(parents=True)
    (root / "canonical.json").write_text(json.dumps(
        {"schema_version": 1, "about": "test", "seed": SPLIT_SEED, "datasets": {}}))
    return root


def test_smoke_fold_runs_on_cpu_logs_dice_and_matches_the_split(home, tmp_path):
    # about 1-2 min on two cores; how long is not asserted (speed lives in benchmarks/), cli()'s
    # timeout only stops a hung run
    done = cli(home, *RUN, "--folds", "0")
    assert done.returncode == 0, done.stderr[-3000:]

    parents, folds = parent_and_folds(home)
    [parent], [fold] = parents, folds
    assert parent.info.status == fold.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["ichbench.method"] == "nnunet_2d"
    assert tags["ichbench.plugin_dist"] == "ichbench-nnunet"
    assert tags["ichbench.folds"] == "0" and fold.data.tags["ichbench.fold"] == "0"
    assert parent.data.metrics["n_all"] == 4
    # nnU-Net's own epochs are the fold's curve: the smoke profile's two
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(fold.info.run_id, "loss")] == [1, 2]
    assert parent.data.params["finetune.epochs"] == "2"

    # nnU-Net trained and predicted exactly ichbench's fold 0
    split = json.loads(Path(client.download_artifacts(parent.info.run_id, "split.json",
                                                      str(tmp_path))).read_text())
    test = split["folds"][0]["test"]
    train = sorted(v for f in split["folds"][1:] for v in f["test"])
    [fold_dir] = (home / "runs" / "phantom" / "nnunet_2d").glob("smoke-*/fold_0")
    nn = fold_dir / "nnunet"
    splits_final = nn / "preprocessed" / "Dataset501_ichbench" / "splits_final.json"
    splits = json.loads(splits_final.read_text())
    assert splits == [{"train": train, "val": train}]
    raw = nn / "raw" / "Dataset501_ichbench"
    assert sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz")) == sorted(test)
    assert sorted(p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz")) == train
    result = json.loads((fold_dir / "result.json").read_text())
    assert [r["volume_id"] for r in result["volumes"]] == test
    assert result["own_finetuning"] and result["method_info"]["nnunetv2_version"].startswith("2.8.")
    assert Path(result["model"]["path"]).name == "checkpoint_final.pth"
    # the Dice logged is that of the masks nnU-Net predicted, counted here by hand against the
    # store's masks (eps = 1, volume-level counts)
    from ichbench.api import open_store, store_path
    assert result["config"]["finetune"]["image_size"] == 64     # the store's own grid: no resize
    store = open_store(store_path(home, "phantom", "segmentation"))
    data = store.load(["masks", "volume"])
    index = {v["id"]: i for i, v in enumerate(store.volumes)}
    with np.load(nn / "output" / "predictions.npz") as npz:
        predicted = {vid: npz[vid].astype(bool) for vid in test}
    dice = {}
    for vid in test:
        truth = data["masks"][data["volume"] == index[vid]].astype(bool)
        tp = int((predicted[vid] & truth).sum())
        fp, fn = int((predicted[vid] & ~truth).sum()), int((~predicted[vid] & truth).sum())
        row = next(r for r in result["volumes"] if r["volume_id"] == vid)
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
        dice[vid] = (2 * tp + 1) / (2 * tp + fp + fn + 1)
    mean = sum(dice.values()) / len(dice)
    assert parent.data.metrics["dice_all_mean"] == pytest.approx(mean, abs=1e-9)
    assert fold.data.metrics["dice_all_mean"] == pytest.approx(mean, abs=1e-9)
    # `ichbench predict` applies the shared recipe's U-Nets only, and says so in one line
    assert tags["ichbench.own_finetuning"] == "true"
    scan = raw / "imagesTs" / f"{test[0]}_0000.nii.gz"
    applied = cli(home, "predict", "--run", parent.info.run_id, "--input", str(scan),
                  "--output", str(tmp_path / "predicted"))
    assert applied.returncode != 0 and "nnunet_2d, which fine-tunes by itself" in applied.stderr
    said = [ln for ln in applied.stderr.splitlines()
            if ln.strip() and not ln.startswith("Downloading artifacts")]   # MLflow's progress
    assert len(said) == 1 and said[0].startswith("ichbench: error: "), applied.stderr

    # the entry: everything checks except that a fold-0 run is not a whole split, said in one line
    board = empty_leaderboard(tmp_path / "leaderboard")
    recorded = cli(home, "leaderboard", "canonical", "record", "--dataset", "phantom",
                   "--root", str(board))
    assert recorded.returncode == 0, recorded.stderr
    refused = cli(home, "leaderboard", "submit", "--method", "nnunet_2d", "--dataset", "phantom",
                  "--root", str(board))
    assert refused.returncode == 1
    rejects = [ln for ln in refused.stderr.splitlines() if ln.startswith("REJECT ")]
    assert len(rejects) == 1, refused.stderr         # one problem, and no other
    missing = "run covers folds 0 of k = 5; missing 1, 2, 3, 4"
    assert rejects[0].startswith(f"REJECT MLflow run {parent.info.run_id}: {missing}")
    assert not (board / "entries").exists() or not list((board / "entries").rglob("*.json"))


@pytest.mark.long   # five nnU-Net folds take minutes on CPU: `bash scripts/test.sh --long`
def test_all_folds_give_an_entry_that_validates(home, tmp_path):
    done = cli(home, *RUN, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    board = empty_leaderboard(tmp_path / "leaderboard")
    assert cli(home, "leaderboard", "canonical", "record", "--dataset", "phantom",
               "--root", str(board)).returncode == 0
    schema = Path(__file__).resolve().parents[3] / "leaderboard" / "schema"
    shutil.copytree(schema, board / "schema")
    submitted = cli(home, "leaderboard", "submit", "--method", "nnunet_2d", "--dataset", "phantom",
                    "--root", str(board), "--code-url", "https://example.org/ichbench-nnunet")
    assert submitted.returncode == 0, submitted.stderr
    [entry_path] = (board / "entries" / "phantom").glob("nnunet_2d--*.json")
    entry = json.loads(entry_path.read_text())
    assert entry["plugin"]["distribution"] == "ichbench-nnunet"
    assert len(entry["per_volume"]) == 20
    checked = cli(home, "leaderboard", "validate", str(entry_path), "--root", str(board))
    assert checked.returncode == 0, checked.stderr


@pytest.mark.long   # a second nnU-Net fold (~70 s on two cores): `bash scripts/test.sh --long`
def test_subtypes_fold_trains_on_the_label_maps_and_scores_each_class(home, tmp_path):
    """`--set finetune.task=subtypes`: nnU-Net trains on the class maps, predicts label maps, and
    ichbench scores them with the shared recipe's per-class code: the union at the top of each
    row, each class below it, counted here by hand, and MLflow's per-class means."""
    done = cli(home, *RUN, "--folds", "0", "--set", "finetune.task=subtypes")
    assert done.returncode == 0, done.stderr[-3000:]
    [fold_dir] = (home / "runs" / "phantom" / "nnunet_2d").glob("smoke-*/fold_0")
    raw = fold_dir / "nnunet" / "raw" / "Dataset501_ichbench"
    names = ["iph", "ivh", "sah", "sdh", "edh"]
    assert json.loads((raw / "dataset.json").read_text())["labels"] == \
        {"background": 0, **{n: k for k, n in enumerate(names, start=1)}}
    result = json.loads((fold_dir / "result.json").read_text())
    assert result["classes"] == names and result["config"]["finetune"]["task"] == "subtypes"

    from ichbench.api import open_store, store_path
    store = open_store(store_path(home, "phantom", "segmentation"))
    data = store.load(["classes", "masks", "volume"])
    index = {v["id"]: i for i, v in enumerate(store.volumes)}
    with np.load(fold_dir / "nnunet" / "output" / "predictions.npz") as npz:
        predicted = {vid: npz[vid] for vid in npz.files}
    # label maps, not masks: ids beyond 1 (a smoke nnU-Net of 8 iterations calls voxels every class)
    counts = np.bincount(np.concatenate([p.ravel() for p in predicted.values()]), minlength=6)
    print(f"predicted voxels per id 0..5: {counts.tolist()}")
    assert (counts[2:] > 0).any()
    dice = {n: [] for n in names}
    for row in result["volumes"]:
        vid = row["volume_id"]
        truth, mask = (data[a][data["volume"] == index[vid]] for a in ("classes", "masks"))
        pred = predicted[vid]
        assert pred.dtype == np.uint8 and set(np.unique(pred)) <= set(range(6))
        union = pred > 0
        assert (row["tp"], row["fp"], row["fn"]) == (int((union & (mask > 0)).sum()),
                                                     int((union & (mask == 0)).sum()),
                                                     int((~union & (mask > 0)).sum()))
        assert len(row["pred_labels_sha256"]) == 64
        for k, name in enumerate(names, start=1):
            p, t = pred == k, truth == k
            tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
            got = row["classes"][name]
            assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn), (vid, name)
            dice[name].append((2 * tp + 1) / (2 * tp + fp + fn + 1))
    parents, _ = parent_and_folds(home)
    [parent] = parents
    for name in names:
        logged = parent.data.metrics[f"dice_class_{name}_all_mean"]
        assert logged == pytest.approx(sum(dice[name]) / len(dice[name]), abs=1e-9)
        print(f"nnunet_2d subtypes fold 0, Dice {name} (all volumes): {100 * logged:.2f} %")
    print(f"union Dice {100 * parent.data.metrics['dice_all_mean']:.2f} %, "
          f"macro {100 * parent.data.metrics['dice_macro_all_mean']:.2f} %")
