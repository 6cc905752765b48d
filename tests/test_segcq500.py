import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from ichbench.datasets import segcq500
from ichbench.datasets.base import IngestOptions, IngestReport
from ichbench.datasets.nifti_io import load_ct
from ichbench.datasets.segcq500 import SegCQ500Dataset
from ichbench.errors import InputError, LayoutError
from ichbench.plugins import Registry
from ichbench.preprocess.resize import resize_mask, resize_slices
from ichbench.store import open_store
from ichbench.ingest import REPORT_NAME, ingest
from tests.nifti_fixtures import (MARKER_HU, affine_for, file_layout, phantom, write_nifti, write_reads,
                                  write_segcq500)

SIZE = 64
NATIVE = 96


@pytest.fixture(scope="module")
def vols():
    # named so that numeric order (4, 12, 27) differs from text order (12, 27, 4)
    return {"CQ500-CT-4": phantom(0, ["iph", "sdh"]),
            "CQ500-CT-12": phantom(1, ["ivh"]),
            "CQ500-CT-27": phantom(2, ["sah"])}


# three storage layouts, one with a 15 degree gantry-tilt shear: all must give the same store
LAYOUTS = {"CQ500-CT-12": ("R", "A", "S"), "CQ500-CT-27": ("P", "R", "I")}
TILTS = {"CQ500-CT-12": 15.0}
VOTES = {"CQ500-CT-4": {"iph": (1, 1, 0), "sdh": (1, 0, 1), "sah": (1, 0, 0)},
         "CQ500-CT-12": {"ivh": (0, 1, 1), "edh": (0, 0, 1)}}


def _write_all(tmp_path, vols, reads=True):
    src = tmp_path / "src"
    write_segcq500(src, vols, layouts=LAYOUTS, tilts=TILTS)
    if reads:
        write_reads(src / "reads.csv", VOTES, extra_names=["CQ500-CT-100", "CQ500-CT-3"])
    return src


def test_sheared_affine_loads_with_store_orientation_and_plane_spacing(tmp_path, vols):
    vol = vols["CQ500-CT-4"]
    path = write_nifti(tmp_path / "CT.nii", vol.hu, vol.spacing, axcodes=("L", "A", "S"), tilt_deg=20.0)
    affine = nib.load(path).affine
    assert abs(affine[1, 2]) > 1.0                        # really sheared, not diagonal
    ct = load_ct(path)
    np.testing.assert_array_equal(ct.data, vol.hu)
    # the header zoom is the slice-centre distance 5/cos(20deg) = 5.321 mm; voxels use the plane distance
    assert nib.load(path).header.get_zooms()[2] == pytest.approx(5.0 / np.cos(np.radians(20)), rel=1e-4)
    assert ct.spacing == pytest.approx(vol.spacing, rel=1e-5)


def test_ingest_matches_written_volumes(tmp_path, home, vols):
    src = _write_all(tmp_path, vols)
    [res] = ingest(SegCQ500Dataset(), home, src, options=IngestOptions(size=SIZE))
    st = open_store(res.path)
    data = st.load()
    table = st.volumes
    assert [v["id"] for v in table] == ["CQ500-CT-4", "CQ500-CT-12", "CQ500-CT-27"]
    assert [(v["start"], v["stop"]) for v in table] == [(0, 6), (6, 12), (12, 18)]
    for v in table:
        vol = vols[v["id"]]
        sl = slice(v["start"], v["stop"])
        # same slices, same order, same orientation, whatever the file layout or shear
        np.testing.assert_array_equal(data["images"][sl], resize_slices(vol.hu, SIZE))
        np.testing.assert_array_equal(data["masks"][sl], resize_mask(vol.mask, SIZE))
        np.testing.assert_array_equal(data["brain"][sl], resize_mask(vol.brain, SIZE))  # shipped, not computed
        z, y, x = vol.spacing
        assert v["spacing"] == pytest.approx([z, y * NATIVE / SIZE, x * NATIVE / SIZE], rel=1e-5)
    # head up, patient right on the image's left: the marker sits in the top-left corner only
    img = data["images"].astype(float)
    assert (img[:, 2:6, 2:8] > MARKER_HU - 100).all()
    assert (img[:, -6:-2, 2:8] < 0).all() and (img[:, 2:6, -8:-2] < 0).all()
    # subtypes by majority of three readers; no reads row -> unknown
    assert [v["subtypes"] for v in table] == [["iph", "sdh"], ["ivh"], None]
    labels = data["labels"]
    ich = data["masks"].reshape(18, -1).any(axis=1)
    assert (labels[:, 1] == ich).all() and (labels[:, 0] == ~ich).all()
    first = labels[0:6]
    ich0 = ich[0:6]
    assert ich0.any() and (~ich0).any()
    assert (first[ich0][:, [2, 5]] == 255).all()          # present in the volume, slice unknown
    assert (first[ich0][:, [3, 4, 6]] == 0).all()         # absent from the volume
    assert (first[~ich0][:, 2:] == 0).all()
    assert (labels[12:18][ich[12:18]][:, 2:] == 255).all()
    warnings = res.report.warnings
    assert any("found 3 usable Seg-CQ500 volumes" in w and "expected 51" in w for w in warnings)
    assert any("no row for CQ500-CT-27" in w for w in warnings)
    assert res.report.skipped == []


def test_source_may_be_the_segcq500_folder_and_reads_an_option(tmp_path, home, vols):
    two = {k: vols[k] for k in ("CQ500-CT-4", "CQ500-CT-12")}
    src = _write_all(tmp_path, two, reads=False)
    reads = write_reads(tmp_path / "elsewhere.csv", VOTES)
    os.remove(src / "Seg-CQ500" / "data" / "volumes" / "info.csv")
    [res] = ingest(SegCQ500Dataset(), home, src / "Seg-CQ500",
                   options=IngestOptions(size=SIZE, extra={"reads": str(reads)}))
    st = open_store(res.path)
    assert [v["subtypes"] for v in st.volumes] == [["iph", "sdh"], ["ivh"]]
    assert any("info.csv not found" in w for w in res.report.warnings)


def test_info_csv_cross_checks_the_volume_list(tmp_path, vols):
    src = _write_all(tmp_path, vols)
    shutil.rmtree(src / "Seg-CQ500" / "data" / "volumes" / "CQ500-CT-27")
    with open(src / "Seg-CQ500" / "data" / "volumes" / "info.csv", "a") as fh:
        fh.write("9,99,CQ500-CT-99.nii,30,CQ500-CT-99,0.1,0.1\n")
    report = IngestReport()
    ids = [v.id for v in SegCQ500Dataset().read(src, "segmentation", IngestOptions(), report)]
    assert ids == ["CQ500-CT-4", "CQ500-CT-12"]
    listed = [w for w in report.warnings if "info.csv" in w]
    assert len(listed) == 1 and "CQ500-CT-27" in listed[0] and "CQ500-CT-99" in listed[0]


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _rewrite_ct(vol, **kw):
    def mutate(folder):
        hu = vol.hu.copy()
        if kw.get("nan"):
            hu[2, 40, 40] = np.nan
        if "zoom" in kw:   # a header whose pixdim disagrees with its own affine
            img = nib.Nifti1Image(file_layout(hu)[0].astype(np.int16), affine_for(("L", "A", "S"), vol.spacing))
            img.header["pixdim"][3] = kw["zoom"]
            nib.save(img, folder / "CT.nii")
        else:
            write_nifti(folder / "CT.nii", hu, vol.spacing, dtype=np.float32 if kw.get("nan") else np.int16)
    return mutate


BAD = {
    "missing CT": (lambda f, v: os.remove(f / "CT.nii"), "CT.nii", "missing"),
    "missing mask": (lambda f, v: os.remove(f / "ICH_mask.nii.gz"), "ICH_mask.nii.gz", "missing"),
    "mask shape": (lambda f, v: write_nifti(f / "ICH_mask.nii.gz", v.mask[:-1], v.spacing, dtype=np.uint8),
                   "ICH_mask.nii.gz", "differs from the CT shape"),
    "mask orientation": (lambda f, v: write_nifti(f / "ICH_mask.nii.gz", v.mask, v.spacing, axcodes=("R", "P", "S"),
                                                  dtype=np.uint8), "ICH_mask.nii.gz", "orientation"),
    "NaN voxel": (lambda f, v: _rewrite_ct(v, nan=True)(f), "CT.nii", "NaN"),
    "zero spacing": (lambda f, v: _rewrite_ct(v, zoom=0.0)(f), "CT.nii", "invalid voxel spacing"),
    "truncated": (lambda f, v: _truncate(f / "CT.nii"), "CT.nii", "truncated"),
    "not NIfTI": (lambda f, v: (f / "CT.nii").write_bytes(b"not an image at all"), "CT.nii", "not a readable NIfTI"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_skipped_with_one_line_or_raised_when_strict(case, tmp_path, home, vols):
    mutate, filename, problem = BAD[case]
    good, bad = vols["CQ500-CT-4"], vols["CQ500-CT-12"]
    src = tmp_path / "src"
    write_segcq500(src, {"CQ500-CT-1": good, "CQ500-CT-2": bad})
    folder = src / "Seg-CQ500" / "data" / "volumes" / "CQ500-CT-2"
    mutate(folder, bad)
    ds = SegCQ500Dataset()
    [res] = ingest(ds, home, src, options=IngestOptions(size=SIZE))
    [item] = res.report.skipped
    assert item["file"] == str(folder / filename)
    assert problem in item["problem"] and "\n" not in item["problem"]
    st = open_store(res.path)
    assert [v["id"] for v in st.volumes] == ["CQ500-CT-1"]
    on_disk = json.loads((res.path / REPORT_NAME).read_text())
    assert on_disk["skipped"] == res.report.skipped
    before = st.fingerprint
    with pytest.raises(InputError) as err:
        ingest(ds, home, src, options=IngestOptions(size=SIZE, strict=True), force=True)
    assert err.value.path == str(folder / filename) and problem in str(err.value)
    assert open_store(res.path).fingerprint == before       # nothing already stored is lost


def test_bad_brain_mask_falls_back_to_the_computed_one(tmp_path, home, vols):
    vol = vols["CQ500-CT-4"]
    src = tmp_path / "src"
    write_segcq500(src, {"CQ500-CT-1": vol})
    brain = src / "Seg-CQ500" / "data" / "volumes" / "CQ500-CT-1" / "brain.nii.gz"
    write_nifti(brain, vol.brain[1:], vol.spacing, dtype=np.uint8)
    [res] = ingest(SegCQ500Dataset(), home, src, options=IngestOptions(size=SIZE))
    [item] = res.report.skipped
    assert item["file"] == str(brain) and "computed brain mask" in item["problem"]
    assert any("no CQ500 reads.csv" in w and "subtypes unknown" in w for w in res.report.warnings)
    data = open_store(res.path).load()
    assert data["images"].shape[0] == 6 and data["brain"].any()


def test_reads_csv_problems_are_reported(tmp_path):
    report = IngestReport()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert segcq500.parse_reads(empty, report) is None
    short = tmp_path / "short.csv"
    short.write_text("name,R1:ICH\nCQ500-CT-1,1\n")
    assert segcq500.parse_reads(short, report) is None
    dup = write_reads(tmp_path / "dup.csv", VOTES)
    lines = dup.read_text().splitlines()
    lines.append(lines[1].replace(",1,", ",0,"))           # CQ500-CT-4 again, with other votes
    dup.write_text("\n".join(lines) + "\n")
    got = segcq500.parse_reads(dup, report)
    assert got["CQ500-CT-4"] == ["iph", "sdh"]               # the first row wins
    files = [s["file"] for s in report.skipped]
    assert files == [str(empty), str(short), f"{dup}:4"]
    assert "empty" in report.skipped[0]["problem"]
    assert "R2:IPH" in report.skipped[1]["problem"]
    assert "second row for CQ500-CT-4; the first is used" in report.skipped[2]["problem"]


def test_wrong_layout_names_the_expected_path(tmp_path):
    ds = SegCQ500Dataset()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "volumes").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(LayoutError) as err:
        ds.check_layout(tmp_path / "a")
    msg = str(err.value)
    assert f"expected Seg-CQ500/data/volumes/<CQ500-CT-N>/CT.nii under {tmp_path / 'a'}" in msg
    assert "found: notes.txt, volumes/" in msg
    vdir = tmp_path / "b" / "Seg-CQ500" / "data" / "volumes" / "CQ500-CT-1"
    vdir.mkdir(parents=True)
    (vdir / "ct.nii.gz.part").write_text("")
    with pytest.raises(LayoutError, match="found no CT.nii in .*volumes, which holds: CQ500-CT-1/"):
        ds.check_layout(tmp_path / "b")
    # a missing folder says where the data comes from (download, licence, layout, docs)
    with pytest.raises(LayoutError, match="no raw segcq500 data at .*missing\n  get it from https://zenodo"):
        ingest(ds, tmp_path / "home", tmp_path / "missing")


def test_registered_through_the_plugin_hook():
    reg = Registry()
    assert reg.add_plugin(segcq500, "segcq500", builtin=True)
    ds = reg.datasets()["segcq500"]
    info = ds.describe()
    assert info["roles"] == ["segmentation"] and "8063221" in info["source_url"]
    assert "Seg-CQ500/data/volumes/CQ500-CT-<N>/CT.nii" in info["layout"] and info["licence"]
