"""Per-voxel class ids in the store: the resampling rule, the format / fingerprint contract, the
checks on a reader's class map, and the phantom's class maps."""

import hashlib
import json

import numpy as np
import pytest

from ichbench import SUBTYPES
from ichbench.datasets.base import SEGMENTATION, Volume
from ichbench.datasets.phantom import files
from ichbench.datasets.phantom.generator import class_map, generate_volume
from ichbench.files import canonical_json
from ichbench.ingest.pipeline import _lost_classes, check_volume
from ichbench.preprocess.resize import resize_classes, resize_mask
from ichbench.store import open_store
from ichbench.store.layout import fingerprint
from ichbench.store.writer import StoreWriter


def test_resize_classes_keeps_classes_apart_and_agrees_with_the_mask():
    classes = np.zeros((2, 8, 8), np.uint8)
    classes[0, :, :4] = 1             # two classes side by side, each half the slice
    classes[0, :, 4:] = 3
    classes[1, 2:6, 2:6] = 2
    out = resize_classes(classes, 4)
    # each 2x2 block is one class: nothing merged, nothing relabelled
    np.testing.assert_array_equal(out[0], np.repeat([[1, 1, 3, 3]], 4, axis=0))
    np.testing.assert_array_equal(out > 0, resize_mask(classes > 0, 4))
    assert set(np.unique(out[1])) == {0, 2}
    # a pixel half one class, half another: hemorrhage (union 1.0), and the tie goes to the lower id
    tie = np.zeros((1, 2, 2), np.uint8)
    tie[0, :, 0], tie[0, :, 1] = 4, 2
    assert resize_classes(tie, 1).tolist() == [[[2]]]
    # at the native size the map is kept as is
    assert resize_classes(classes, 8) is not classes and np.array_equal(resize_classes(classes, 8), classes)


def test_a_minority_class_survives_where_it_covers_the_most():
    # 3 classes share one output pixel: 2 of 4 inputs are class 5, one each of 1 and 2 -> 5 wins,
    # where a majority vote over the merged mask would have had no say in which class
    classes = np.array([[[5, 1], [5, 2]]], np.uint8)
    assert resize_classes(classes, 1).tolist() == [[[5]]]
    lost = np.array([[[5, 1], [5, 2]], [[0, 0], [0, 0]]], np.uint8)
    assert _lost_classes(lost, resize_classes(lost, 1), SUBTYPES) == ["iph", "ivh"]


def test_binary_store_fingerprint_formula_is_unchanged():
    settings, volumes, digests = {"size": 4}, [{"id": "a"}], {"images": "x", "masks": "y"}
    before = hashlib.sha256(canonical_json({"format": 2, "settings": settings, "volumes": volumes,
                                            "arrays": digests})).hexdigest()
    assert fingerprint(settings, volumes, digests) == before
    assert fingerprint(settings, volumes, digests, 3, list(SUBTYPES)) != before


def _write(path, class_names):
    w = StoreWriter(path, size=4, with_masks=True, with_brain=False, class_names=class_names)
    classes = np.zeros((3, 4, 4), np.uint8)
    classes[1, :2, :2] = 5
    labels = np.zeros((3, 7), np.uint8)
    w.add({"id": "v", "spacing": [1, 1, 1], "subtypes": ["edh"], "has_ich": True}, np.zeros((3, 4, 4), np.int16),
          labels, masks=(classes > 0).astype(np.uint8), classes=classes if class_names else None)
    return w.close({"dataset": "t", "role": SEGMENTATION}, {"size": 4})


def test_class_array_is_its_own_format_and_verified(tmp_path):
    fp_binary = _write(tmp_path / "b.zarr", None)
    fp_classes = _write(tmp_path / "c.zarr", SUBTYPES)
    binary, multi = open_store(tmp_path / "b.zarr"), open_store(tmp_path / "c.zarr")
    assert binary.attrs["format_version"] == 2 and binary.class_names is None and "classes" not in binary.arrays
    assert multi.attrs["format_version"] == 3 and multi.class_names == list(SUBTYPES)
    assert fp_binary != fp_classes and multi.verify() == [] and binary.verify() == []
    got = multi.read("classes")
    assert got.dtype == np.uint8 and got.shape == (3, 4, 4) and got[1, 0, 0] == 5
    # the class names are part of the identity: renaming them is caught
    meta = tmp_path / "c.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["class_names"] = list(reversed(SUBTYPES))
    meta.write_text(json.dumps(doc))
    tampered = open_store(tmp_path / "c.zarr")
    assert any("fingerprint does not match" in p for p in tampered.verify())


@pytest.mark.parametrize("change, problem", [
    (lambda v: setattr(v, "classes", None), "without a class map"),
    (lambda v: setattr(v, "classes", v.classes[:, :-1]), "class map shape"),
    (lambda v: v.classes.__setitem__((0, 0, 0), 7), "whole numbers 0..5, found 0..7"),
    (lambda v: v.mask.__setitem__((0, 0, 0), True), "disagree on 1 voxels"),
])
def test_check_volume_refuses_a_bad_class_map(change, problem):
    classes = np.zeros((2, 4, 4), np.uint8)
    classes[1, 1:3, 1:3] = 2
    vol = Volume("v", np.zeros((2, 4, 4), np.float32), (1.0, 1.0, 1.0), mask=classes > 0, classes=classes)
    assert check_volume(vol, SEGMENTATION, SUBTYPES) is None
    assert check_volume(vol, SEGMENTATION) is None      # a binary dataset ignores it
    change(vol)
    assert problem in check_volume(vol, SEGMENTATION, SUBTYPES)


def test_phantom_class_map_is_written_read_back_and_covers_the_mask(tmp_path):
    vol = generate_volume(7, slices=6, size=48, subtypes=["sdh", "edh"])
    cmap = class_map(vol.subtype_masks)
    np.testing.assert_array_equal(cmap > 0, vol.mask)
    both = vol.subtype_masks["sdh"] & vol.subtype_masks["edh"]
    assert (cmap[both] == SUBTYPES.index("edh") + 1).all()            # overlap: the later subtype wins
    assert set(np.unique(cmap)) <= {0, SUBTYPES.index("sdh") + 1, SUBTYPES.index("edh") + 1}
    files.write_segmentation([vol], tmp_path)
    np.testing.assert_array_equal(files.read_nifti_classes(tmp_path / vol.id / files.CLASSES_NAME, 5), cmap)


def test_phantom_store_keeps_classes(phantom_store):
    store = open_store(phantom_store)
    data = store.load(["masks", "classes", "labels"])
    assert store.class_names == list(SUBTYPES)
    np.testing.assert_array_equal(data["classes"] > 0, data["masks"] > 0)
    # every subtype column of the slice labels says whether its class is on the slice's pixels
    for k, name in enumerate(SUBTYPES, start=1):
        on_slice = (data["classes"] == k).reshape(len(data["classes"]), -1).any(axis=1)
        np.testing.assert_array_equal(data["labels"][:, 1 + k], on_slice, err_msg=name)
