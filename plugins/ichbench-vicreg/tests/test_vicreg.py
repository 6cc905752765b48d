"""ichbench-vicreg: the loss against hand-computed values, what the method declares, that the
loss falls on phantom slices, and that the installed package is found through its entry point."""

from __future__ import annotations

import importlib.metadata as md

import numpy as np
import pytest
import torch

from ichbench.api import (PretrainConfig, UNet, example_batch, expand_parts, get_registry, part_state, reset_registry,
                          resolve)
from ichbench_vicreg import VICReg, vicreg_loss, vicreg_terms

ENCODER = ["encoder.0", "encoder.1", "encoder.2", "encoder.3", "bottleneck"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster than several fighting
    yield
    torch.set_num_threads(before)


def smoke_cfg() -> PretrainConfig:
    return PretrainConfig(image_size=64, **VICReg().pretrain_overrides("smoke"))


def test_terms_by_hand():
    # two samples, two features: feature 0 has unbiased variance 2, feature 1 none
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    t = vicreg_terms(z, z)
    assert t["invariance"].item() == 0.0
    # hinge max(0, 1 - sqrt(var + 1e-4)): 0 for feature 0, 1 - 0.01 for feature 1; mean over 2
    assert t["variance"].item() == pytest.approx(0.99 / 2, abs=1e-6)
    assert t["covariance"].item() == 0.0          # Cov = [[2, 0], [0, 0]]
    # perfectly correlated features: Cov = [[2, 2], [2, 2]] -> (2² + 2²) / 2 features per view
    y = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert vicreg_terms(y, y)["covariance"].item() == pytest.approx(2 * 4.0)
    # invariance is the mean squared difference: one entry differs by 2 out of four
    assert vicreg_terms(y, y + torch.tensor([[2.0, 0.0], [0.0, 0.0]]))["invariance"].item() == pytest.approx(1.0)
    # weights: 25 * 0 + 25 * 0.495 + 1 * 0
    assert vicreg_loss(z, z).item() == pytest.approx(25 * 0.495, abs=1e-4)


def test_loss_refuses_bad_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3))


def test_declares_unlabeled_pretraining_of_the_encoder():
    m = VICReg()
    assert m.name == "vicreg" and m.has_pretext
    assert m.label_needs.describe() == ["segmentation", "unlabeled"]
    unet = UNet(base=8)
    assert expand_parts(unet, m.transfers) == ENCODER
    model = m.build_pretext(unet, smoke_cfg())
    saved = part_state(model.unet, m.transfers)
    assert saved and all(k.split(".")[0] in ("encoder", "bottleneck") for k in saved)
    assert not any(k.startswith(("decoder", "head")) for k in saved)


def test_profiles_follow_the_paper_and_scale_with_the_unet():
    m = VICReg()
    paper = m.pretrain_overrides("paper")
    params = paper["params"]
    assert params["sim_coeff"] == 25 and params["std_coeff"] == 25 and params["cov_coeff"] == 1
    assert paper["params"]["expander_dims"] == [512, 8192, 8192, 8192] and paper["params"]["eps"] == 1e-4
    paper["params"]["sim_coeff"] = 0           # a copy: the method's table is untouched
    assert m.pretrain_overrides("paper")["params"]["sim_coeff"] == 25
    cfg = resolve(m, "phantom", "smoke")
    assert cfg.pretrain.batch_size == 8 and cfg.pretrain.image_size == 64
    model = m.build_pretext(UNet(base=cfg.model.base_channels), cfg.pretrain)
    assert model.dims == [128, 2048, 2048, 2048]
    linear = [mod for mod in model.expander if isinstance(mod, torch.nn.Linear)]
    assert [lin.out_features for lin in linear] == [2048, 2048, 2048] and linear[-1].bias is None
    assert sum(isinstance(mod, torch.nn.BatchNorm1d) for mod in model.expander) == 2


@pytest.mark.slow
def test_loss_falls_on_phantom_slices():
    torch.manual_seed(0)
    m, cfg = VICReg(), smoke_cfg()
    model = m.build_pretext(UNet(base=8), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = example_batch(8, size=64)
    losses = []
    for _ in range(15):
        # the same seed each step: the same two views, so the objective is fixed
        loss = m.pretext_loss(model, batch, cfg, torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_installed_plugin_is_found_through_its_entry_point(monkeypatch):
    try:
        dist = md.distribution("ichbench-vicreg")
    except md.PackageNotFoundError:
        pytest.skip("ichbench-vicreg is not installed (pip install ./plugins/ichbench-vicreg)")
    ours = [(e.name, e.value) for e in dist.entry_points if e.group == "ichbench"]
    assert ours == [("vicreg", "ichbench_vicreg.plugin")]
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()
    try:
        reg = get_registry()
        assert "vicreg" in reg.methods()
        owner = reg.owner("methods", "vicreg")
        assert owner.distribution == "ichbench-vicreg" and not owner.builtin
    finally:
        reset_registry()
