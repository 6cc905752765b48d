"""`ichbench predict` (issue 11): a finished fold's model applied to a DICOM series and a NIfTI
volume, results on the input's own grid, a DICOM SEG that reads back, an ensemble that is the
mean-probability rule, and one line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ichbench.resolve import resolve
from ichbench.errors import IchbenchError
from ichbench.predict import load_ensemble, predict_scan, read_scan, write_outputs
from ichbench.predict.infer import network_input
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.slow]   # its module fixture trains a run on Ray


@pytest.fixture(scope="module")
def trained(phantom_stores, phantom_store, tmp_path_factory):
    """Two fold models of unet_mixed on the session phantom (64x64 native and stored): fold 0 with
    half the smoke budget, fold 1 with a few steps (only needs to differ)."""
    out = tmp_path_factory.mktemp("fold_models")
    split = split_for_store(open_store(phantom_store), 3)
    results = {}
    for fold, extra in ((0, ["finetune.epochs=8"]), (1, ["finetune.epochs=1", "finetune.steps_per_epoch=4"])):
        cfg = resolve("unet_mixed", "phantom", "smoke", extra)
        results[fold] = finetune("unet_mixed", phantom_store, split, fold, cfg, out / f"fold_{fold}",
                                 device="cpu", progress=False)
    return phantom_stores, results


def dicom_folder(home: Path, vid: str) -> Path:
    return home / "raw" / "phantom" / "segmentation" / vid / "dicom"


def ich_test_volume(result: dict) -> dict:
    return max(result["volumes"], key=lambda r: r["true_ml"])


def test_dicom_prediction_reproduces_the_fold_evaluation(trained, tmp_path):
    """On the phantom the scan's grid is the store's and the training grid (64x64): the predicted
    volume must equal the fold evaluation's for that volume exactly — the prediction path adds no
    error of its own — and the evaluation's truth is the generator's mask volume."""
    home, results = trained
    row = ich_test_volume(results[0])
    ens = load_ensemble(checkpoints=[Path(results[0]["model"]["path"])])
    scan = read_scan(dicom_folder(home, row["volume_id"]))
    rep = write_outputs(tmp_path / "out", scan, predict_scan(ens, scan), ens)
    assert rep["hemorrhage"]["volume_ml"] == pytest.approx(row["pred_ml"], rel=1e-9, abs=1e-9)
    from ichbench.datasets.phantom.files import read_nifti_mask
    truth = read_nifti_mask(dicom_folder(home, row["volume_id"]).parent / "ICH_mask.nii.gz")
    truth_voxels = int(truth.sum())
    assert row["true_ml"] == pytest.approx(truth_voxels * scan.voxel_ml)
    assert rep["hemorrhage"]["voxels"] == row["tp"] + row["fp"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["mask.dcm", "mask.nii.gz", "overlay.png", "report.json"]
    assert rep["model"]["checkpoints"] == [{"fold": 0, "sha256": results[0]["model"]["sha256"]}]
    assert "not a medical device" in rep["disclaimer"]


def test_dicom_seg_reads_back_and_references_the_series(trained, tmp_path):
    import highdicom as hd
    import pydicom
    home, results = trained
    row = ich_test_volume(results[0])
    folder = dicom_folder(home, row["volume_id"])
    ens = load_ensemble(checkpoints=[Path(results[0]["model"]["path"])])
    scan = read_scan(folder)
    pred = predict_scan(ens, scan)
    write_outputs(tmp_path / "out", scan, pred, ens)
    seg_path = tmp_path / "out" / "mask.dcm"
    sources = [pydicom.dcmread(str(s.path), stop_before_pixels=True) for s in scan.slices]
    uids = [str(s.SOPInstanceUID) for s in sources]
    # plain pydicom: the SEG references exactly this series and shares its frame of reference
    raw = pydicom.dcmread(str(seg_path))
    assert raw.Modality == "SEG" and raw.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = [str(i.ReferencedSOPInstanceUID) for i in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(uids)
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    # highdicom: the frames put back on the source slices equal the predicted mask
    seg = hd.seg.segread(str(seg_path))
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    assert back.shape == pred.mask.shape and np.array_equal(back.astype(bool), pred.mask)


def _ras_mask(path: Path):
    """A written mask.nii.gz read back with plain nibabel: (voxels in RAS order, mL from its header)."""
    import nibabel as nib
    img = nib.as_closest_canonical(nib.load(str(path)))
    voxels = np.asarray(img.dataobj) > 0
    return voxels, float(voxels.sum() * np.prod(img.header.get_zooms()[:3]) / 1000)


def test_nifti_prediction_matches_the_dicom_prediction_of_the_same_scan(trained, tmp_path):
    """The phantom's DICOM series and the same HU saved as a NIfTI file on the same grid, with its
    axes permuted and flipped (file axes P, I, R): the network sees the same image, so the two
    written masks, read back with nibabel and put in RAS order, are the same voxels, and both
    reports give the mL those files hold."""
    import nibabel as nib

    from tests.nifti_fixtures import write_nifti
    home, results = trained
    row = ich_test_volume(results[0])
    ens = load_ensemble(checkpoints=[Path(results[0]["model"]["path"])])
    dicom = read_scan(dicom_folder(home, row["volume_id"]))
    drep = write_outputs(tmp_path / "dicom", dicom, predict_scan(ens, dicom), ens)
    path = write_nifti(tmp_path / "ct.nii.gz", dicom.hu, dicom.spacing, axcodes=("P", "I", "R"))
    assert nib.aff2axcodes(nib.load(str(path)).affine) == ("P", "I", "R")
    nrep = write_outputs(tmp_path / "nifti", read_scan(path), predict_scan(ens, read_scan(path)), ens)
    d_mask, d_ml = _ras_mask(tmp_path / "dicom" / "mask.nii.gz")
    n_mask, n_ml = _ras_mask(tmp_path / "nifti" / "mask.nii.gz")
    assert nib.load(str(tmp_path / "nifti" / "mask.nii.gz")).shape == nib.load(str(path)).shape
    assert d_mask.shape == n_mask.shape == (64, 64, 16)
    assert d_mask.sum() > 0, "the fold model should find the bleed of the largest-ICH test volume"
    assert np.array_equal(d_mask, n_mask)
    # the volume each report states is the one its file holds (header spacing: float32 in NIfTI)
    assert drep["hemorrhage"]["volume_ml"] == pytest.approx(d_ml, rel=1e-6)
    assert nrep["hemorrhage"]["volume_ml"] == pytest.approx(n_ml, rel=1e-6)
    assert nrep["hemorrhage"]["volume_ml"] == pytest.approx(drep["hemorrhage"]["volume_ml"], rel=1e-6)
    assert nrep["hemorrhage"]["voxels"] == drep["hemorrhage"]["voxels"] == int(d_mask.sum())
    # slices are numbered as each input counts them: DICOM inferior first, this file superior first
    n = dicom.hu.shape[0]
    assert nrep["hemorrhage"]["slices"] == sorted(n - 1 - k for k in drep["hemorrhage"]["slices"])
    assert drep["hemorrhage"]["slices"] == sorted(int(k) for k in np.flatnonzero(d_mask.any(axis=(0, 1))))


def test_nifti_output_keeps_the_input_grid_and_affine(trained, tmp_path):
    """A NIfTI input in an unusual voxel layout at twice the phantom's resolution: the mask is
    written in the file's own voxel order with its affine, its mL counted on that grid, and
    resampling the prediction back from the network's grid (128 -> 64 -> 128) moves its volume
    by no more than a boundary would. (The same-grid comparison with the DICOM prediction is
    test_nifti_prediction_matches_the_dicom_prediction_of_the_same_scan.)"""
    import nibabel as nib
    from scipy import ndimage

    from ichbench.datasets.nifti_io import load_ct, load_mask
    from tests.nifti_fixtures import write_nifti
    home, results = trained
    row = ich_test_volume(results[0])
    dicom = read_scan(dicom_folder(home, row["volume_id"]))
    fine = ndimage.zoom(dicom.hu, (1, 2, 2), order=1)
    z, y, x = dicom.spacing
    path = write_nifti(tmp_path / "ct.nii.gz", fine, (z, y / 2, x / 2), axcodes=("R", "P", "I"))
    ens = load_ensemble(checkpoints=[Path(results[0]["model"]["path"])])
    scan = read_scan(path)
    pred = predict_scan(ens, scan)
    rep = write_outputs(tmp_path / "out", scan, pred, ens)
    out = nib.load(str(tmp_path / "out" / "mask.nii.gz"))
    src = nib.load(str(path))
    assert np.allclose(out.affine, src.affine) and out.shape == src.shape
    assert np.array_equal(load_mask(tmp_path / "out" / "mask.nii.gz", load_ct(path)), pred.mask)
    # mL is counted on the input's own grid: voxels x the NIfTI header's voxel volume
    assert rep["hemorrhage"]["voxels"] == int(pred.mask.sum())
    assert rep["hemorrhage"]["volume_ml"] == pytest.approx(pred.mask.sum() * z * (y / 2) * (x / 2) / 1000)
    # Resampling back from the network's 64x64 grid moves a boundary by under a coarse pixel: the
    # volume stays within 15 % (1 mL for small bleeds) of the network-grid mask's own volume.
    coarse = float((pred.network_probability[0] > 0.5).sum() * z * y * x / 1000)
    assert coarse > 0.5, "the fold model should find the bleed of the largest-ICH test volume"
    assert abs(rep["hemorrhage"]["volume_ml"] - coarse) <= max(1.0, 0.15 * coarse), (rep["hemorrhage"], coarse)


def test_an_ensemble_is_the_mean_probability_rule(trained):
    home, results = trained
    row = ich_test_volume(results[0])
    scan = read_scan(dicom_folder(home, row["volume_id"]))
    paths = [Path(results[f]["model"]["path"]) for f in (0, 1)]
    both = predict_scan(load_ensemble(checkpoints=paths), scan)
    alone = {f: predict_scan(load_ensemble(checkpoints=[paths[f]]), scan) for f in (0, 1)}
    assert not np.array_equal(both.mask, alone[0].mask) or not np.array_equal(both.mask, alone[1].mask)
    assert not np.allclose(alone[0].probability, alone[1].probability)
    mean = (alone[0].network_probability[0] + alone[1].network_probability[1]) / 2
    assert np.allclose(both.network_probability[0], alone[0].network_probability[0])
    from ichbench.predict.infer import _to_grid
    assert np.allclose(both.probability, _to_grid(mean, scan.hu.shape[1:]), atol=1e-6)
    assert np.array_equal(both.mask, both.probability > 0.5)
    # --folds picks among them
    assert [f.fold for f in load_ensemble(checkpoints=paths, folds=[1]).folds] == [1]
    with pytest.raises(IchbenchError, match=r"no model for fold\(s\) \[3\]"):
        load_ensemble(checkpoints=paths, folds=[3])


def test_external_scoring_is_the_prediction_of_the_ensemble(trained, phantom_store):
    """`ichbench run --test-on` (train.external) scores each fold model and their ensemble as
    `ichbench predict` applies them: on the phantom's grid its predicted volumes are predict's exactly."""
    from ichbench.train.external import score_test_set
    home, results = trained
    vid = ich_test_volume(results[0])["volume_id"]
    paths = {f: Path(results[f]["model"]["path"]) for f in (0, 1)}
    scored = score_test_set(paths, phantom_store, resolve("unet_mixed", "phantom", "smoke"))
    scan = read_scan(dicom_folder(home, vid))
    row = {k: next(r for r in rows if r["volume_id"] == vid) for k, rows in
           [("ensemble", scored["ensemble"]), *((f, scored["folds"][f]) for f in (0, 1))]}
    for key, models in (("ensemble", list(paths.values())), (0, [paths[0]]), (1, [paths[1]])):
        mask = predict_scan(load_ensemble(checkpoints=models), scan).mask
        assert row[key]["pred_ml"] == pytest.approx(mask.sum() * scan.voxel_ml, rel=1e-9, abs=1e-9), key
    assert row[0]["pred_ml"] != row[1]["pred_ml"]   # the fold models differ: which one is averaged matters
    assert len(scored["ensemble"]) == len(open_store(phantom_store).volumes)


def test_pydicom_ct_small_goes_through(trained, tmp_path):
    """A real CT slice shipped with pydicom (a single-slice series with a 12-bit-style rescale)."""
    import shutil

    from pydicom.data import get_testdata_file
    folder = tmp_path / "ct_small"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    home, results = trained
    ens = load_ensemble(checkpoints=[Path(results[0]["model"]["path"])])
    scan = read_scan(folder)
    assert scan.hu.shape == (1, 128, 128) and network_input(ens, scan).shape == (1, 64, 64)
    rep = write_outputs(tmp_path / "out", scan, predict_scan(ens, scan), ens)
    assert (tmp_path / "out" / "mask.dcm").is_file() and rep["input"]["slices"] == 1


def cli(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ichbench.cli.main", "predict", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "ICHBENCH_HOME": str(home)}, timeout=180)


def test_every_bad_input_is_one_line_and_writes_nothing(trained, tmp_path):
    import pydicom
    home, results = trained
    model = results[0]["model"]["path"]
    good = dicom_folder(home, ich_test_volume(results[0])["volume_id"])
    out = tmp_path / "out"

    def refused(*args, expect: str):
        res = cli(tmp_path, *args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert expect in lines[0], lines[0]
        assert not out.exists() or not any(out.iterdir())

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "x.dcm").write_bytes(b"not dicom at all")
    refused("--checkpoint", model, "--input", garbage, "--output", out, expect="x.dcm: not a readable DICOM file")
    mr = tmp_path / "mr"
    mr.mkdir()
    for p in sorted(good.iterdir())[:3]:
        ds = pydicom.dcmread(str(p))
        ds.Modality = "MR"
        ds.save_as(str(mr / p.name))
    refused("--checkpoint", model, "--input", mr, "--output", out, expect="modality is MR, not CT")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, p in enumerate(sorted(good.iterdir())[:4]):
        ds = pydicom.dcmread(str(p))
        if i % 2:
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99"
        ds.save_as(str(mixed / p.name))
    refused("--checkpoint", model, "--input", mixed, "--output", out,
            expect="holds 2 series, pick one with --series UID")
    import nibabel as nib
    bad_nifti = tmp_path / "nan.nii.gz"
    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4))
    img.header["pixdim"][1:4] = [float("nan"), 1.0, 1.0]
    nib.save(img, str(bad_nifti))
    refused("--checkpoint", model, "--input", bad_nifti, "--output", out, expect="invalid voxel spacing")
    refused("--checkpoint", tmp_path / "nothing.pt", "--input", good, "--output", out, expect="checkpoint not found")
    torch.save({"kind": "training_state"}, tmp_path / "state.pt")
    refused("--checkpoint", tmp_path / "state.pt", "--input", good, "--output", out, expect="not a fold model")
    refused("--run", "0" * 32, "--input", good, "--output", out, expect="no run 00000000")
    refused("--input", good, "--output", out, expect="give exactly one of --run, --entry and --checkpoint")
    # and a good one writes everything
    res = cli(tmp_path, "--checkpoint", model, "--input", good, "--output", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["hemorrhage"]["volume_ml"] >= 0 and (out / "mask.dcm").is_file()


def test_predict_by_run_id_finds_the_fold_models_in_mlflow(phantom_home, ray_session, tmp_path):
    """A real `ichbench run` parent run: its fold runs carry model.pt, predict averages them."""
    from ichbench.orchestrate.driver import Driver
    from ichbench.orchestrate.plan import plan_method
    from ichbench.tracking import Tracker, default_tracking_uri
    uri = default_tracking_uri(phantom_home)
    plan = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0, 1],
                       overrides=["finetune.epochs=1", "finetune.steps_per_epoch=3"])
    outcome = Driver(Tracker(uri, phantom_home)).run(plan)
    vid = plan.split["folds"][0]["test"][0]
    ens = load_ensemble(run_id=outcome.parent_run_id, tracking_uri=uri, cache=tmp_path / "cache")
    assert [f.fold for f in ens.folds] == [0, 1] and ens.run_id == outcome.parent_run_id
    scan = read_scan(dicom_folder(phantom_home, vid))
    rep = write_outputs(tmp_path / "out", scan, predict_scan(ens, scan), ens)
    assert rep["model"]["run_id"] == outcome.parent_run_id and rep["model"]["folds"] == [0, 1]
