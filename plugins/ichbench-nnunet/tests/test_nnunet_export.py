"""The export of a fold to nnU-Net's raw format, read back with nnU-Net's own reader: the
volumes nnU-Net sees are the store's (shape, spacing, labels), and its one split is ichbench's
canonical fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ichbench.api import fold_task, open_store, store_path
from ichbench_nnunet.export import (DATASET_NAME, NnUNetFolders, export_fold, image_path,
                                    read_splits)

CASE_SUFFIX = "_0000.nii.gz"


def store_volumes(home):
    """The store's own arrays per volume: (images, masks, spacing), read without the plugin."""
    store = open_store(store_path(home, "phantom", "segmentation"))
    arrays = store.load(["images", "masks", "volume"])
    out = {}
    for i, v in enumerate(store.volumes):
        rows = np.flatnonzero(arrays["volume"] == i)
        out[v["id"]] = (arrays["images"][rows], arrays["masks"][rows], tuple(v["spacing"]))
    return out


def cases(folder, suffix):
    return sorted(p.name[:-len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def test_fold_is_ichbench_canonical_fold(home, tmp_path):
    fold = fold_task("nnunet_2d", "phantom", 2, home, work_dir=tmp_path / "fold")
    split = fold.split
    assert split["k"] == 5 and fold.index == 2 and fold.k == 5
    assert fold.test_ids == split["folds"][2]["test"]
    others = sorted(v for f in split["folds"] if f["fold"] != 2 for v in f["test"])
    assert sorted(fold.train_ids) == others
    assert not set(fold.train_ids) & set(fold.test_ids)
    # test volumes come without masks: a method never sees what it is scored against
    test = next(fold.volumes([fold.test_ids[0]]))
    assert test.mask is None and test.has_ich is None


def test_export_round_trip_through_nnunets_reader(home, tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    fold = fold_task("nnunet_2d", "phantom", 0, home, work_dir=tmp_path / "fold")
    folders = NnUNetFolders(tmp_path / "nnunet")
    manifest = export_fold(fold, folders)
    ds = folders.dataset
    assert ds.name == DATASET_NAME
    # the case lists: training volumes with labels, test volumes as images only
    assert cases(ds / "imagesTr", CASE_SUFFIX) == sorted(fold.train_ids)
    assert cases(ds / "labelsTr", ".nii.gz") == sorted(fold.train_ids)
    assert cases(ds / "imagesTs", CASE_SUFFIX) == sorted(fold.test_ids)
    assert manifest["train"] == fold.train_ids and manifest["test"] == fold.test_ids
    # nnU-Net's only split is the ichbench fold: never its own five-fold split
    [only] = read_splits(folders.splits)
    assert only["train"] == sorted(fold.train_ids) and not set(only["train"]) & set(fold.test_ids)
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == len(fold.train_ids) and meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "hemorrhage": 1} and meta["file_ending"] == ".nii.gz"

    reader, store = SimpleITKIO(), store_volumes(home)
    for vid in fold.train_ids + fold.test_ids:
        images, masks, spacing = store[vid]
        where = ds / ("imagesTr" if vid in fold.train_ids else "imagesTs")
        data, props = reader.read_images([str(image_path(where, vid))])
        assert data.shape == (1, *images.shape), vid
        np.testing.assert_array_equal(data[0], images.astype(np.float32), err_msg=vid)
        assert props["spacing"] == pytest.approx(spacing, rel=1e-6), vid
        if vid in fold.train_ids:
            seg, seg_props = reader.read_seg(str(ds / "labelsTr" / f"{vid}.nii.gz"))
            np.testing.assert_array_equal(seg[0], masks.astype(seg.dtype), err_msg=vid)
            assert seg_props["spacing"] == pytest.approx(spacing, rel=1e-6)
    assert any(store[v][1].any() for v in fold.train_ids)   # the labels are not all empty


def test_volumes_come_on_the_scored_grid_with_its_spacing(home, tmp_path):
    """At finetune.image_size 32 (half the store's 64) slices are resampled as the shared recipe
    resamples them, and the in-plane spacing doubles; z is untouched."""
    fold = fold_task("nnunet_2d", "phantom", 0, home, work_dir=tmp_path / "fold",
                     overrides=["finetune.image_size=32"])
    store = store_volumes(home)
    vol = next(fold.volumes([fold.train_ids[0]]))
    images, _, (z, y, x) = store[vol.id]
    assert vol.hu.shape == (len(images), 32, 32) and vol.mask.shape == vol.hu.shape
    assert vol.spacing == pytest.approx((z, 2 * y, 2 * x))


def test_subtypes_export_writes_the_class_maps_and_names_them(home, tmp_path):
    """finetune.task=subtypes: each training label file is the store's class map of that volume
    (ids 0..C, as nnU-Net's reader reads it), and dataset.json names the classes in the store's
    order, so nnU-Net trains and predicts the label map."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    fold = fold_task("nnunet_2d", "phantom", 0, home, work_dir=tmp_path / "fold",
                     overrides=["finetune.task=subtypes"])
    store = open_store(store_path(home, "phantom", "segmentation"))
    data = store.load(["classes", "volume"])
    maps = {v["id"]: data["classes"][data["volume"] == i] for i, v in enumerate(store.volumes)}
    folders = NnUNetFolders(tmp_path / "nnunet")
    manifest = export_fold(fold, folders)
    ds = folders.dataset
    labels = {"background": 0, **{name: k for k, name in enumerate(store.class_names, start=1)}}
    assert fold.classes == store.class_names == ["iph", "ivh", "sah", "sdh", "edh"]
    assert json.loads((ds / "dataset.json").read_text())["labels"] == labels == manifest["labels"]
    assert cases(ds / "labelsTr", ".nii.gz") == sorted(fold.train_ids)
    assert not (ds / "labelsTs").exists()   # never a test volume's labels
    reader, seen = SimpleITKIO(), set()
    for vid in fold.train_ids:
        seg, _ = reader.read_seg(str(ds / "labelsTr" / f"{vid}.nii.gz"))
        np.testing.assert_array_equal(seg[0], maps[vid].astype(seg.dtype), err_msg=vid)
        seen |= set(np.unique(seg).astype(int))
    assert seen == {0, 1, 2, 3, 4, 5}   # every class is in the training labels, not just 0/1


def test_predicted_label_maps_come_back_as_label_maps(tmp_path):
    """What the runner keeps of nnU-Net's segmentation and what the fold hands ichbench to score:
    a subtypes fold's label map unchanged (ids 0..C, uint8), a binary fold's label 1 as a mask."""
    from ichbench_nnunet.fold_run import read_predictions
    from ichbench_nnunet.runner import saved_prediction

    seg = np.array([[[0, 1, 2], [3, 4, 5]], [[5, 0, 0], [2, 2, 1]]], dtype=np.int64)   # as nnU-Net returns
    np.savez_compressed(tmp_path / "subtypes.npz", a=saved_prediction(seg, ["iph", "ivh", "sah", "sdh", "edh"]))
    got = read_predictions(tmp_path / "subtypes.npz", ["iph", "ivh", "sah", "sdh", "edh"])
    assert got["a"].dtype == np.uint8
    np.testing.assert_array_equal(got["a"], seg)
    binary = (seg == 1).astype(np.int64)
    np.savez_compressed(tmp_path / "binary.npz", a=saved_prediction(binary, []))
    got = read_predictions(tmp_path / "binary.npz", None)
    assert got["a"].dtype == bool
    np.testing.assert_array_equal(got["a"], binary == 1)
