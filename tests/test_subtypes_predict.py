"""`ichbench predict` of a subtypes model (finetune.task=subtypes): the argmax of the folds' mean
softmax as a label map beside the binary mask (its union), mL per class in report.json, and for a
DICOM series a SEG with one coded segment per class. An untrained tiny U-Net whose head copies its
feature channels, so its argmax holds several classes."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ichbench.methods.base import get_method
from ichbench.models.unet import unet_for
from ichbench.predict import load_ensemble, predict_scan, read_scan, write_outputs
from ichbench.resolve import resolve
from ichbench.train.engine import save_model
from tests.nifti_fixtures import write_nifti

NAMES = ["iph", "ivh", "sah", "sdh", "edh"]


def test_a_subtypes_model_writes_a_label_map_whose_union_is_the_mask(tmp_path: Path):
    cfg = resolve("unet_mixed", "phantom", "smoke", ["finetune.task=subtypes"])
    torch.manual_seed(0)
    unet = unet_for(cfg.model, out_channels=len(NAMES) + 1)
    with torch.no_grad():   # output k = the last feature map's channel k: an argmax that varies in space
        unet.head.weight.zero_()
        unet.head.bias.zero_()
        unet.head.weight[:, :, 0, 0] = torch.eye(len(NAMES) + 1, unet.head.in_channels)
    model = save_model(tmp_path / "model.pt", unet, get_method("unet_mixed"), cfg, 0, 64, None, NAMES)
    rng = np.random.default_rng(0)
    hu = rng.integers(-20, 120, size=(4, 64, 64)).astype(np.int16)
    scan = read_scan(write_nifti(tmp_path / "ct.nii.gz", hu, (5.0, 0.5, 0.5)))
    ens = load_ensemble(checkpoints=[model])
    pred = predict_scan(ens, scan)
    rep = write_outputs(tmp_path / "out", scan, pred, ens)
    labels = np.asarray(nib.load(str(tmp_path / "out" / "labels.nii.gz")).dataobj)
    mask = np.asarray(nib.load(str(tmp_path / "out" / "mask.nii.gz")).dataobj)
    assert len(np.unique(labels[labels > 0])) >= 2, "the test needs a label map with several classes"
    assert np.array_equal(labels > 0, mask > 0) and labels.max() <= len(NAMES)
    assert list(rep["subtypes"]) == NAMES
    assert sum(v["voxels"] for v in rep["subtypes"].values()) == rep["hemorrhage"]["voxels"] == int(mask.sum())
    assert rep["subtypes"]["sah"]["voxels"] == int((labels == 3).sum())
    assert "labels.nii.gz" in rep["outputs"]


# -- the multi-segment DICOM SEG (issue 23: segments, their coded types, frames equal the label map) --

# class name -> (segment label, anatomic region (value, scheme, meaning)) as a reader of labels.dcm sees them
SEGMENTS = {"iph": ("Intraparenchymal hemorrhage (IPH)", ("12738006", "SCT", "Brain")),
            "ivh": ("Intraventricular hemorrhage (IVH)", ("35764002", "SCT", "Brain ventricle")),
            "sah": ("Subarachnoid hemorrhage (SAH)", ("35951006", "SCT", "Subarachnoid space")),
            "sdh": ("Subdural hemorrhage (SDH)", ("18545000", "SCT", "Dura mater")),
            "edh": ("Epidural hemorrhage (EDH)", ("18545000", "SCT", "Dura mater")),
            "contusion": ("contusion", None)}   # a class without a subtype of its own: its name, no region
SEG_ORDER = ["sdh", "iph", "contusion", "edh", "sah", "ivh"]   # not the store's order: segment k is the model's k


def _code(c) -> tuple:
    return str(c.value), str(c.scheme_designator), str(c.meaning)


def _subtypes_model(folder: Path, names) -> Path:
    cfg = resolve("unet_mixed", "phantom", "smoke", ["finetune.task=subtypes"])
    torch.manual_seed(0)
    unet = unet_for(cfg.model, out_channels=len(names) + 1)
    with torch.no_grad():   # as above: the argmax follows the feature channels and varies in space
        unet.head.weight.zero_()
        unet.head.bias.zero_()
        unet.head.weight[:, :, 0, 0] = torch.eye(len(names) + 1, unet.head.in_channels)
    return save_model(folder / "model.pt", unet, get_method("unet_mixed"), cfg, 0, 64, None, list(names))


def _dicom_prediction(tmp_path: Path, names, columns_up=False):
    """`columns_up`: the series' column direction is anterior (rows stored bottom to top), so the
    files' pixel order is not the store view's."""
    import pydicom

    from ichbench.datasets.phantom.files import write_series
    from ichbench.datasets.phantom.generator import generate_volume
    for path, _ in write_series(generate_volume(3, slices=4, size=64), tmp_path / "dicom"):
        if columns_up:
            ds = pydicom.dcmread(path)
            ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
            ds.save_as(path)
    scan = read_scan(tmp_path / "dicom")
    assert scan.flips == (columns_up, False)
    ens = load_ensemble(checkpoints=[_subtypes_model(tmp_path, names)])
    return scan, ens, predict_scan(ens, scan)


def _read_seg(path: Path, scan):
    """The SEG read back with highdicom, and its frames put back on the source slices: (S, Rows,
    Columns, segments) in the source files' pixel order."""
    import highdicom as hd
    import pydicom
    uids = [str(pydicom.dcmread(str(s.path), stop_before_pixels=True).SOPInstanceUID) for s in scan.slices]
    seg = hd.seg.segread(str(path))
    return seg, seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)


def _check_segments(seg, names) -> None:
    assert seg.number_of_segments == len(names) and list(seg.segment_numbers) == list(range(1, len(names) + 1))
    for k, name in enumerate(names, start=1):
        desc = seg.get_segment_description(k)
        label, region = SEGMENTS[name]
        assert desc.segment_label == label
        assert _code(desc.segmented_property_category) == ("49755003", "SCT", "Morphologically Abnormal Structure")
        assert _code(desc.segmented_property_type) == ("50960005", "SCT", "Hemorrhage")
        assert [_code(c) for c in desc.anatomic_regions] == ([region] if region else [])


def test_a_subtypes_dicom_prediction_writes_a_seg_with_one_segment_per_class(tmp_path: Path):
    """labels.dcm: segment k is the model's class k with its coded type and site, and its frames
    put back on the source slices are labels.nii.gz == k, in the files' own row order (a series
    stored bottom to top); mask.dcm stays the one-segment union."""
    scan, ens, pred = _dicom_prediction(tmp_path, SEG_ORDER, columns_up=True)
    rep = write_outputs(tmp_path / "out", scan, pred, ens)
    assert rep["outputs"] == ["labels.dcm", "labels.nii.gz", "mask.dcm", "mask.nii.gz", "overlay.png", "report.json"]
    labels = np.asarray(nib.load(str(tmp_path / "out" / "labels.nii.gz")).dataobj).transpose(2, 1, 0)   # DICOM order
    assert len(np.unique(labels[labels > 0])) >= 3, "the test needs a label map with several classes"
    seg, frames = _read_seg(tmp_path / "out" / "labels.dcm", scan)
    _check_segments(seg, SEG_ORDER)
    assert frames.shape == (*labels.shape, len(SEG_ORDER))
    for k in range(1, len(SEG_ORDER) + 1):
        assert np.array_equal(frames[..., k - 1] > 0, labels == k), f"segment {k}"
        assert np.array_equal(frames[..., k - 1] > 0, pred.labels[:, ::-1] == k), f"segment {k}: files' row order"
    union, union_frames = _read_seg(tmp_path / "out" / "mask.dcm", scan)
    assert union.number_of_segments == 1 and union.get_segment_description(1).segment_label == "Hemorrhage"
    assert np.array_equal(union_frames[..., 0] > 0, labels > 0)


@pytest.mark.parametrize("drop", ["one class", "every class"])
def test_a_class_predicted_nowhere_is_still_a_segment_with_an_empty_mask(tmp_path: Path, drop):
    names = ["iph", "ivh", "sah", "sdh", "edh"]
    scan, ens, pred = _dicom_prediction(tmp_path, names)
    gone = int(np.bincount(pred.labels.ravel(), minlength=6)[1:].argmax()) + 1   # the largest class
    assert (pred.labels == gone).any()
    pred.labels[(pred.labels == gone) if drop == "one class" else slice(None)] = 0
    pred.mask = pred.labels > 0
    write_outputs(tmp_path / "out", scan, pred, ens)
    seg, frames = _read_seg(tmp_path / "out" / "labels.dcm", scan)
    _check_segments(seg, names)
    assert not frames[..., gone - 1].any()
    for k in range(1, len(names) + 1):
        assert np.array_equal(frames[..., k - 1] > 0, pred.labels == k), f"segment {k}"
