"""Another tool's subtypes predictions on the leaderboard (issue 23 §2 with issue 25 §3): `ichbench data
export-folds --task subtypes` writes the class maps, a "tool" (the test) writes one label map per volume
from the fold that held it out, and `ichbench leaderboard submit --predictions --task subtypes` scores
them per class into an external-tool entry of task subtypes that validation accepts. A foreign label
value or a store without classes is one line, the leaderboard folder left byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ichbench.export.folds import export_folds
from ichbench.export.nifti import write_nifti_volume
from ichbench.leaderboard.canonical import record_from_store
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.validate import validate
from ichbench.store import open_store, store_path
from tests.cli import call
from tests.test_leaderboard_support import copy_folder, phantom_store

K = 3
SUBMIT = ["leaderboard", "submit", "--dataset", "phantom", "--method", "label_tool",
          "--code-url", "https://example.org/tool", "--k", str(K)]


@pytest.fixture(scope="module")
def world(phantom_stores, tmp_path_factory):
    """The session phantom (read only: its store has classes), its canonical record at k = 3, and its
    subtypes export (the class maps the tool trains on)."""
    base = tmp_path_factory.mktemp("lb-external-classes")
    template = copy_folder(base)
    record_from_store(template, phantom_stores, "phantom", [K])
    store = open_store(store_path(phantom_stores, "phantom", "segmentation"))
    doc = export_folds(store, "phantom", base / "export", k=K, task="subtypes")
    [ds] = (base / "export" / "nnUNet_raw").iterdir()
    # the exported label files in store order (z, y, x): what the tool trained on, the truth here
    truth = {v["id"]: np.asarray(nib.load(ds / "labelsTr" / f"{v['id']}.nii.gz").dataobj).transpose(2, 1, 0)
             for v in store.volumes}
    spacing = {v["id"]: tuple(float(s) for s in v["spacing"]) for v in store.volumes}
    return {"home": phantom_stores, "template": template, "doc": doc, "names": store.class_names,
            "truth": truth, "spacing": spacing}


@pytest.fixture
def folder(world, tmp_path, monkeypatch):
    monkeypatch.setenv("ICHBENCH_HOME", str(world["home"]))
    dst = tmp_path / "leaderboard"
    shutil.copytree(world["template"].root, dst)
    return Folder(dst)


def tool_label_maps(world, where: Path) -> dict:
    """The 'tool's' label maps in nnU-Net's layout (fold_<i>/validation/<id>.nii.gz): the truth with
    class 1 called class 2, and for odd positions class 3 left out (so the union differs too)."""
    preds = {}
    for f in world["doc"]["folds"]:
        for n, vid in enumerate(f["test"]):
            pred = world["truth"][vid].copy()
            pred[pred == 1] = 2
            if n % 2:
                pred[pred == 3] = 0
            preds[vid] = pred
            path = where / f"fold_{f['fold']}" / "validation" / f"{vid}.nii.gz"
            write_nifti_volume(path, pred, world["spacing"][vid])
    return preds


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    return int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())


def dice(tp: int, fp: int, fn: int) -> float:
    return (2 * tp + 1) / (2 * tp + fp + fn + 1)   # the paper's eq. 1, eps = 1


def test_a_tools_label_maps_become_a_validated_subtypes_entry(world, folder, tmp_path, monkeypatch, capsys):
    preds = tool_label_maps(world, tmp_path / "preds")
    code, out, err = call([*SUBMIT, "--predictions", tmp_path / "preds", "--task", "subtypes",
                           "--root", folder.root], monkeypatch, capsys)
    assert code == 0, err
    [path] = (folder.root / "entries" / "phantom").glob("label_tool--*.json")
    entry = json.loads(path.read_text())
    names = world["names"]
    assert entry["kind"] == "external-tool" and entry["task"] == "subtypes" and entry["classes"] == names
    hand = {n: {"all": [], "present": []} for n in names}
    for r in entry["per_volume"]:
        pred, truth = preds[r["volume_id"]], world["truth"][r["volume_id"]]
        assert (r["tp"], r["fp"], r["fn"]) == counts(pred > 0, truth > 0)   # the union at the top
        for k, n in enumerate(names, start=1):
            c = counts(pred == k, truth == k)
            assert (r["classes"][n]["tp"], r["classes"][n]["fp"], r["classes"][n]["fn"]) == c, (r["volume_id"], n)
            hand[n]["all"].append(dice(*c))
            if (truth == k).any():
                hand[n]["present"].append(dice(*c))
        digest = hashlib.sha256(b"ichbench-pred-labels-v1\n" + ",".join(map(str, pred.shape)).encode() + b"\n"
                                + pred.astype(np.uint8).tobytes()).hexdigest()
        assert r["pred_labels_sha256"] == digest
    for n in names:
        for g in ("all", "present"):
            assert entry["class_summary"][n][g]["dice"]["mean"] == pytest.approx(np.mean(hand[n][g]), abs=1e-12)
    assert entry["class_summary"][names[0]]["present"]["dice"]["mean"] < 0.05   # class 1 was called class 2
    report = validate(folder, [path])
    assert report.ok and report.accepted == [folder.rel(path)], [str(r) for r in report.rejections]


def test_a_foreign_label_value_is_one_line_naming_the_file(world, folder, tmp_path, monkeypatch, capsys):
    preds = tool_label_maps(world, tmp_path / "preds")
    f = world["doc"]["folds"][1]
    vid = f["test"][0]
    bad = preds[vid].copy()
    bad[0, 0, 0] = len(world["names"]) + 1
    path = tmp_path / "preds" / f"fold_{f['fold']}" / "validation" / f"{vid}.nii.gz"
    write_nifti_volume(path, bad, world["spacing"][vid])
    before = snapshot(folder.root)
    code, out, err = call([*SUBMIT, "--predictions", tmp_path / "preds", "--task", "subtypes",
                           "--root", folder.root], monkeypatch, capsys)
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"REJECT predictions {tmp_path / 'preds'}: volume {vid}: {path}: not a label map "
                           "of the store's classes") and "1 voxels hold values other than 0" in line, line
    assert snapshot(folder.root) == before


def test_subtypes_of_a_store_without_classes_is_one_line(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    phantom_store(home, n=3)   # a binary store
    monkeypatch.setenv("ICHBENCH_HOME", str(home))
    root = copy_folder(tmp_path).root
    before = snapshot(root)
    (tmp_path / "preds").mkdir()
    code, out, err = call([*SUBMIT, "--predictions", tmp_path / "preds", "--task", "subtypes", "--root", root],
                          monkeypatch, capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("ichbench: error: --task subtypes: ") and "has no class map (a binary store)" in line
    assert snapshot(root) == before
