import csv
import json
import os

import numpy as np
import pytest

from ichbench import SUBTYPES
from ichbench.datasets import hssayeni
from ichbench.datasets.base import IngestOptions, IngestReport
from ichbench.datasets.hssayeni import HssayeniDataset
from ichbench.errors import InputError, LayoutError
from ichbench.plugins import Registry
from ichbench.preprocess.resize import resize_mask, resize_slices
from ichbench.store import open_store
from ichbench.ingest import REPORT_NAME, ingest
from tests.nifti_fixtures import MARKER_HU, phantom, slice_rows, write_hssayeni, write_nifti

SIZE = 64
NATIVE = 96
CSV_NAME = "hemorrhage_diagnosis_raw_ct.csv"


@pytest.fixture(scope="module")
def vols():
    return {49: phantom(3, ["iph", "edh"]), 50: phantom(4, []), 66: phantom(5, ["sdh", "ivh"])}


def _slice_flags(vol):
    """(S, 5) ground-truth subtype flags per store slice, in SUBTYPES order."""
    return np.stack([vol.subtype_masks[s].reshape(len(vol.hu), -1).any(axis=1) for s in SUBTYPES], axis=1)


def test_ingest_matches_written_volumes_and_csv(tmp_path, home, vols):
    src = tmp_path / "src"
    root = src / "physionet.org" / "files" / "ct-ich" / "1.3.1"      # as PhysioNet's wget nests it
    # patient 66 is stored with its slices running superior -> inferior (SliceNumber 1 = top)
    write_hssayeni(root, vols, layouts={66: ("L", "A", "I")})
    [res] = ingest(HssayeniDataset(), home, src, options=IngestOptions(size=SIZE))
    st = open_store(res.path)
    data = st.load()
    assert [v["id"] for v in st.volumes] == ["049", "050", "066"]
    labels = data["labels"]
    for v in st.volumes:
        vol = vols[int(v["id"])]
        sl = slice(v["start"], v["stop"])
        np.testing.assert_array_equal(data["images"][sl], resize_slices(vol.hu, SIZE))
        np.testing.assert_array_equal(data["masks"][sl], resize_mask(vol.mask, SIZE))
        z, y, x = vol.spacing
        assert v["spacing"] == pytest.approx([z, y * NATIVE / SIZE, x * NATIVE / SIZE], rel=1e-5)
        flags = _slice_flags(vol)
        # slice labels from the CSV land on the right slices, in [no_ich, any, iph, ivh, sah, sdh, edh]
        np.testing.assert_array_equal(labels[sl, 2:], flags.astype(np.uint8))
        ich = vol.mask.reshape(len(vol.hu), -1).any(axis=1)
        np.testing.assert_array_equal(labels[sl, 1], ich)
        np.testing.assert_array_equal(labels[sl, 0], ~ich)
        assert v["subtypes"] == [s for s, f in zip(SUBTYPES, flags.any(axis=0)) if f]  # in SUBTYPES order
        assert v["has_ich"] == bool(ich.any())
    assert [v["subtypes"] for v in st.volumes] == [["iph", "edh"], [], ["ivh", "sdh"]]
    img = data["images"].astype(float)   # head up, patient right on the left: marker top-left only
    assert (img[:, 2:6, 2:8] > MARKER_HU - 100).all()
    assert (img[:, -6:-2, 2:8] < 0).all() and (img[:, 2:6, -8:-2] < 0).all()
    assert res.report.skipped == []
    assert res.report.warnings == [f"found 3 usable volumes with 18 slices in {root}, "
                                   f"expected 75 volumes with 2,814 slices"]


def test_authors_rotation_is_applied_whatever_the_affine_says(tmp_path, vols):
    # the same voxels with an affine claiming the first axis runs to the patient's right:
    # the authors' rotation still decides, so the picture is the LAS one; a warning names the file
    vol = vols[49]
    write_hssayeni(tmp_path, {49: vol})
    write_nifti(tmp_path / "ct_scans" / "049.nii", vol.hu[:, :, ::-1], vol.spacing, axcodes=("R", "A", "S"),
                dtype=np.float32)
    write_nifti(tmp_path / "masks" / "049.nii", vol.mask[:, :, ::-1], vol.spacing, axcodes=("R", "A", "S"),
                dtype=np.float32)
    report = IngestReport()
    [got] = HssayeniDataset().read(tmp_path, "segmentation", IngestOptions(), report)
    np.testing.assert_array_equal(got.hu, vol.hu)
    np.testing.assert_array_equal(got.mask, vol.mask)
    assert any("disagree with the authors' head-up rotation" in w and "049.nii" in w for w in report.warnings)


def _csv_append(root, rows):
    with open(root / CSV_NAME, "a", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _csv_line_count(root):
    return len((root / CSV_NAME).read_text().splitlines())


def _dup_row(root):
    first = (root / CSV_NAME).read_text().splitlines()[3]   # patient 49, slice 3
    _csv_append(root, [first.split(",")])
    return f"{root / CSV_NAME}:{_csv_line_count(root)}"


def _nan_ct(path, vol):
    hu = vol.hu.copy()
    hu[2, 40, 40] = np.nan
    return write_nifti(path, hu, vol.spacing, dtype=np.float32)


def _remove(path):
    os.remove(path)
    return path


# case -> (mutate(root, vols) returning the expected file (None: the CSV), problem, stored ids)
BAD = {
    "empty CSV": (lambda r, v: (r / CSV_NAME).write_text(""), "empty", ["049", "050"]),
    "rows for an absent patient": (lambda r, v: _csv_append(r, [[131, 1, 0, 0, 0, 0, 0, 1, 0]]),
                                   "patient 131, but ct_scans/131.nii does not exist", ["049", "050"]),
    "rows beyond the last slice": (lambda r, v: _csv_append(r, [[49, 7, 0, 0, 0, 0, 0, 1, 0],
                                                               [49, 9, 0, 0, 0, 0, 0, 1, 0]]),
                                   "patient 49 slices 7, 9 but 049.nii has 6 slices", ["049", "050"]),
    "duplicate row": (lambda r, v: _dup_row(r), "duplicate row for patient 49 slice 3 (first at line 4)",
                      ["049", "050"]),
    "non-numeric value": (lambda r, v: (_csv_append(r, [[50, "x", 0, 0, 0, 0, 0, 1, 0]]),
                                        f"{r / CSV_NAME}:{_csv_line_count(r)}")[1], "non-numeric", ["049", "050"]),
    "mask shape": (lambda r, v: write_nifti(r / "masks" / "050.nii", v[50].mask[:, :-2], v[50].spacing,
                                            dtype=np.float32), "differs from the CT shape", ["049"]),
    "NaN voxel": (lambda r, v: _nan_ct(r / "ct_scans" / "050.nii", v[50]), "1 NaN or infinite", ["049"]),
    "missing mask": (lambda r, v: _remove(r / "masks" / "050.nii"), "missing", ["049"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_skipped_with_one_line_or_raised_when_strict(case, tmp_path, home, vols):
    mutate, problem, ids = BAD[case]
    root = tmp_path / "src"
    write_hssayeni(root, {49: vols[49], 50: vols[50]})
    expected = mutate(root, vols)
    expected = str(expected) if isinstance(expected, (str, os.PathLike)) else str(root / CSV_NAME)
    ds = HssayeniDataset()
    [res] = ingest(ds, home, root, options=IngestOptions(size=SIZE))
    [item] = res.report.skipped
    assert item["file"] == expected
    assert problem in item["problem"] and "\n" not in item["problem"]
    st = open_store(res.path)
    assert [v["id"] for v in st.volumes] == ids
    assert json.loads((res.path / REPORT_NAME).read_text())["skipped"] == res.report.skipped
    before = st.fingerprint
    with pytest.raises(InputError) as err:
        ingest(ds, home, root, options=IngestOptions(size=SIZE, strict=True), force=True)
    assert err.value.path == expected and problem in str(err.value)
    assert open_store(res.path).fingerprint == before       # nothing already stored is lost


def test_empty_csv_leaves_subtypes_unknown(tmp_path, home, vols):
    write_hssayeni(tmp_path, {49: vols[49]})
    (tmp_path / CSV_NAME).write_text("")
    [res] = ingest(HssayeniDataset(), home, tmp_path, options=IngestOptions(size=SIZE))
    st = open_store(res.path)
    labels = st.load(["labels"])["labels"]
    ich = labels[:, 1] == 1
    assert st.volumes[0]["subtypes"] is None
    assert (labels[ich, 2:] == 255).all() and (labels[~ich, 2:] == 0).all()


def test_csv_disagreeing_with_the_mask_is_reconciled_and_warned(tmp_path, vols):
    vol = vols[49]
    rows = slice_rows(49, vol)
    ich = vol.mask.reshape(6, -1).any(axis=1)
    empty, bleeding = int(np.flatnonzero(~ich)[0]), int(np.flatnonzero(ich)[0])
    rows[empty][2:8] = [0, 0, 1, 0, 0, 0]          # SAH on a slice whose mask is empty
    rows[bleeding][2:8] = [0, 0, 0, 0, 0, 1]       # No_Hemorrhage on a slice with hemorrhage
    write_hssayeni(tmp_path, {49: vol}, rows=rows)
    report = IngestReport()
    [got] = HssayeniDataset().read(tmp_path, "segmentation", IngestOptions(), report)
    assert (got.labels[empty, 2:] == 0).all()
    assert (got.labels[bleeding, 2:] == 255).all()
    assert "sah" not in got.subtypes
    assert any("049.nii: 1 slice(s) labelled hemorrhage" in w and "1 slice(s) with hemorrhage in the mask" in w
               for w in report.warnings)


def test_slices_without_rows_are_unknown(tmp_path, vols):
    vol = vols[49]
    rows = slice_rows(49, vol)
    del rows[2]                                    # SliceNumber 3
    write_hssayeni(tmp_path, {49: vol}, rows=rows)
    report = IngestReport()
    [got] = HssayeniDataset().read(tmp_path, "segmentation", IngestOptions(), report)
    ich3 = vol.mask[2].any()
    assert (got.labels[2, 2:] == (255 if ich3 else 0)).all()
    assert any("no rows for patient 49 slices 3" in w for w in report.warnings)


def test_wrong_layout_names_the_expected_path(tmp_path, vols):
    ds = HssayeniDataset()
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as err:
        ds.check_layout(tmp_path / "empty")
    assert str(err.value) == (f"expected ct_scans/NNN.nii, masks/NNN.nii and {CSV_NAME} under "
                              f"{tmp_path / 'empty'}; found: (empty folder)")
    write_hssayeni(tmp_path / "nocsv", {49: vols[49]})
    os.remove(tmp_path / "nocsv" / CSV_NAME)
    with pytest.raises(LayoutError, match=f"found: no {CSV_NAME} in {tmp_path / 'nocsv'}"):
        ingest(ds, tmp_path / "home", tmp_path / "nocsv")
    for twin in ("a", "b"):
        (tmp_path / "twins" / twin / "ct_scans").mkdir(parents=True)
    with pytest.raises(LayoutError, match="found several"):
        ds.check_layout(tmp_path / "twins")


def test_registered_through_the_plugin_hook():
    reg = Registry()
    assert reg.add_plugin(hssayeni, "hssayeni", builtin=True)
    info = reg.datasets()["hssayeni"].describe()
    assert info["roles"] == ["segmentation"] and "ct-ich" in info["source_url"]
    assert "ct_scans/NNN.nii" in info["layout"] and "head points up" in info["layout"]
