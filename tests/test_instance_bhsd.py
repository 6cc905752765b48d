"""The instance2022 and bhsd datasets, read from tiny corpora the tests write in the real layouts."""

import json

import numpy as np
import pytest

from ichbench.datasets.base import IngestOptions
from ichbench.datasets.bhsd import BhsdDataset
from ichbench.datasets.instance2022 import Instance2022Dataset
from ichbench.errors import InputError, LayoutError
from ichbench.ingest import ingest
from ichbench.store import open_store
from tests.cli import call
from tests.layout_fixtures import (BHSD_TO_STORE, SHAPE, case, write, write_bhsd_nnunet, write_bhsd_release,
                                   write_instance)

SIZE = SHAPE[1]   # the native size: stored arrays equal the written ones exactly


def _by_file(report) -> dict[str, str]:
    return {item["file"].rsplit("/", 1)[-1]: item["problem"] for item in report.skipped}


def _stored(store) -> dict[str, dict]:
    data = store.load()
    out = {}
    for v in store.volumes:
        sl = slice(v["start"], v["stop"])
        out[v["id"]] = {k: data[k][sl] for k in data if k != "volume"}
    return out


def test_instance2022_stores_good_volumes_and_names_every_bad_file(tmp_path, home):
    good = [case("001", 1), case("002", 2), case("003", 3)]
    root = write_instance(tmp_path / "src" / "train_2", good)      # the training folder, any name
    bad_value = case("004", 4, values=(2,))                       # a label value INSTANCE does not have
    write_instance(tmp_path / "tmp4", [bad_value])
    (root / "data" / "004.nii.gz").write_bytes((tmp_path / "tmp4/data/004.nii.gz").read_bytes())
    (root / "label" / "004.nii.gz").write_bytes((tmp_path / "tmp4/label/004.nii.gz").read_bytes())
    write(root / "data" / "005.nii.gz", case("005", 5).hu)         # no label
    write(root / "label" / "006.nii.gz", case("006", 6).labels, kind="label")   # no image
    write(root / "data" / "007.nii.gz", case("007", 7).hu)
    write(root / "label" / "007.nii.gz", case("007", 7).labels[:, :, :-1], kind="label")  # shape mismatch
    whole = write(root / "data" / "008.nii.gz", case("008", 8).hu).read_bytes()
    (root / "data" / "008.nii.gz").write_bytes(whole[:len(whole) // 2])                 # truncated
    write(root / "label" / "008.nii.gz", case("008", 8).labels, kind="label")

    [res] = ingest(Instance2022Dataset(), home, tmp_path / "src", options=IngestOptions(size=SIZE))
    skipped = _by_file(res.report)
    assert set(skipped) == {"004.nii.gz", "005.nii.gz", "006.nii.gz", "007.nii.gz", "008.nii.gz"}
    assert "outside the dataset's classes 0, 1" in skipped["004.nii.gz"]
    assert "label is missing" in skipped["005.nii.gz"] and "without an image" in skipped["006.nii.gz"]
    assert "differs from the CT shape" in skipped["007.nii.gz"]
    assert "truncated" in skipped["008.nii.gz"]
    store = open_store(res.path)
    assert store.class_names is None and store.attrs["format_version"] == 2 and "classes" not in store.arrays
    stored = _stored(store)
    assert sorted(stored) == ["001", "002", "003"]
    for c in good:   # int16 with scl_slope/inter and float32 CTs; integer and float 0/1 labels
        np.testing.assert_array_equal(stored[c.name]["images"], c.hu.astype(np.int16))
        np.testing.assert_array_equal(stored[c.name]["masks"], c.labels > 0)
    assert any("found 3 usable volumes" in w and "expected 100" in w for w in res.report.warnings)

    with pytest.raises(InputError) as exc:   # --strict: the first bad file stops the ingest
        ingest(Instance2022Dataset(), home, tmp_path / "src", options=IngestOptions(size=SIZE, strict=True),
               force=True)
    assert "label/006.nii.gz: label without an image" in str(exc.value) and "\n" not in str(exc.value)
    assert open_store(res.path).fingerprint == res.fingerprint     # the store built before is kept


def test_bhsd_release_layout_keeps_classes_mapped_to_subtypes(tmp_path, home, monkeypatch, capsys):
    cases = [case("ID_a1_ID_b1", 1, values=(1, 2)), case("ID_a2_ID_b2", 2, values=(3, 4, 5)),
             case("ID_a3_ID_b3", 3, values=(2,))]
    write_bhsd_release(tmp_path / "src" / "label_192", cases)
    bad = case("ID_a4_ID_b4", 4, values=(6,))
    write_bhsd_release(tmp_path / "bad", [bad])
    for sub in ("images", "ground truths"):
        (tmp_path / "src/label_192" / sub / "ID_a4_ID_b4.nii.gz").write_bytes(
            (tmp_path / "bad" / sub / "ID_a4_ID_b4.nii.gz").read_bytes())
    monkeypatch.setenv("ICHBENCH_HOME", str(home))
    code, _, err = call(["data", "ingest", "bhsd", "--source", tmp_path / "src", "--size", SIZE], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((home / "stores/bhsd/segmentation.zarr/ingest_report.json").read_text())
    [skip] = report["skipped"]
    assert skip["file"].endswith("ground truths/ID_a4_ID_b4.nii.gz") and "values 6 are outside" in skip["problem"]
    code, out, _ = call(["data", "info", "bhsd", "--json"], monkeypatch, capsys)
    info = json.loads(out)["roles"]
    assert info["pretraining"] is None                    # no unlabelled volumes: segmentation only
    seg = info["segmentation"]
    # per-subtype volume counts equal the source's: EDH(1) IPH(2) in a1, IVH SAH SDH in a2, IPH in a3
    assert seg["subtype_volumes"] == {"iph": 2, "ivh": 1, "sah": 1, "sdh": 1, "edh": 1}
    assert seg["class_names"] == ["iph", "ivh", "sah", "sdh", "edh"]
    store = open_store(home / "stores" / "bhsd" / "segmentation.zarr")
    assert store.attrs["format_version"] == 3 and store.verify() == []
    stored = _stored(store)
    for c in cases:
        expected = np.vectorize(BHSD_TO_STORE.get)(c.labels)     # 1 EDH -> 5, 2 IPH -> 1, ...
        np.testing.assert_array_equal(stored[c.name]["classes"], expected)
        np.testing.assert_array_equal(stored[c.name]["masks"], c.labels > 0)
        # each slice's subtype labels are the classes on it
        for s in range(len(c.labels)):
            present = {BHSD_TO_STORE[v] for v in np.unique(c.labels[s]) if v}
            assert {k - 1 for k in range(1, 6) if stored[c.name]["labels"][s, 1 + k]} == {p - 1 for p in present}


def test_bhsd_nnunet_layout_reads_dataset_json_and_unlabelled_store(tmp_path, home):
    cases = [case("BHSD_001", 1, values=(1,)), case("BHSD_002", 2, values=(2, 3))]
    # this copy numbers the classes differently; dataset.json says which is which (v1 form)
    labels = {"0": "background", "1": "subdural", "2": "EDH", "3": "IPH", "4": "IVH", "5": "SAH"}
    root = write_bhsd_nnunet(tmp_path / "src" / "Dataset501_BHSD", cases, labels={"background": 0})
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    write(root / "imagesTr" / "BHSD_002_0001.nii.gz", cases[1].hu)            # a second channel
    unlabelled = tmp_path / "unl"
    write(unlabelled / "batch1" / "ID_u1.nii.gz", case("u1", 7).hu)
    write(unlabelled / "BHSD_001.nii.gz", cases[0].hu)                         # also a labelled volume
    write(unlabelled / "batch2" / "ID_u1.nii.gz", case("u1", 7).hu)           # the same name twice
    options = IngestOptions(size=SIZE, extra={"unlabelled": str(unlabelled)})
    seg, pre = ingest(BhsdDataset(), home, tmp_path / "src", options=options)
    assert seg.role == "segmentation" and pre.role == "pretraining"
    assert "not an nnU-Net channel-0 image" in _by_file(seg.report)["BHSD_002_0001.nii.gz"]
    stored = _stored(open_store(seg.path))
    assert sorted(stored) == ["BHSD_001", "BHSD_002"]
    np.testing.assert_array_equal(stored["BHSD_001"]["classes"], cases[0].labels * 4)    # subdural -> sdh (4)
    np.testing.assert_array_equal(stored["BHSD_002"]["classes"],
                                  np.select([cases[1].labels == 2, cases[1].labels == 3], [5, 1], 0))  # EDH, IPH
    pre_store = open_store(pre.path)
    assert [v["id"] for v in pre_store.volumes] == ["ID_u1"] and pre_store.class_names is None
    assert "labelled volume" in _by_file(pre.report)["BHSD_001.nii.gz"]
    assert _by_file(pre.report)["ID_u1.nii.gz"].startswith("same volume name as") and len(pre.report.skipped) == 2
    np.testing.assert_array_equal(pre_store.load(["images"])["images"], case("u1", 7).hu.astype(np.int16))
    # where the unlabelled volumes lie is no part of the segmentation store's identity
    other = IngestOptions(size=SIZE)
    [again] = ingest(BhsdDataset(), home / "other", tmp_path / "src", options=other)
    assert again.fingerprint == seg.fingerprint


@pytest.mark.parametrize("dataset, make, expected", [
    (Instance2022Dataset(), lambda d: (d / "data").mkdir(parents=True), "data/NNN.nii.gz and label/NNN.nii.gz"),
    (BhsdDataset(), lambda d: (d / "images").mkdir(parents=True), "images/ and 'ground truths'/"),
])
def test_wrong_layout_is_one_line_naming_what_is_missing(tmp_path, dataset, make, expected):
    make(tmp_path)
    with pytest.raises(LayoutError) as exc:
        dataset.check_layout(tmp_path)
    assert expected in str(exc.value) and "found:" in str(exc.value) and "\n" not in str(exc.value)


def test_bhsd_dataset_json_naming_unknown_class_is_refused(tmp_path, home):
    root = write_bhsd_nnunet(tmp_path / "src", [case("C1", 1)], labels={"background": 0, "tumour": 1})
    with pytest.raises(LayoutError, match=r"dataset.json: label 'tumour' is none of BHSD's classes"):
        ingest(BhsdDataset(), home, root, options=IngestOptions(size=SIZE))


def test_datasets_listing_names_source_licence_and_layout(monkeypatch, capsys):
    code, out, _ = call(["datasets", "--json"], monkeypatch, capsys)
    assert code == 0
    listed = {d["name"]: d for d in json.loads(out)}
    assert "no redistribution" in listed["instance2022"]["licence"]
    assert listed["bhsd"]["licence"].startswith("non-commercial") and "RSNA" in listed["bhsd"]["licence"]
    assert "ground truths/" in listed["bhsd"]["layout"] and "imagesTr/" in listed["bhsd"]["layout"]
    assert listed["bhsd"]["class_names"] == ["iph", "ivh", "sah", "sdh", "edh"]
    assert listed["instance2022"]["class_names"] is None


def test_a_class_lost_to_resampling_is_warned_and_slice_labels_follow_the_stored_map(tmp_path, home):
    c = case("ID_x_ID_y", 1, values=())
    c.labels[1, 8:16, 8:16] = 2           # IPH, 8x8
    c.labels[1, 11, 11] = 4               # one SAH pixel inside it: no stored pixel is mostly SAH at 16x16
    write_bhsd_release(tmp_path / "src", [c])
    [res] = ingest(BhsdDataset(), home, tmp_path / "src", options=IngestOptions(size=16))
    store = open_store(res.path)
    [v] = store.volumes
    assert v["subtypes"] == ["iph", "sah"]                       # the source's subtypes
    labels = store.read("labels")
    assert labels[1, 1] == 1 and labels[1, 2] == 1 and labels[1, 4] == 0   # any, iph; sah lost on the slice
    assert not (store.read("classes") == 3).any()
    assert any("sah present in the source but on no pixel at 16x16" in w for w in res.report.warnings)


def test_unlabelled_flag_is_bhsd_s_and_names_a_missing_folder(tmp_path, home, monkeypatch, capsys):
    monkeypatch.setenv("ICHBENCH_HOME", str(home))
    code, _, err = call(["data", "ingest", "instance2022", "--unlabelled", tmp_path], monkeypatch, capsys)
    assert code != 0 and err.strip() == ("ichbench: error: --unlabelled: dataset 'instance2022' takes no unlabelled "
                                         "volumes (bhsd does)")
    write_bhsd_release(tmp_path / "src", [case("ID_a_ID_b", 1)])
    code, _, err = call(["data", "ingest", "bhsd", "--source", tmp_path / "src", "--unlabelled", tmp_path / "nowhere"],
                        monkeypatch, capsys)
    assert code != 0 and err.strip().splitlines() == [
        f"ichbench: error: --unlabelled {tmp_path / 'nowhere'}: not a folder (BHSD's unlabelled volumes)"]
    assert not (home / "stores" / "bhsd").exists()


def test_the_nearest_dataset_folder_is_found_and_two_at_one_level_are_refused(tmp_path):
    from ichbench.datasets.base import find_below
    from ichbench.errors import LayoutError

    def holds(p):
        return (p / "data").is_dir()
    (tmp_path / "a" / "train" / "data").mkdir(parents=True)
    (tmp_path / "a" / "x" / "y" / "data").mkdir(parents=True)   # deeper: the nearer one wins
    assert find_below(tmp_path / "a", holds, "training folder") == tmp_path / "a" / "train"
    assert find_below(tmp_path / "a", holds, "training folder", max_depth=0) is None
    (tmp_path / "a" / "test" / "data").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"^expected one training folder under .*; found several: .*test, .*train$"):
        find_below(tmp_path / "a", holds, "training folder")
