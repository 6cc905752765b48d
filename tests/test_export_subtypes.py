"""`ichbench data export-folds --task subtypes` (issue 23 §2): a store with a class map exports its
class maps as nnU-Net labels (0 background, k the store's class k) named in dataset.json; the
default stays the binary export, folds.json as before; a binary store or an unknown task is one
line, with nothing written."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from ichbench.errors import IchbenchError
from ichbench.export.folds import export_folds
from ichbench.store import open_store, store_path
from tests.cli import call

NAMES = ["iph", "ivh", "sah", "sdh", "edh"]


def file_array(path) -> np.ndarray:
    """A label file as the store's (z, y, x) array: the export writes it transposed (export/nifti.py)."""
    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)


def test_subtypes_export_writes_each_volumes_class_map(phantom_home, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    code, said, err = call(["data", "export-folds", "phantom", "--out", out, "--k", "5", "--task", "subtypes"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert "subtype labels" in said
    store = open_store(store_path(phantom_home, "phantom", "segmentation"))
    data = store.load(["classes", "volume"])
    labels = {"background": 0, **{n: k for k, n in enumerate(NAMES, start=1)}}
    assert store.class_names == NAMES
    doc = json.loads((out / "folds.json").read_text())
    assert doc["task"] == "subtypes" and doc["labels"] == labels
    [ds] = (out / "nnUNet_raw").iterdir()
    assert json.loads((ds / "dataset.json").read_text())["labels"] == labels
    seen = set()
    for i, v in enumerate(store.volumes):
        got = file_array(ds / "labelsTr" / f"{v['id']}.nii.gz")
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, data["classes"][data["volume"] == i], err_msg=v["id"])
        seen |= set(np.unique(got).tolist())
    assert seen == {0, 1, 2, 3, 4, 5}   # class ids, not a 0/1 mask


def test_the_binary_export_is_the_default_and_keeps_folds_json(phantom_store, tmp_path):
    doc = export_folds(open_store(phantom_store), "phantom", tmp_path / "lists", k=5, images=False)
    assert "task" not in doc and "labels" not in doc
    assert json.loads((tmp_path / "lists" / "folds.json").read_text()) == doc


@pytest.mark.parametrize("class_names, task, says", [
    (None, "subtypes", "--task subtypes: s.zarr has no class map (a binary store); subtypes need a dataset"),
    (NAMES, "classes", "--task classes: not a task; choose binary or subtypes")])
def test_what_cannot_be_exported_is_one_line_before_writing(tmp_path, class_names, task, says):
    store = SimpleNamespace(class_names=class_names, path="s.zarr")   # refused before it is read
    with pytest.raises(IchbenchError) as err:
        export_folds(store, "phantom", tmp_path / "never", task=task)
    assert str(err.value).startswith(says) and "\n" not in str(err.value)
    assert not (tmp_path / "never").exists()
