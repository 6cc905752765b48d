"""The learned intracranial cavity mask (§2.3.3): training, its sources, writing it into a store,
and a +ICM run that uses it, tracked in MLflow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ichbench.config import resolve_icm
from ichbench.resolve import resolve
from ichbench.datasets.base import IngestOptions
from ichbench.errors import IchbenchError
from ichbench.evaluate.metrics import volume_metrics
from ichbench.icm import CavitySource, check_shipped, load_icm, train_icm
from ichbench.icm.apply import apply_icm
from ichbench.icm.train import holdout_split, icm_dirname, shipped_volumes
from ichbench.store import open_store, store_path
from ichbench.ingest import ingest
from ichbench.train.data import load_store, volume_rows
from tests.synthetic import SyntheticDataset


@pytest.fixture(scope="session")
def icm_stores(phantom_stores, tmp_path_factory):
    """A home of this module's own: a copy of the session phantom's stores and sources, where
    `trained_icm` trains the ICM (never in the shared `phantom_stores`: no `phantom_home` holds an
    ICM, whatever ran before)."""
    root = tmp_path_factory.mktemp("icm_home") / "home"
    shutil.copytree(phantom_stores, root, symlinks=True)
    return root


@pytest.fixture(scope="session")
def trained_icm(icm_stores):
    """The smoke ICM U-Nets, trained once per session on the phantom in `icm_stores`."""
    cfg = resolve_icm("phantom", "smoke")
    store = store_path(icm_stores, "phantom", "segmentation")
    fp = open_store(store).fingerprint
    return train_icm(store, cfg, icm_stores / "icm" / "phantom" / icm_dirname(cfg, fp), device="cpu", progress=False)


@pytest.fixture
def icm_home(trained_icm, icm_stores, tmp_path, monkeypatch):
    """A fresh ICHBENCH_HOME holding a copy of the phantom stores and the trained ICM."""
    root = tmp_path / "icm-home"
    shutil.copytree(icm_stores, root, symlinks=True)
    monkeypatch.setenv("ICHBENCH_HOME", str(root))
    return root


@pytest.mark.slow
def test_the_icm_is_trained_in_a_home_of_its_own(trained_icm, icm_stores, icm_home, phantom_stores, phantom_home):
    """`icm_home` holds the trained ICM; the shared phantom home does not, so what another test finds
    in its `phantom_home` does not depend on whether this module ran first."""
    assert (icm_home / trained_icm.relative_to(icm_stores)).is_file()
    assert not (phantom_stores / "icm").exists() and not (phantom_home / "icm").exists()


@pytest.mark.slow
def test_union_mask_reaches_dice_0_9_on_held_out_phantom_volumes(trained_icm, phantom_store):
    icm = load_icm(trained_icm)
    hold = icm.payload["holdout_volumes"]
    assert hold and not set(hold) & set(icm.payload["train_volumes"])
    assert icm.metrics["icm_dice_union"] >= 0.9, icm.metrics
    # recomputed here, from the generator's cavity (the phantom ships it as brain.nii.gz)
    arrays = load_store(phantom_store, icm.image_size, names=("images", "labels", "volume", "brain"))
    dice = []
    for vid in hold:
        rows = volume_rows(arrays, [vid])
        union = icm(arrays.images[rows].numpy())
        dice.append(volume_metrics(union, arrays.brain[rows].numpy().astype(bool))["dice"])
    assert np.mean(dice) == pytest.approx(icm.metrics["icm_dice_union"], abs=1e-6)
    assert np.mean(dice) >= 0.9
    # the tissue and bone U-Nets really look through their own windows
    assert icm.windows == {"tissue": (0.0, 600.0), "bone": (150.0, 650.0)}


@pytest.mark.slow
def test_trained_icm_is_reused_not_retrained(trained_icm, icm_stores):
    mtime = trained_icm.stat().st_mtime_ns
    again = train_icm(store_path(icm_stores, "phantom", "segmentation"), resolve_icm("phantom", "smoke"),
                      trained_icm.parent, device="cpu", progress=False)
    assert again == trained_icm and trained_icm.stat().st_mtime_ns == mtime


def test_only_shipped_masks_teach_the_icm(home):
    [res] = ingest(SyntheticDataset(n=3), home, source=home, options=IngestOptions(size=16))
    store = open_store(res.path)
    assert {v["brain"] for v in store.volumes} == {"classical"}
    with pytest.raises(IchbenchError, match="computed by the classical masker"):
        shipped_volumes(store)
    with pytest.raises(IchbenchError, match="icm.source=shipped"):
        check_shipped(store)


def test_holdout_split_is_seeded_and_keeps_a_training_volume():
    ids = [f"V{i}" for i in range(10)]
    train, hold = holdout_split(ids, 0.2, seed=0)
    assert len(hold) == 2 and sorted(train + hold) == ids
    assert holdout_split(ids, 0.2, seed=0) == (train, hold)
    assert holdout_split(["a", "b"], 0.5, seed=3)[0] != []
    with pytest.raises(IchbenchError, match="at least 2"):
        holdout_split(["a"], 0.2, seed=0)


def test_config_the_paper_uses_the_unet_union_and_smoke_the_classical_mask(registry):
    paper = resolve("unet_mixed_icm", "hssayeni", "paper").icm
    assert (paper.source, paper.tissue_window, paper.bone_window) == ("unet", (0.0, 600.0), (150.0, 650.0))
    assert (paper.epochs, paper.batch_size_tissue, paper.batch_size_bone, paper.lr, paper.lr_decay,
            paper.weight_decay) == (50, 20, 16, 1e-3, 0.96, 1e-6)
    assert paper.dataset == "segcq500"                       # Hssayeni ships no cavity masks
    assert resolve("unet_ich_only_icm", "segcq500", "paper").icm.dataset == "segcq500"
    assert resolve("unet_mixed_icm", "phantom", "smoke").icm.source == "classical"
    assert resolve("unet_mixed", "phantom", "paper").icm is None
    with pytest.raises(IchbenchError, match="does not mask its predictions"):
        resolve("unet_mixed", "phantom", "smoke", ["icm.source=unet"])
    with pytest.raises(IchbenchError, match="icm.source must be one of"):
        resolve("unet_mixed_icm", "phantom", "smoke", ["icm.source=atlas"])
    with pytest.raises(IchbenchError, match="only icm"):
        resolve_icm("phantom", "smoke", ["finetune.epochs=2"])
    # the source and the threshold do not change what is learned; the settings do
    a = resolve("unet_mixed_icm", "phantom", "smoke").icm
    b = resolve("unet_mixed_icm", "phantom", "smoke", ["icm.source=unet", "icm.threshold=0.4"]).icm
    c = resolve("unet_mixed_icm", "phantom", "smoke", ["icm.epochs=5"]).icm
    assert a.model_key("f") == b.model_key("f") != c.model_key("f") and a.model_key("f") != a.model_key("g")


@pytest.mark.slow
def test_cavity_sources_give_their_masks(trained_icm, phantom_store):
    arrays = load_store(phantom_store, 64, names=("images", "labels", "volume", "masks", "brain"))
    rows = volume_rows(arrays, [arrays.volumes[0]["id"]])
    truth = arrays.brain[rows].bool()
    cfg = resolve_icm("phantom", "smoke")
    for source in ("shipped", "classical", "unet"):
        cfg.source = source
        cav = CavitySource(cfg, trained_icm if source == "unet" else None)
        m = cav.masks(arrays, rows)
        assert m.dtype == torch.bool and m.shape == truth.shape
        dice = volume_metrics(m.numpy(), truth.numpy())["dice"]
        assert dice == 1.0 if source == "shipped" else dice > 0.85, (source, dice)
    assert cav.info["model"] == load_icm(trained_icm).key and cav.model_key == cav.info["model"]
    cfg.source = "unet"
    with pytest.raises(IchbenchError, match="icm train"):
        CavitySource(cfg, None)


@pytest.mark.slow
def test_icm_apply_writes_a_verified_array_atomically(trained_icm, icm_home):
    path = store_path(icm_home, "phantom", "segmentation")
    before = open_store(path)
    fp, n = before.fingerprint, before.n_slices
    icm = load_icm(trained_icm)

    class Breaks:  # fails after the first shard: the published store must stay the old one
        key, payload, metrics = icm.key, icm.payload, icm.metrics

        def __init__(self):
            self.calls = 0

        def __call__(self, hu, threshold):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("killed")
            return icm(hu, threshold)

    if n > 64:
        with pytest.raises(RuntimeError, match="killed"):
            apply_icm(path, Breaks(), 0.5)
        assert "icm" not in open_store(path).derived and not list(path.parent.glob(".segmentation.zarr.*"))
    record = apply_icm(path, icm, 0.5)
    after = open_store(path)
    assert after.fingerprint == fp and after.verify() == []
    assert after.derived["icm"]["model"] == icm.key == record["model"]
    stored = after.load(["icm"])["icm"]
    assert stored.shape == (n, *after["images"].shape[1:])
    np.testing.assert_array_equal(stored[:16], icm(after["images"][:16], 0.5))
    # a flipped mask voxel is caught by verify
    import zarr
    arr = zarr.open_array(str(path / "icm"), mode="r+")
    arr[0, 0, 0] = 1 - arr[0, 0, 0]
    assert open_store(path).verify() == [
        "array icm, shard 0 (slices 0-63) differs from the digest recorded when it was written"]


@pytest.mark.slow
def test_icm_train_then_run_uses_the_learned_mask(trained_icm, icm_home, ray_session):
    """Issue 9's acceptance: `icm train` then a +ICM run with icm.source=unet; MLflow shows both."""
    from typer.testing import CliRunner

    import mlflow
    from ichbench.cli.main import app
    from ichbench.tracking import default_tracking_uri

    runner = CliRunner()
    out = runner.invoke(app, ["icm", "train", "--dataset", "phantom", "--profile", "smoke", "--json"])
    assert out.exit_code == 0, out.output
    trained = json.loads(out.stdout[out.stdout.index("{"):])
    assert trained["icm_dice_union"] >= 0.9 and trained["model"] == load_icm(trained_icm).key
    out = runner.invoke(app, ["run", "--method", "unet_mixed_icm", "--dataset", "phantom", "--profile", "smoke",
                              "--folds", "0", "--set", "icm.source=unet", "--set", "finetune.epochs=2",
                              "--set", "finetune.steps_per_epoch=3"])
    assert out.exit_code == 0, out.output
    mlflow.set_tracking_uri(default_tracking_uri(icm_home))
    [parent] = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list",
                                  filter_string="tags.`ichbench.kind` = 'parent'")
    assert parent.data.tags["ichbench.icm_source"] == "unet"
    assert parent.data.tags["ichbench.icm_model"] == trained["model"]
    assert parent.data.metrics["icm_dice_union"] == pytest.approx(trained["icm_dice_union"])
    [fold] = mlflow.search_runs(experiment_names=["ichbench/phantom"], output_format="list",
                                filter_string="tags.`ichbench.kind` = 'fold'")
    result = json.loads(next((icm_home / "runs").rglob("result.json")).read_text())
    assert result["icm"]["source"] == "unet" and result["icm"]["model"] == trained["model"]
    assert result["config"]["icm"]["source"] == "unet"


def test_icm_apply_warns_about_the_volumes_that_taught_it(phantom_store):
    """docs/fidelity.md, the ICM's training scans: masks written over the ICM's own training volumes
    are fitted, not predicted, and `ichbench icm apply` says so in one line."""
    from ichbench.icm.apply import taught_volumes, taught_warning
    store = open_store(phantom_store)
    ids = sorted(v["id"] for v in store.volumes)
    payload = {"dataset": store.attrs["dataset"], "train_volumes": [*ids[:3], "PH999"], "holdout_volumes": ids[3:4]}
    assert taught_volumes(store, payload) == ids[:3]
    warning = taught_warning(store, payload)
    assert warning.startswith(f"warning: 3 of the {len(ids)} volumes of phantom taught this ICM")
    assert "\n" not in warning
    assert taught_warning(store, {**payload, "dataset": "segcq500"}) is None   # learned elsewhere
    assert taught_warning(store, {**payload, "train_volumes": ["PH999"]}) is None


def test_icm_train_says_what_its_dice_is_measured_against(tmp_path):
    """The held-out Dice `ichbench icm train` prints is agreement with shipped masks, not §2.3.3's."""
    from ichbench.cli.icm import _dice_note
    from ichbench.train import checkpoint as ckpt
    path = ckpt.save_atomic({"kind": "icm", "train_volumes": ["a", "b", "c"], "holdout_volumes": ["d"]},
                            tmp_path / "icm.pt")
    note = _dice_note("segcq500", path)
    assert "on 1 held-out volumes (the ICM learned from 3)" in note
    assert "10 hand-labelled CQ500 scans, 5 of them healthy" in note


@pytest.mark.slow
def test_icm_apply_on_its_own_training_volumes_warns(trained_icm, icm_home):
    """`ichbench icm apply` over the phantom, whose shipped masks taught the ICM: one warning line."""
    from typer.testing import CliRunner

    from ichbench.cli.main import app
    out = CliRunner().invoke(app, ["icm", "apply", "--dataset", "phantom", "--profile", "smoke"])
    assert out.exit_code == 0, out.output
    n_train = len(load_icm(trained_icm).payload["train_volumes"])
    n_volumes = len(open_store(store_path(icm_home, "phantom", "segmentation")).volumes)
    [line] = [ln for ln in out.output.splitlines() if ln.startswith("warning:")]
    assert line.startswith(f"warning: {n_train} of the {n_volumes} volumes of phantom taught this ICM")
