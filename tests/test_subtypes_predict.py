"""`ichbench predict` of a subtypes model (finetune.task=subtypes): the argmax of the folds' mean
softmax as a label map beside the binary mask (its union), and mL per class in report.json. An
untrained tiny U-Net whose head copies its feature channels, so its argmax holds several classes."""

from pathlib import Path

import nibabel as nib
import numpy as np
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
