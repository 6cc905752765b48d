"""`ichbench predict` with a 2.5D model (issue 24): a 3-slice, 2-window fold model applied to a
DICOM series and a NIfTI volume reads each slice with its neighbours in the scan (replicated at the
ends) in its windows, and a scan shorter than the model reads at a time is refused in one line,
writing nothing. Untrained tiny U-Nets saved as a fold saves `model.pt`; no training."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ichbench.errors import IchbenchError
from ichbench.models.unet import UNet
from ichbench.predict import load_ensemble, predict_scan, read_scan
from ichbench.predict.infer import network_input
from ichbench.preprocess.window import window
from ichbench.resolve import resolve
from ichbench.train.engine import save_model
from tests.cli import call

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
WINDOWS = [(-50.0, 150.0), (0.0, 80.0)]


class _Method:
    name = "unet_mixed"


def _model(folder: Path, overrides) -> Path:
    cfg = resolve("unet_mixed", "phantom", "smoke", ["model.base_channels=4", *overrides])
    torch.manual_seed(0)
    net = UNet(in_channels=cfg.input.channels, base=4, depth=cfg.model.depth)
    return save_model(folder / "model.pt", net, _Method, cfg, 0, 64)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("model25"), ["input.context=1", "input.windows=[[-50,150],[0,80]]"])


def write_ct(path: Path, slices: int) -> Path:
    rng = np.random.default_rng(slices)
    hu = rng.integers(-100, 200, (64, 64, slices)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([0.5, 0.5, 5.0, 1.0])), str(path))
    return path


def expected(model: Path, scan) -> np.ndarray:
    """The network on each slice stacked with its neighbours, clamped at the ends, by hand."""
    ens = load_ensemble(checkpoints=[model])
    hu = torch.from_numpy(network_input(ens, scan)).float()
    n = len(hu)
    x = torch.stack([torch.stack([window(hu[min(max(k + d, 0), n - 1)], lo, hi)
                                  for d in (-1, 0, 1) for lo, hi in WINDOWS]) for k in range(n)])
    net = UNet(in_channels=6, base=4, depth=5)
    net.load_state_dict(ens.first["state"])
    with torch.no_grad():
        return torch.sigmoid(net.eval()(x))[:, 0].numpy()


def test_a_3_slice_model_reads_neighbours_from_a_nifti_volume(model, tmp_path):
    scan = read_scan(write_ct(tmp_path / "ct.nii.gz", 5))
    got = predict_scan(load_ensemble(checkpoints=[model]), scan).network_probability[0]
    np.testing.assert_allclose(got, expected(model, scan), atol=1e-5)


def test_a_3_slice_model_reads_neighbours_from_a_dicom_series(model, tmp_path):
    from ichbench.datasets.phantom.files import write_series
    from ichbench.datasets.phantom.generator import generate_volume

    write_series(generate_volume(3, slices=4, size=64), tmp_path / "dicom")
    scan = read_scan(tmp_path / "dicom")
    got = predict_scan(load_ensemble(checkpoints=[model]), scan).network_probability[0]
    np.testing.assert_allclose(got, expected(model, scan), atol=1e-5)


@pytest.mark.parametrize("slices", [1, 2])
def test_a_scan_shorter_than_the_model_reads_is_refused_in_one_line(model, tmp_path, monkeypatch, capsys, slices):
    ct = write_ct(tmp_path / "ct.nii.gz", slices)
    code, _, err = call(["--home", tmp_path / "home", "predict", "--device", "cpu", "--checkpoint", model,
                         "-i", ct, "-o", tmp_path / "out"], monkeypatch, capsys)
    lines = err.splitlines()
    assert code not in (0, None) and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (f"ichbench: error: {ct}: {slices} slice(s), but unet_mixed's models read 3 adjacent "
                        "slices at a time (input.context=1): give a series of at least 3 slices")
    assert not (tmp_path / "out").exists()


def test_fold_models_with_other_inputs_are_not_averaged(model, tmp_path):
    flat = _model(tmp_path, [])
    with pytest.raises(IchbenchError, match="input channels"):
        load_ensemble(checkpoints=[model, flat])
