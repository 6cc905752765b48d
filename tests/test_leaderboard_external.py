"""Entries from any tool's predictions (issue 25 §3): `ichbench data export-folds` writes the
canonical folds, a "tool" (the test) writes one mask per volume, `ichbench leaderboard submit
--predictions` checks, scores and writes a self-reported external-tool entry; every bad input is
refused in one line naming the volume, the leaderboard folder left byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from ichbench.cli.leaderboard import app as lb_app
from ichbench.errors import IchbenchError
from ichbench.export.folds import export_folds, volume_rows
from ichbench.export.nifti import write_nifti_volume
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.render import render
from ichbench.leaderboard.validate import validate
from ichbench.splits import make_split
from ichbench.store import open_store
from tests.test_leaderboard_support import recorded_world

K = 3
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 6-volume phantom store (16 x 16 slices), its canonical record at k = 3, the export."""
    base, home, res, template = recorded_world(tmp_path_factory, "lb-external", K)
    store = open_store(res.path)
    doc = export_folds(store, "phantom", base / "export", k=K)
    rows = volume_rows(store)
    truth = {v: store.read("masks", rows[v]) > 0 for v in rows}
    spacing = {v["id"]: tuple(float(s) for s in v["spacing"]) for v in store.volumes}
    return {"home": home, "template": template, "store": store, "doc": doc, "export": base / "export",
            "truth": truth, "spacing": spacing, "images": {v: store.read("images", rows[v]) for v in rows}}


@pytest.fixture
def folder(world, tmp_path):
    dst = tmp_path / "leaderboard"
    shutil.copytree(world["template"].root, dst)
    return Folder(dst)


def test_export_is_the_canonical_split_and_the_stores_grid(world):
    doc, out, store = world["doc"], world["export"], world["store"]
    flags = {v["id"]: bool(v["has_ich"]) for v in store.volumes}
    canonical = make_split("phantom", flags, K)
    assert doc["hash"] == canonical["hash"] and doc["store_fingerprint"] == store.fingerprint
    saved = json.loads((out / "folds.json").read_text())
    assert [f["test"] for f in saved["folds"]] == [f["test"] for f in canonical["folds"]]
    for f in saved["folds"]:
        assert sorted(f["train"]) == sorted(set(flags) - set(f["test"]))
        assert (out / f"fold_{f['fold']}" / "test.txt").read_text().split() == f["test"]
        assert (out / f"fold_{f['fold']}" / "train.txt").read_text().split() == f["train"]
    nnunet = json.loads((out / "splits_final.json").read_text())
    assert [s["val"] for s in nnunet] == [f["test"] for f in canonical["folds"]]
    lines = (out / "folds.csv").read_text().split()
    assert lines[0] == "volume_id,fold" and len(lines) == len(flags) + 1
    assert {tuple(x.split(",")) for x in lines[1:]} == {(v, str(f["fold"])) for f in canonical["folds"]
                                                        for v in f["test"]}
    # the images and labels nnU-Net reads: the store's arrays, in (x, y, z) file order, its spacing
    raw = out / "nnUNet_raw" / "Dataset502_phantom"
    for vid, truth in world["truth"].items():
        img = nib.load(raw / "imagesTr" / f"{vid}_0000.nii.gz")
        assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), world["images"][vid])
        z, y, x = world["spacing"][vid]
        assert np.allclose(img.header.get_zooms(), (x, y, z))
        lab = np.asarray(nib.load(raw / "labelsTr" / f"{vid}.nii.gz").dataobj).transpose(2, 1, 0)
        assert np.array_equal(lab, truth.astype(np.uint8))
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == len(flags)


def test_export_refuses_a_folder_in_use(world, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(IchbenchError, match="already exists"):
        export_folds(world["store"], "phantom", out, k=K, images=False)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def _shifted(mask: np.ndarray) -> np.ndarray:
    """The mask moved one column to the right (what the test's 'tool' predicts for odd volumes)."""
    out = np.zeros_like(mask)
    out[:, :, 1:] = mask[:, :, :-1]
    return out


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """The paper's eq. 1 with eps = 1, counted here by hand."""
    tp = int((pred & truth).sum())
    fp, fn = int((pred & ~truth).sum()), int((~pred & truth).sum())
    return (2 * tp + 1) / (2 * tp + fp + fn + 1)


def tool_predictions(world, where: Path) -> dict:
    """The 'tool's' masks in nnU-Net's layout (fold_<i>/validation/<id>.nii.gz): the truth for even
    positions, the truth shifted for odd ones; one volume written by nibabel with its x axis
    flipped (RAS+ file order), as a tool that reorients would."""
    preds = {}
    for f in world["doc"]["folds"]:
        for n, vid in enumerate(f["test"]):
            truth = world["truth"][vid]
            preds[vid] = truth if n % 2 == 0 else _shifted(truth)
            path = where / f"fold_{f['fold']}" / "validation" / f"{vid}.nii.gz"
            write_nifti_volume(path, preds[vid].astype(np.uint8), world["spacing"][vid])
    vid = next(v for v in world["doc"]["folds"][0]["test"] if preds[v].any())
    assert not np.array_equal(preds[vid], preds[vid][:, :, ::-1])   # so a flip read as is would show
    z, y, x = world["spacing"][vid]
    flipped = preds[vid].astype(np.uint8).transpose(2, 1, 0)[::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(flipped), np.diag([x, -y, z, 1.0])),
             str(where / "fold_0" / "validation" / f"{vid}.nii.gz"))
    return preds


def _submit(world, folder, preds_dir, *extra):
    args = ["submit", "--predictions", str(preds_dir), "--dataset", "phantom", "--method", "threshold_tool",
            "--code-url", "https://example.org/tool", "--k", str(K), "--root", str(folder.root), *extra]
    old = os.environ.get("ICHBENCH_HOME")
    os.environ["ICHBENCH_HOME"] = str(world["home"])
    try:
        return runner.invoke(lb_app, args)
    finally:
        if old is None:
            os.environ.pop("ICHBENCH_HOME")
        else:
            os.environ["ICHBENCH_HOME"] = old


def test_submit_scores_a_tools_predictions_into_a_validated_external_entry(world, folder, tmp_path):
    preds = tool_predictions(world, tmp_path / "preds")
    out = _submit(world, folder, tmp_path / "preds", "--tool", "nnunetv2", "--tool-version", "2.6")
    assert out.exit_code == 0, out.output
    [path] = (folder.root / "entries" / "phantom").glob("threshold_tool--*.json")
    entry = json.loads(path.read_text())
    assert entry["kind"] == "external-tool" and entry["schema_version"] == 3
    assert entry["plugin"] == {"distribution": "nnunetv2", "version": "2.6"}
    fold_of = {v: f["fold"] for f in world["doc"]["folds"] for v in f["test"]}
    by_id = {r["volume_id"]: r for r in entry["per_volume"]}
    assert set(by_id) == set(world["truth"])
    for vid, r in by_id.items():
        truth, pred = world["truth"][vid], preds[vid]
        assert r["fold"] == fold_of[vid]
        assert (2 * r["tp"] + 1) / (2 * r["tp"] + r["fp"] + r["fn"] + 1) == pytest.approx(_dice(pred, truth))
        assert (r["tp"], r["fp"], r["fn"]) == (int((pred & truth).sum()), int((pred & ~truth).sum()),
                                               int((~pred & truth).sum()))
        assert "hd95_mm" in r and r["empty"] in ("none", "pred", "truth", "both")
    shifted = [v for v in by_id if not np.array_equal(preds[v], world["truth"][v])]
    assert shifted and all(by_id[v]["hd_mm"] == pytest.approx(world["spacing"][v][2]) for v in shifted
                           if world["truth"][v].any())
    # each fold's digest is that of its masks (ichbench.evaluate.digest's rule, written out here)
    for f in entry["folds"]:
        h = hashlib.sha256(b"ichbench-fold-predictions-v1\n")
        for vid in sorted(v for v in preds if fold_of[v] == f["fold"]):
            v = hashlib.sha256(b"ichbench-pred-v1\n" + ",".join(map(str, preds[vid].shape)).encode() + b"\n"
                               + np.packbits(preds[vid].ravel()).tobytes()).hexdigest()
            h.update(f"{vid} {v}\n".encode())
        assert f["predictions_sha256"] == h.hexdigest() and f["model_sha256"] is None
    report = validate(folder, [path])
    assert report.ok and report.accepted == [folder.rel(path)], [str(r) for r in report.rejections]
    render(folder)
    page = (folder.root / "index.html").read_text()
    assert "threshold_tool [nnunetv2 2.6] · self-reported, external tool · submission" in page
    assert "self-reported, external tool" in (folder.root / "README.md").read_text()


def test_an_edited_external_entry_is_rejected(world, folder, tmp_path):
    """The id names the predictions, and no external entry may take a built-in method's label."""
    tool_predictions(world, tmp_path / "preds")
    assert _submit(world, folder, tmp_path / "preds").exit_code == 0
    [path] = (folder.root / "entries" / "phantom").glob("threshold_tool--*.json")
    original = json.loads(path.read_text())
    entry = json.loads(path.read_text())
    entry["folds"][0]["predictions_sha256"] = "0" * 64
    path.write_text(json.dumps(entry))
    assert any("identified by the digest of its predictions" in r.reason
               for r in validate(folder, [path]).rejections)
    entry = {**original, "method": "multilabel_dl", "plugin": {"distribution": "ichbench", "version": "0.1.0"}}
    path.unlink()
    renamed = path.parent / f"multilabel_dl--{entry['mlflow_run_id'][:8]}.json"
    renamed.write_text(json.dumps(entry))
    [reason] = [r.reason for r in validate(folder, [renamed]).rejections]
    assert "is an external tool's entry: it needs a name of its own" in reason


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fold_dir(world, vid: str) -> str:
    return next(f"fold_{f['fold']}" for f in world["doc"]["folds"] if vid in f["test"])


def _bad(world, d: Path, case: str) -> tuple[list, str]:
    """Break the predictions in `d` one way; returns (extra CLI args, the volume the line names)."""
    folds = world["doc"]["folds"]
    vid = next(v for v in folds[1]["test"] if world["truth"][v].any())   # a volume with hemorrhage
    path = d / _fold_dir(world, vid) / "validation" / f"{vid}.nii.gz"
    mask = world["truth"][vid]
    if case == "missing":
        path.unlink()
    elif case == "extra":
        vid = "PH999"
        write_nifti_volume(d / "fold_1" / "validation" / "PH999.nii.gz", mask.astype(np.uint8),
                     world["spacing"][folds[1]["test"][0]])
    elif case == "shape":
        write_nifti_volume(path, mask[:-1].astype(np.uint8), world["spacing"][vid])
    elif case == "spacing":
        z, y, x = world["spacing"][vid]
        write_nifti_volume(path, mask.astype(np.uint8), (z, y * 2, x * 2))
    elif case == "non-binary":
        write_nifti_volume(path, mask.astype(np.uint8) * 2, world["spacing"][vid])
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif case == "wrong-fold":   # predicted by a fold that trained on it
        path.rename(d / "fold_0" / "validation" / path.name)
    elif case == "twice":
        shutil.copy(path, d / "fold_0" / "validation" / path.name)
    elif case in ("split", "leak"):   # flat layout, with a split file that moved one volume to fold 0
        for p in list(d.glob("fold_*/validation/*.nii.gz")):
            p.rename(d / p.name)
        given = [{"train": [], "val": list(f["test"])} for f in folds]
        if case == "split":
            given[1]["val"].remove(vid)
            given[0]["val"].append(vid)
        for g in given:
            g["train"] = sorted(set(world["truth"]) - set(g["val"]))
        if case == "leak":       # the canonical held-out sets, but fold 1 trained on its own test volume
            given[1]["train"].append(vid)
        (d.parent / "splits.json").write_text(json.dumps(given))
        return ["--split", str(d.parent / "splits.json")], vid
    return [], vid


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "spacing", "non-binary", "truncated",
                                  "wrong-fold", "twice", "split", "leak"])
def test_bad_predictions_are_refused_in_one_line_and_nothing_is_written(world, folder, tmp_path, case):
    tool_predictions(world, tmp_path / "preds")
    extra, vid = _bad(world, tmp_path / "preds", case)
    before = _tree(folder.root)
    out = _submit(world, folder, tmp_path / "preds", *extra)
    assert out.exit_code == 1, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("REJECT")]
    assert len(lines) == 1 and vid in lines[0], out.output
    if case in ("split", "leak"):   # named by the split check itself, before the masks' folds
        assert "--split" in lines[0]
    assert _tree(folder.root) == before


def test_flat_predictions_with_the_exported_split_file_are_accepted(world, folder, tmp_path):
    d = tmp_path / "preds"
    tool_predictions(world, d)
    for p in list(d.glob("fold_*/validation/*.nii.gz")):
        p.rename(d / p.name)
    out = _submit(world, folder, d, "--split", str(world["export"] / "splits_final.json"))
    assert out.exit_code == 0, out.output


def test_a_threshold_rule_run_on_the_exported_images_is_scored_as_the_store_scores(world, folder, tmp_path):
    """The 'external tool' of the issue: a threshold rule that reads the exported nnU-Net images
    and writes its masks with their headers (nibabel, as a foreign tool would), flat, with the
    exported folds.json as its split. Its counts are the rule applied to the store's own arrays."""
    raw = world["export"] / "nnUNet_raw" / "Dataset502_phantom" / "imagesTr"
    d = tmp_path / "rule"
    d.mkdir()
    for vid in world["truth"]:
        img = nib.load(raw / f"{vid}_0000.nii.gz")
        pred = (np.asarray(img.dataobj) > 33).astype(np.uint8)   # bleeds and some noise
        nib.save(nib.Nifti1Image(pred, img.affine), str(d / f"{vid}.nii.gz"))
    out = _submit(world, folder, d, "--split", str(world["export"] / "folds.json"))
    assert out.exit_code == 0, out.output
    [path] = (folder.root / "entries" / "phantom").glob("threshold_tool--*.json")
    rows = {r["volume_id"]: r for r in json.loads(path.read_text())["per_volume"]}
    for vid, truth in world["truth"].items():
        pred = world["images"][vid] > 33
        assert (rows[vid]["tp"], rows[vid]["fp"], rows[vid]["fn"]) == (
            int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum()))
    assert any(r["tp"] > 0 for r in rows.values()) and any(r["fp"] > 0 for r in rows.values())
    assert validate(folder, [path]).ok


def test_export_folds_command(world, tmp_path, monkeypatch):
    from ichbench.cli.data import app as data_app
    monkeypatch.setenv("ICHBENCH_HOME", str(world["home"]))
    out = tmp_path / "lists"
    res = runner.invoke(data_app, ["export-folds", "phantom", "--out", str(out), "--k", str(K), "--no-images"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "folds.json").read_text())["hash"] == world["doc"]["hash"]
    assert not (out / "nnUNet_raw").exists()
    again = runner.invoke(data_app, ["export-folds", "phantom", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (world["export"]).iterdir()
                                                           if p.name != "nnUNet_raw")
