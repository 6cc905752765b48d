"""The phantom end to end: real DICOM/NIfTI/CSV files -> the shared readers (the rsna reader for
pretraining) -> the slice store, and the CLI on top. The generator itself: test_phantom_generator.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage

from ichbench import LABEL_ORDER, SUBTYPES
from ichbench.datasets.base import IngestOptions
from ichbench.datasets.phantom import files
from ichbench.datasets.phantom.generator import class_map, cohort_plan, generate_volume
from ichbench.datasets.phantom.plugin import PhantomDataset, _pretrain_seed, phantom_settings
from ichbench.datasets.rsna import validation_mask
from ichbench.errors import IchbenchError, InputError
from ichbench.preprocess.resize import resize_mask, resize_slices
from ichbench.store import open_store
from ichbench.ingest import ingest

TINY = {"volumes": 5, "slices": 8, "native_size": 64, "pretrain_volumes": 3}
ICHBENCH = Path(sys.executable).with_name("ichbench")


def tiny_options(**extra) -> IngestOptions:
    return IngestOptions(size=64, extra={**TINY, **extra})


def ground_truth(prefix="PH", n=TINY["volumes"], seed=0):
    s = phantom_settings(tiny_options(seed=seed))
    return [generate_volume(vs, vol_id=vid, slices=s["slices"], size=s["native_size"], subtypes=subs)
            for vid, vs, subs in cohort_plan(n, seed=seed, ich_fraction=s["ich_fraction"], prefix=prefix)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    results = ingest(PhantomDataset(), home, options=tiny_options())
    return home, {r.role: r for r in results}


# -- options ---------------------------------------------------------------------------------------

def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(IchbenchError, match="unknown phantom option"):
        phantom_settings(IngestOptions(extra={"volume": 3}))
    with pytest.raises(IchbenchError, match="slices must be an integer >= 4"):
        phantom_settings(IngestOptions(extra={"slices": 2}))
    (tmp_path / "mine.txt").write_text("do not delete")
    with pytest.raises(InputError, match="not a phantom folder"):
        PhantomDataset().prepare(tmp_path, tiny_options())
    assert (tmp_path / "mine.txt").exists()


# -- the files -------------------------------------------------------------------------------------

def test_dicom_files_carry_the_tags(built):
    home, _ = built
    vol = ground_truth()[0]
    series = sorted((home / "raw/phantom/segmentation" / vol.id / "dicom").glob("*.dcm"))
    assert len(series) == TINY["slices"]
    z, sops = [], set()
    for k, path in enumerate(series):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.PatientID == vol.id and ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (64, 64)
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 0)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([vol.spacing[1], vol.spacing[2]], abs=1e-5)
        assert float(ds.SliceThickness) == 5.0
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert isinstance(ds.WindowCenter, MultiValue) and isinstance(ds.WindowWidth, MultiValue)
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert uid.is_valid
        # raw = HU + 1024, exactly
        assert np.array_equal(ds.pixel_array.astype(np.int32), vol.hu[k].astype(np.int32) + 1024)
        z.append(float(ds.ImagePositionPatient[2]))
        sops.add(ds.SOPInstanceUID)
    assert np.allclose(np.diff(z), 5.0) and len(sops) == len(series)
    # UIDs are a function of the seed: a rewrite in another folder gives the same ones
    again = files.write_series(vol, home / "again")
    assert [sop for _, sop in again] == [pydicom.dcmread(p).SOPInstanceUID for p in series]


def test_nifti_round_trip_matches_dicom_orientation(built, tmp_path):
    home, _ = built
    vol = next(v for v in ground_truth() if v.mask.any())
    vdir = home / "raw/phantom/segmentation" / vol.id
    assert np.array_equal(files.read_nifti_mask(vdir / "ICH_mask.nii.gz"), vol.mask)
    assert np.array_equal(files.read_nifti_mask(vdir / "brain.nii.gz"), vol.brain)
    img = nib.load(vdir / "ICH_mask.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    data = np.asarray(img.dataobj)
    assert data.shape == (64, 64, TINY["slices"])                     # (column, row, slice)
    assert np.array_equal(data, vol.mask.transpose(2, 1, 0))
    # voxel (col c, row r, slice k) is the point DICOM puts pixel [r, c] of slice k at
    ds = pydicom.dcmread(sorted((vdir / "dicom").glob("*.dcm"))[3])
    c, r = 10, 20
    lps = np.array([float(v) for v in ds.ImagePositionPatient]) + \
        np.array([c * float(ds.PixelSpacing[1]), r * float(ds.PixelSpacing[0]), 0])
    ras = img.affine @ np.array([c, r, 3, 1])
    assert np.allclose(ras[:3] * [-1, -1, 1], lps, atol=1e-3)
    # a mask saved in another orientation (RAS canonical flips two axes) still lines up
    nib.save(nib.as_closest_canonical(img), tmp_path / "ras.nii.gz")
    assert nib.aff2axcodes(nib.load(tmp_path / "ras.nii.gz").affine) == ("R", "A", "S")
    assert np.array_equal(files.read_nifti_mask(tmp_path / "ras.nii.gz"), vol.mask)


def test_label_files(built):
    home, _ = built
    raw = home / "raw/phantom"
    manifest = json.loads((raw / "phantom.json").read_text())
    assert manifest["options"] == phantom_settings(tiny_options())
    with open(raw / "segmentation/labels.csv") as f:
        rows = list(csv.DictReader(f))
    gt = ground_truth()
    assert len(rows) == len(gt) * TINY["slices"]
    by_vol = {v.id: v for v in gt}
    for row in rows:
        v, k = by_vol[row["volume"]], int(row["slice"])
        assert int(row["any"]) == int(v.mask[k].any())
        assert [int(row[s]) for s in SUBTYPES] == [int(v.subtype_masks[s][k].any()) for s in SUBTYPES]
    with open(raw / "pretraining/stage_2_train.csv") as f:
        rsna_rows = list(csv.reader(f))
    assert rsna_rows[0] == ["ID", "Label"]
    n_images = TINY["pretrain_volumes"] * TINY["slices"]
    assert len(rsna_rows) == 1 + 6 * n_images
    assert rsna_rows[1][0].startswith("ID_") and rsna_rows[1][0].endswith("_epidural")
    assert len(list((raw / "pretraining/stage_2_train").glob("ID_*.dcm"))) == n_images


# -- the stores ------------------------------------------------------------------------------------

def test_segmentation_store_matches_ground_truth(built):
    home, res = built
    store = open_store(res["segmentation"].path)
    gt = ground_truth()
    info = store.info()
    assert info["n_volumes"] == len(gt) and info["n_slices"] == len(gt) * TINY["slices"]
    assert info["subtype_volumes"] == {s: sum(s in v.subtypes for v in gt) for s in SUBTYPES}
    assert info["n_ich_volumes"] == sum(bool(v.subtypes) for v in gt)
    assert store.verify() == []
    data = store.load()
    assert set(data) == {"images", "masks", "labels", "volume", "brain", "classes"}
    for i, (entry, v) in enumerate(zip(store.volumes, gt)):
        assert entry["id"] == v.id and entry["subtypes"] == [s for s in SUBTYPES if s in v.subtypes]
        assert entry["spacing"] == pytest.approx(list(v.spacing))       # native 64 -> store 64
        sl = slice(entry["start"], entry["stop"])
        assert (data["volume"][sl] == i).all()
        # same HU as the generator (native and store size are both 64: no resampling)
        assert np.array_equal(data["images"][sl], resize_slices(v.hu, 64))
        assert np.array_equal(data["masks"][sl], resize_mask(v.mask, 64))
        assert np.array_equal(data["brain"][sl], v.brain.astype(np.uint8))
        assert np.array_equal(data["classes"][sl], class_map(v.subtype_masks))
        labels = data["labels"][sl]
        anyich = v.mask.reshape(len(v.mask), -1).any(axis=1)
        assert np.array_equal(labels[:, 1], anyich) and np.array_equal(labels[:, 0], ~anyich)
        assert np.array_equal(labels[:, 2:], v.slice_labels)
    n_ich = sum(int(v.mask.reshape(len(v.mask), -1).any(axis=1).sum()) for v in gt)
    assert info["n_ich_slices"] == n_ich > 0


def test_resampled_hu_of_known_regions(tmp_path):
    # 64 native -> 128 stored: the mean HU of large regions survives the resampling
    home = tmp_path / "h"
    res = ingest(PhantomDataset(), home, roles=["segmentation"], options=IngestOptions(size=128, extra=TINY))
    store = open_store(res[0].path)
    images = store.load(["images"])["images"]
    checked_blood = False
    for entry, v in zip(store.volumes, ground_truth()):
        img = images[entry["start"]:entry["stop"]].astype(np.float32)
        regions = {"air": (v.hu < -900, (-1010, -990)),
                   "parenchyma": (ndimage.binary_erosion(v.brain, iterations=4) & ~v.mask, (22, 40)),
                   # blood away from the skull, whose partial volume would lift it
                   "blood": (ndimage.binary_erosion(v.mask) & ndimage.binary_erosion(v.brain, iterations=3),
                             (55, 90))}
        for name, (region, (lo, hi)) in regions.items():
            up = resize_mask(ndimage.binary_erosion(region) if name != "blood" else region, 128).astype(bool)
            if not up.any():
                continue
            checked_blood |= name == "blood"
            assert lo < img[up].mean() < hi, name
            assert abs(img[up].mean() - v.hu[region].mean()) < 5, name
        # the skull stays bone on every slice
        assert (img.reshape(len(img), -1).max(axis=1) > 700).all()
    assert checked_blood


def test_pretraining_store_goes_through_the_rsna_reader(built):
    _, res = built
    store = open_store(res["pretraining"].path)
    assert store.attrs["dataset"] == "phantom" and store.attrs["role"] == "pretraining"
    assert "masks" not in store.arrays
    gt = ground_truth(prefix="PT", n=TINY["pretrain_volumes"], seed=_pretrain_seed(0))
    truth = {}
    for v in gt:
        for k in range(len(v.hu)):
            anyich = int(v.mask[k].any())
            truth[resize_slices(v.hu[k:k + 1], 64).tobytes()] = [1 - anyich, anyich, *v.slice_labels[k]]
    n_ich = sum(lab[1] for lab in truth.values())
    data = store.load(["images", "labels"])
    # paper selection: every ICH slice and as many non-ICH slices, each exactly a phantom slice
    assert store.n_slices == 2 * n_ich and data["labels"][:, 1].sum() == n_ich
    for img, lab in zip(data["images"], data["labels"]):
        assert list(lab) == truth[img.tobytes()]
    # volumes are series (rsna convention), 10% of the slices held out for validation
    assert validation_mask(store).sum() == store.n_slices // 10
    # the default hold-out (RSNA's 5,000) is capped silently; one the user asked for is reported
    assert not any("hold-out capped" in w for w in res["pretraining"].report.warnings)
    # the readers announced what they would yield: the progress bars' totals
    assert res["pretraining"].report.expected_slices == store.n_slices
    assert res["segmentation"].report.expected_volumes == TINY["volumes"]


def test_a_requested_hold_out_that_is_too_large_is_reported(tmp_path):
    [res] = ingest(PhantomDataset(), tmp_path, roles=["pretraining"],
                   options=dataclasses.replace(tiny_options(), holdout=400))
    assert any(w.startswith("phantom: validation hold-out capped") for w in res.report.warnings)


def test_determinism_reingest_and_regeneration(built, tmp_path):
    home, res = built
    again = {r.role: r for r in ingest(PhantomDataset(), tmp_path / "h2", options=tiny_options())}
    for role in ("segmentation", "pretraining"):
        assert again[role].fingerprint == res[role].fingerprint and not again[role].skipped_as_unchanged
    # unchanged sources: nothing regenerated, nothing re-ingested
    dcm = home / "raw/phantom/segmentation/PH000/dicom/IM0000.dcm"
    mtime = dcm.stat().st_mtime_ns
    noop = ingest(PhantomDataset(), home, options=tiny_options())
    assert all(r.skipped_as_unchanged for r in noop)
    assert dcm.stat().st_mtime_ns == mtime
    # another seed: different content and fingerprint, in place of the old files
    other = ingest(PhantomDataset(), tmp_path / "h2", roles=["segmentation"], options=tiny_options(seed=5))[0]
    assert not other.skipped_as_unchanged and other.fingerprint != res["segmentation"].fingerprint
    assert json.loads((tmp_path / "h2/raw/phantom/phantom.json").read_text())["options"]["seed"] == 5


def test_damaged_volume_is_skipped_and_reported(tmp_path):
    home = tmp_path / "h"
    source = home / "raw/phantom"
    PhantomDataset().prepare(source, tiny_options())
    (source / "segmentation/PH001/dicom/IM0003.dcm").write_bytes(b"not dicom")
    np_mask = files.read_nifti_mask(source / "segmentation/PH002/ICH_mask.nii.gz")
    files.write_nifti_mask(np_mask[:-1], np.eye(4), source / "segmentation/PH002/ICH_mask.nii.gz")
    res = ingest(PhantomDataset(), home, roles=["segmentation"], options=tiny_options())[0]
    assert [v["id"] for v in open_store(res.path).volumes] == ["PH000", "PH003", "PH004"]
    problems = {Path(s["file"]).name: s["problem"] for s in res.report.skipped}
    assert "not a readable DICOM file" in problems["IM0003.dcm"]
    assert "differs from the CT series shape" in problems["ICH_mask.nii.gz"]
    with pytest.raises(InputError, match="IM0003.dcm: not a readable DICOM"):
        ingest(PhantomDataset(), home, roles=["segmentation"],
               options=IngestOptions(size=64, strict=True, extra=TINY), force=True)


# -- the command line ------------------------------------------------------------------------------

def test_cli_ingest_info_verify(home, registry):
    from typer.testing import CliRunner

    from ichbench.cli.main import app

    # the installed console script, in a process of its own
    r = subprocess.run([str(ICHBENCH), "--home", str(home), "data", "ingest", "phantom", "--size", "48",
                        "-o", "volumes=3", "-o", "slices=6", "-o", "native_size=48", "-o", "pretrain_volumes=2"],
                       capture_output=True, text=True, env={**os.environ, "ICHBENCH_LOAD_PLUGINS": ""}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "phantom / segmentation" in r.stdout and "phantom / pretraining" in r.stdout

    def cli(*args):
        return CliRunner().invoke(app, ["--home", str(home), *args])

    r = cli("data", "info", "phantom", "--json")
    assert r.exit_code == 0, r.output
    both = json.loads(r.stdout)
    assert both["dataset"] == "phantom" and set(both["roles"]) == {"segmentation", "pretraining"}
    info = both["roles"]["segmentation"]
    for key in ("path", "fingerprint", "n_volumes", "n_slices", "n_ich_slices", "subtype_volumes"):
        assert key in info
    assert (info["n_volumes"], info["n_slices"], info["image_size"]) == (3, 18, 48)
    assert set(info["subtype_volumes"]) == set(LABEL_ORDER[2:])
    only = json.loads(cli("data", "info", "phantom", "--role", "pretraining", "--json").stdout)["roles"]
    assert list(only) == ["pretraining"] and only["pretraining"] == both["roles"]["pretraining"]
    pre = only["pretraining"]
    assert pre["role"] == "pretraining" and pre["n_ich_slices"] * 2 == pre["n_slices"]
    r = cli("data", "verify", "phantom")
    assert r.exit_code == 0, r.output
    # flip bytes inside one shard of images: verify must notice
    shard = next(p for p in sorted((Path(info["path"]) / "images" / "c").rglob("*")) if p.is_file())
    blob = bytearray(shard.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 64] = bytes(b ^ 0xFF for b in blob[mid:mid + 64])
    shard.write_bytes(bytes(blob))
    r = cli("data", "verify", "phantom")
    assert r.exit_code != 0 and "images" in r.output


def _flip_bytes(store: Path) -> None:
    """Damage one shard of a store's images, as a disk or a bad copy might."""
    shard = next(p for p in sorted((store / "images" / "c").rglob("*")) if p.is_file())
    blob = bytearray(shard.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 64] = bytes(b ^ 0xFF for b in blob[mid:mid + 64])
    shard.write_bytes(bytes(blob))


def test_info_and_verify_cover_every_role(phantom_home, registry):
    import shutil

    from typer.testing import CliRunner

    from ichbench.cli.main import app
    from ichbench.store import store_path

    def cli(*args):
        return CliRunner().invoke(app, ["--home", str(phantom_home), *args])

    seg, pre = (store_path(phantom_home, "phantom", r) for r in ("segmentation", "pretraining"))
    r = cli("data", "info", "phantom")
    assert r.exit_code == 0, r.output
    assert "phantom / segmentation" in r.output and "phantom / pretraining" in r.output
    roles = json.loads(cli("data", "info", "phantom", "--json").stdout)["roles"]
    assert roles["segmentation"]["n_slices"] == open_store(seg).n_slices
    assert roles["pretraining"]["n_slices"] == open_store(pre).n_slices
    r = cli("data", "verify", "phantom")
    assert r.exit_code == 0 and f"{seg}: OK" in r.output and f"{pre}: OK" in r.output

    # a damaged pretraining store fails the dataset's verify, and the segmentation store is still checked
    _flip_bytes(pre)
    r = cli("data", "verify", "phantom")
    assert r.exit_code == 1
    assert f"{pre}: array images, shard 0 (slices 0-" in r.output and f"{seg}: OK" in r.output
    assert cli("data", "verify", "phantom", "--role", "segmentation").exit_code == 0
    assert cli("data", "verify", "phantom", "--role", "pretraining").exit_code == 1

    # a role without a store is named, and is no failure while another store exists
    shutil.rmtree(pre)
    r = cli("data", "info", "phantom")
    assert r.exit_code == 0 and "phantom / segmentation" in r.output
    assert "phantom/pretraining: no store yet" in r.output and "phantom / pretraining" not in r.output
    assert json.loads(cli("data", "info", "phantom", "--json").stdout)["roles"]["pretraining"] is None
    r = cli("data", "verify", "phantom")
    assert r.exit_code == 0 and "phantom/pretraining: no store yet" in r.output
    r = cli("data", "verify", "phantom", "--role", "pretraining")
    assert r.exit_code == 2 and "phantom/pretraining: no store yet" in r.stderr
    shutil.rmtree(seg)
    r = cli("data", "verify", "phantom")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "ichbench: error: dataset 'phantom' has no store yet (roles: segmentation, pretraining); "
        "run `ichbench data ingest phantom`"]
