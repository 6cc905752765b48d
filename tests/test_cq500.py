"""The cq500 reader on a cq500-shaped folder of small CT series written here with pydicom."""

import csv

import numpy as np
import pytest

import ichbench.datasets.cq500 as cq500
from ichbench.datasets.base import IngestOptions, IngestReport
from ichbench.datasets.cq500 import CQ500Dataset, exclusion, read_reads
from ichbench.testing.dicom import write_slice
from ichbench.errors import InputError, LayoutError
from ichbench.ingest import ingest
from ichbench.store.reader import SliceStore

SAGITTAL = (0, 1, 0, 0, 0, -1)


def series(study, name, n, *, step, tag, uid=None, kernel=None, orientation=(1, 0, 0, 0, 1, 0),
           positions=None, description=None, first=0):
    """n 6x6 slices whose stored value is 1024 + tag*100 + k, i.e. HU = tag*100 + k."""
    folder = study / "Unknown Study" / name
    uid = uid or f"1.2.826.0.1.3680043.8.498.{abs(hash((str(study), name))) % 10**8}"
    for k in range(n):
        z = positions[k] if positions else step * k
        write_slice(folder / f"CT{first + k:06d}.dcm", np.full((6, 6), 1024 + tag * 100 + k, np.uint16),
                    series_uid=uid, position=(0.0, 0.0, z), orientation=orientation, spacing=(0.45, 0.45),
                    thickness=step, kernel=kernel, description=description or name[3:])
    return folder


def write_reads(root, rows):
    cols = ["name", "Category"] + [f"{r}:{k}" for r in ("R1", "R2", "R3")
                                   for k in ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "Fracture")]
    with open(root / "reads.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for name, readers in rows:
            line = [name, "B1"]
            for found in readers:
                line += [int(bool(found))] + [int(k in found) for k in ("IPH", "IVH", "SDH", "EDH", "SAH")] + [0]
            w.writerow(line)


@pytest.fixture
def cq_source(tmp_path):
    root = tmp_path / "cq500"
    s0 = root / "CQ500CT0 CQ500CT0"
    series(s0, "CT PLAIN", 3, step=5.0, tag=1)
    series(s0, "CT PLAIN THIN", 4, step=0.625, tag=2)
    series(s0, "CT BONE", 4, step=0.5, tag=3)
    series(s0, "CT POST CONTRAST", 4, step=0.5, tag=4)
    series(s0, "CT Thin Details", 4, step=0.5, tag=5, kernel="BONE")        # bone by its kernel tag
    s1 = root / "CQ500CT1 CQ500CT1"
    series(s1, "CT 5mm", 3, step=5.0, tag=6)
    series(s1, "CT 0.625mm", 2, step=0.625, tag=7, uid="1.2.3.1")           # two series in one folder
    series(s1, "CT 0.625mm", 2, step=0.625, tag=7, uid="1.2.3.2", positions=[10.0, 10.625], first=2)
    series(s1, "CT Axial thin", 3, step=0.6, tag=8, positions=[0.0, 0.6, 0.6])  # duplicate position
    s2 = root / "CQ500CT2 CQ500CT2"
    series(s2, "CT PLAIN", 3, step=5.0, tag=9, orientation=SAGITTAL)        # not axial
    series(s2, "CT SAG", 3, step=5.0, tag=9, orientation=SAGITTAL)          # a reformat: silently left
    series(root / "CQ500CT3 CQ500CT3", "CT Plain", 3, step=5.0, tag=10)
    write_reads(root, [("CQ500-CT-0", [["IPH", "SDH"], ["IPH"], []]),
                       ("CQ500-CT-1", [[], [], []]),
                       ("CQ500-CT-2", [["SAH"], ["SAH"], ["SAH"]]),
                       ("CQ500-CT-9", [[], [], []])])
    return root


def test_cq500_chooses_plain_thin_axial_series_and_reports_the_rest(home, cq_source, monkeypatch):
    monkeypatch.setattr(cq500, "CHUNK", 3)   # a study arrives in chunks and is appended
    [res] = ingest(CQ500Dataset(), home, cq_source, options=IngestOptions(size=6, workers=1))
    store = SliceStore(res.path)
    data = store.load()
    vols = {v["id"]: v for v in store.volumes}
    assert list(vols) == ["CQ500-CT-0", "CQ500-CT-1", "CQ500-CT-3"]

    v0 = vols["CQ500-CT-0"]   # CT PLAIN THIN: the thinnest plain series (bone, contrast left out)
    assert v0["n_slices"] == 4 and (v0["start"], v0["stop"]) == (0, 4)
    assert data["images"][0:4, 0, 0].tolist() == [200, 201, 202, 203]
    assert v0["spacing"] == pytest.approx([0.625, 0.45, 0.45])
    assert v0["subtypes"] == ["iph"]                     # IPH 2 of 3 readers, SDH only 1
    v1 = vols["CQ500-CT-1"]   # the 0.625 mm folder mixes series, the thin axial one repeats a slice
    assert data["images"][v1["start"]:v1["stop"], 0, 0].tolist() == [600, 601, 602]
    assert v1["subtypes"] == [] and vols["CQ500-CT-3"]["subtypes"] is None
    # slice labels are unknown: the reads are about the whole scan
    assert (data["labels"] == 255).all()

    problems = {(s["file"].replace(str(cq_source) + "/", ""), s["problem"].split(" (")[0])
                for s in res.report.skipped}
    assert ("CQ500CT1 CQ500CT1/Unknown Study/CT 0.625mm", "folder mixes 2 series") in problems
    assert ("CQ500CT1 CQ500CT1/Unknown Study/CT Axial thin", "two slices share the same position") in problems
    assert ("CQ500CT2 CQ500CT2/Unknown Study/CT PLAIN", "series is not axial") in problems
    assert ("CQ500CT2 CQ500CT2", "no plain non-contrast axial series; series folders: CT PLAIN") in problems
    assert ("reads.csv", "reads name CQ500-CT-9 but no study folder for it was found") in problems
    assert len(problems) == 5
    assert any("no row for CQ500-CT-3" in w for w in res.report.warnings)


def test_cq500_workers_and_strict(home, cq_source):
    [one] = ingest(CQ500Dataset(), home, cq_source, options=IngestOptions(size=6, workers=2))
    assert SliceStore(one.path).n_slices == 10
    # strict stops at the first problem: here the folder that mixes two series
    write_reads(cq_source, [("CQ500-CT-0", [[], [], []])])
    with pytest.raises(InputError) as err:
        ingest(CQ500Dataset(), home, cq_source, options=IngestOptions(size=6, strict=True), force=True)
    assert str(err.value).startswith(str(cq_source / "CQ500CT1 CQ500CT1" / "Unknown Study" / "CT 0.625mm"))
    # the store from before is intact
    assert SliceStore(one.path).fingerprint == one.fingerprint


def test_series_exclusion_rule():
    assert exclusion("PLAIN THIN") is None and exclusion("0.625mm") is None
    assert exclusion("PRE CONTRAST THIN") is None and exclusion("4cc sec 150cc D3D on") is None
    assert exclusion("BONE") == exclusion("Thin Bone") == "bone/lung window or kernel"
    assert exclusion("C+ THIN") == exclusion("POST CONTRAST") == exclusion("55mm Contrast") == "contrast"
    assert exclusion("SCOUT") == "scout" and exclusion("Sag MPR") == "reformat"


def test_reads_majority_and_bad_csv(tmp_path):
    write_reads(tmp_path, [("CQ500-CT-5", [["SAH", "EDH"], ["EDH"], ["IVH"]])])
    reads = read_reads(tmp_path / "reads.csv", IngestReport())
    assert reads == {"CQ500-CT-5": {"any": True, "subtypes": ["edh"], "readers": 3}}
    (tmp_path / "reads.csv").write_text("")
    with pytest.raises(InputError, match="empty CSV"):
        read_reads(tmp_path / "reads.csv", IngestReport())
    (tmp_path / "reads.csv").write_text("name,R1:ICH\nCQ500-CT-1,1\n")
    with pytest.raises(InputError, match="missing columns R1:IPH"):
        read_reads(tmp_path / "reads.csv", IngestReport())


def test_cq500_layout_errors(home, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError,
                       match=r"expected CQ500CT<N> CQ500CT<N>/.* and reads.csv here; found: an empty folder"):
        ingest(CQ500Dataset(), home, tmp_path / "empty")
    series(tmp_path / "noreads" / "CQ500CT4 CQ500CT4", "CT PLAIN", 2, step=5.0, tag=1)
    with pytest.raises(LayoutError, match=r"expected reads.csv here; found: CQ500CT4 CQ500CT4/"):
        ingest(CQ500Dataset(), home, tmp_path / "noreads")
