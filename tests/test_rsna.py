"""The rsna reader on rsna-shaped folders built from real DICOM files: the CTs pydicom ships and
slices written here with pydicom."""

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ichbench.datasets.base import IngestOptions, IngestReport
from ichbench.testing.dicom import write_slice
from ichbench.datasets.rsna import RSNA_COLUMNS, RsnaDataset, select_slices, validation_mask
from ichbench.errors import InputError, LayoutError
from ichbench.preprocess.resize import resize_slices
from ichbench.ingest import ingest
from ichbench.store.reader import SliceStore

CT_SMALL = get_testdata_file("CT_small.dcm")
J2K = get_testdata_file("J2K_pixelrep_mismatch.dcm")
SERIES = "1.2.826.0.1.3680043.8.498.77"


def label_rows(image, subtypes=()):
    """The six RSNA rows of one image; `any` follows the subtypes."""
    rsna = {"iph": "intraparenchymal", "ivh": "intraventricular", "sah": "subarachnoid",
            "sdh": "subdural", "edh": "epidural"}
    pos = {rsna[s] for s in subtypes}
    return [[f"{image}_{c}", int(c in pos or (c == "any" and bool(subtypes)))] for c in RSNA_COLUMNS]


def write_csv(root, rows):
    with open(root / "stage_2_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Label"])
        w.writerows(rows)


def synthetic_series(img_dir, n, *, uid=SERIES, prefix="ID_syn", step=5.0, size=32, ich=()):
    """n slices 5 mm apart without SliceThickness (as RSNA files); raw = HU + 1024."""
    rows = []
    for k in range(n):
        image = f"{prefix}{k:03d}"
        raw = np.full((size, size), 1024 + 30 + k, np.uint16)
        write_slice(img_dir / f"{image}.dcm", raw, series_uid=uid, position=(0.0, 0.0, step * k),
                    thickness=None, spacing=(0.8, 0.8))
        rows += label_rows(image, ich if k in (1, 2) else ())
    return rows


def _hand_hu(path):
    ds = pydicom.dcmread(str(path))
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture
def rsna_source(tmp_path):
    root = tmp_path / "rsna"
    img = root / "stage_2_train"
    img.mkdir(parents=True)
    shutil.copy(CT_SMALL, img / "ID_ctsmall01.dcm")
    shutil.copy(J2K, img / "ID_j2khead01.dcm")
    rows = label_rows("ID_ctsmall01") + label_rows("ID_j2khead01", ["sdh", "sah"])
    rows += synthetic_series(img, 4, ich=("iph",))
    # bad inputs: truncated pixel data, a text file, a conflicting duplicate, labels without an
    # image, an image without labels, exact duplicate rows
    data = open(CT_SMALL, "rb").read()
    (img / "ID_6431af929.dcm").write_bytes(data[: len(data) // 2])
    rows += label_rows("ID_6431af929")
    (img / "ID_notdicom1.dcm").write_text("this is not DICOM\n")
    rows += label_rows("ID_notdicom1")
    shutil.copy(CT_SMALL, img / "ID_conflict1.dcm")
    rows += label_rows("ID_conflict1") + [["ID_conflict1_any", 1]]
    rows += label_rows("ID_absent001", ["edh"])
    shutil.copy(CT_SMALL, img / "ID_nolabel01.dcm")
    rows += rows[:6]
    write_csv(root, rows)
    return root


def _volume(store, vid):
    return next(v for v in store.volumes if v["id"] == vid)


def test_rsna_ingest_hu_labels_and_report(home, rsna_source):
    [res] = ingest(RsnaDataset(), home, rsna_source, options=IngestOptions(size=64, selection="all", holdout=0))
    store = SliceStore(res.path)
    data = store.load()
    assert store.n_slices == 6 and data["images"].shape == (6, 64, 64)

    # CT_small (128x128): hand HU = raw * slope + intercept from its own tags, resized like ingest
    ct = pydicom.dcmread(CT_SMALL)
    v = _volume(store, str(ct.SeriesInstanceUID))
    hand = _hand_hu(CT_SMALL)
    assert hand[64, 64] == int(ct.pixel_array[64, 64]) * 1.0 - 1024.0
    stored = data["images"][v["start"]]
    assert np.array_equal(stored, resize_slices(hand[None].astype(np.float32), 64)[0])
    # by hand: a 2x antialiased bilinear downsample weighs input rows/columns 2i-1..2i+2 by
    # (1, 3, 3, 1) / 8 each, and the result is rounded to int16
    w = np.array([1, 3, 3, 1]) / 8
    for r, c in [(32, 32), (10, 50), (40, 7)]:
        assert stored[r, c] == np.rint(w @ hand[2 * r - 1:2 * r + 3, 2 * c - 1:2 * c + 3] @ w)
    assert abs(stored.mean() - hand.mean()) < 2.0
    assert data["labels"][v["start"]].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert v["spacing"] == pytest.approx([5.0, 0.661468 * 2, 0.661468 * 2])

    # the JPEG 2000 head CT (512x512, intercept 0): HU = raw, -2000 padding clipped to -1024
    j2k = pydicom.dcmread(J2K)
    v = _volume(store, str(j2k.SeriesInstanceUID))
    hand = _hand_hu(J2K)
    stored = data["images"][v["start"]]
    assert np.array_equal(stored, resize_slices(hand[None].astype(np.float32), 64)[0])
    assert stored.min() == -1024 and 15 <= np.median(stored[28:36, 28:36]) <= 40
    assert data["labels"][v["start"]].tolist() == [0, 1, 0, 0, 1, 1, 0]
    assert v["subtypes"] == ["sah", "sdh"] and v["has_ich"] is True

    # the synthetic series: one volume, in slice order, z spacing from positions (no thickness tag)
    v = _volume(store, SERIES)
    assert v["n_slices"] == 4 and v["spacing"] == pytest.approx([5.0, 0.4, 0.4])
    rows = slice(v["start"], v["stop"])
    assert data["images"][rows, 0, 0].tolist() == [30, 31, 32, 33]
    assert data["labels"][rows, 1].tolist() == [0, 1, 1, 0] and data["labels"][rows, 2].tolist() == [0, 1, 1, 0]
    assert v["subtypes"] == ["iph"]

    skipped = {(s["file"].split("/")[-1], s["problem"].split(" (")[0]) for s in res.report.skipped}
    img = "stage_2_train.csv"
    assert ("ID_6431af929.dcm", "pixel data cannot be decoded") in skipped
    assert ("ID_notdicom1.dcm", "not a readable DICOM file") in skipped
    assert ("ID_nolabel01.dcm", "image has no usable labels in stage_2_train.csv") in skipped
    assert (img, "labels name ID_absent001 but stage_2_train/ID_absent001.dcm does not exist") in skipped
    assert any(f == img and "conflicting duplicate rows for ID_conflict1_any" in p for f, p in skipped)
    assert len(skipped) == 5
    assert res.report.warnings == [f"{rsna_source / img}: dropped 6 duplicated rows"]
    # the report is kept beside the store
    assert len(json.loads((res.path / "ingest_report.json").read_text())["skipped"]) == 5


def test_rsna_workers_give_the_same_store(home, tmp_path):
    root = tmp_path / "rsna"
    rows = synthetic_series(root / "stage_2_train", 6, ich=("sdh",))
    rows += synthetic_series(root / "stage_2_train", 3, uid="1.2.3.99", prefix="ID_other")
    write_csv(root, rows)
    opts = dict(size=32, selection="all", holdout=2)
    [one] = ingest(RsnaDataset(), home, root, options=IngestOptions(workers=1, **opts))
    fp1 = one.fingerprint
    [two] = ingest(RsnaDataset(), home, root, options=IngestOptions(workers=2, **opts), force=True)
    assert two.fingerprint == fp1 and SliceStore(two.path).n_slices == 9


def test_rsna_12bit_wrapped_series_by_hand(home, tmp_path):
    root = tmp_path / "rsna"
    raw = np.full((16, 16), 3096, np.uint16)          # air: -1000 HU wrapped
    raw[4:12, 4:12] = 40                              # brain 40 HU
    raw[6:8, 6:8] = 3500                              # -596 HU
    raw[0, :] = 1000                                  # bone 1000 HU
    write_slice(root / "stage_2_train" / "ID_wrapped01.dcm", raw, bits_stored=12, intercept=0.0,
                position=(0, 0, 0), thickness=5.0)
    write_csv(root, label_rows("ID_wrapped01"))
    [res] = ingest(RsnaDataset(), home, root, options=IngestOptions(size=16, selection="all", holdout=0))
    img = SliceStore(res.path).load(["images"])["images"][0]   # same size: no resampling
    expected = np.where(raw >= 3096, raw.astype(int) - 4096, raw.astype(int))
    assert img.tolist() == expected.tolist()
    assert img[0, 0] == 1000 and img[5, 5] == 40 and img[6, 6] == -596 and img[15, 15] == -1000


def test_rsna_strict_stops_at_the_first_bad_file(home, tmp_path):
    root = tmp_path / "rsna"
    rows = synthetic_series(root / "stage_2_train", 3)
    data = open(CT_SMALL, "rb").read()
    (root / "stage_2_train" / "ID_6431af929.dcm").write_bytes(data[: len(data) // 2])
    write_csv(root, rows + label_rows("ID_6431af929"))
    with pytest.raises(InputError) as err:
        ingest(RsnaDataset(), home, root, options=IngestOptions(size=32, selection="all", strict=True, holdout=0))
    assert str(err.value).startswith(str(root / "stage_2_train" / "ID_6431af929.dcm"))
    assert "pixel data cannot be decoded" in str(err.value)
    assert not (home / "stores" / "rsna" / "pretraining.zarr").exists()


def test_rsna_empty_csv_bad_rows_and_layout(home, tmp_path):
    root = tmp_path / "rsna"
    synthetic_series(root / "stage_2_train", 2)
    (root / "stage_2_train.csv").write_text("")
    with pytest.raises(InputError, match="empty CSV") as err:
        ingest(RsnaDataset(), home, root, options=IngestOptions(size=32))
    assert str(err.value).startswith(str(root / "stage_2_train.csv"))
    (root / "stage_2_train.csv").write_text("ID,Label\n")
    with pytest.raises(InputError, match="no label rows"):
        ingest(RsnaDataset(), home, root, options=IngestOptions(size=32))
    (root / "stage_2_train.csv").write_text("Image,Target\nID_syn000_any,0\n")
    with pytest.raises(InputError, match="expected the header 'ID,Label'"):
        ingest(RsnaDataset(), home, root, options=IngestOptions(size=32))
    # malformed rows and an incomplete image are reported; the good image is still ingested
    rows = label_rows("ID_syn000") + label_rows("ID_syn001")[:5] + [["ID_syn000_bleed", 1], ["ID_syn000_any", "yes"]]
    write_csv(root, rows)
    [res] = ingest(RsnaDataset(), home, root, options=IngestOptions(size=32, selection="all", holdout=0))
    problems = [s["problem"] for s in res.report.skipped]
    assert "ID_syn001 has no row for any; image left out" in problems
    assert any("is not ID_<image>_<subtype>" in p for p in problems)
    assert any("label 'yes' for ID_syn000_any is not 0 or 1" in p for p in problems)
    assert SliceStore(res.path).n_slices == 1
    shutil.rmtree(root / "stage_2_train")
    with pytest.raises(LayoutError, match=r"expected stage_2_train/ .* found: stage_2_train.csv"):
        ingest(RsnaDataset(), home, root, options=IngestOptions(size=32))


def test_rsna_paper_selection_and_holdout(home, tmp_path):
    root = tmp_path / "rsna"
    img = root / "stage_2_train"
    rows = []
    for k in range(10):
        image = f"ID_sel{k:05d}"
        write_slice(img / f"{image}.dcm", np.full((8, 8), 1024 + k, np.uint16), series_uid=f"1.2.{k % 2}",
                    position=(0, 0, 5.0 * k), thickness=None)
        rows += label_rows(image, ["ivh"] if k in (2, 5, 8) else ())
    write_csv(root, rows)
    [res] = ingest(RsnaDataset(), home, root, options=IngestOptions(size=8, selection="paper", holdout=2, seed=3))
    store = SliceStore(res.path)
    data = store.load()
    values = sorted(int(v) for v in data["images"][:, 0, 0])
    assert len(values) == 6 and {2, 5, 8} <= set(values)              # all 3 ICH + 3 non-ICH
    assert int(data["labels"][:, 1].sum()) == 3 and (data["labels"][:, 0] == 1 - data["labels"][:, 1]).all()
    val = validation_mask(store)
    assert int(val.sum()) == 2
    assert all(v["id"].startswith("val/") == bool(val[data["volume"] == i].all())
               for i, v in enumerate(store.volumes))
    # validation volumes come after the training volumes, each contiguous
    assert val.tolist() == [False] * 4 + [True] * 2 and all(v["start"] is not None for v in store.volumes)
    # the same seed selects the same slices; the choice does depend on the seed
    [again] = ingest(RsnaDataset(), home, root, force=True,
                     options=IngestOptions(size=8, selection="paper", holdout=2, seed=3))
    assert again.fingerprint == res.fingerprint
    any_ich = np.isin(np.arange(10), [2, 5, 8])
    picks = {tuple(select_slices(any_ich, "paper", 2, s)[0]) for s in range(8)}
    assert len(picks) > 1 and all({2, 5, 8} <= set(p) and len(p) == 6 for p in picks)


def test_select_slices_all_and_oversized_holdout():
    report = IngestReport()
    sel, is_val = select_slices(np.zeros(7, bool), "all", 5000, 0, report)
    assert sel.tolist() == list(range(7)) and int(is_val.sum()) == 3
    assert report.warnings == ["holdout 5000 exceeds half of the 7 selected slices; 3 held out for validation"]
    sel, _ = select_slices(np.array([1, 1, 1, 0], bool), "paper", 0, 0, report)
    assert sel.tolist() == [0, 1, 2, 3] and "only 1 non-ICH slices for 3 ICH slices" in report.warnings[-1]


def test_rsna_non_axial_and_missing_spacing_are_reported(home, tmp_path):
    root = tmp_path / "rsna"
    img = root / "stage_2_train"
    rows = synthetic_series(img, 2)
    write_slice(img / "ID_sagittal1.dcm", np.full((8, 8), 1000, np.uint16), orientation=(0, 1, 0, 0, 0, -1))
    write_slice(img / "ID_lonely001.dcm", np.full((8, 8), 1000, np.uint16), series_uid="9.9", thickness=None)
    write_csv(root, rows + label_rows("ID_sagittal1") + label_rows("ID_lonely001"))
    [res] = ingest(RsnaDataset(), home, root, options=IngestOptions(size=8, selection="all", holdout=0))
    problems = {s["file"].split("/")[-1]: s["problem"] for s in res.report.skipped}
    assert problems == {"ID_sagittal1.dcm": "slice is not axial (ImageOrientationPatient)",
                        "ID_lonely001.dcm": "slice spacing unknown: a single slice in its series and no SliceThickness"}
    assert SliceStore(res.path).n_slices == 2
