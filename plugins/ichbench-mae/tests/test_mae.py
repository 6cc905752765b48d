"""ichbench-mae: the masks and the masked loss against hand-computed values, what the method
declares, that the loss falls on phantom slices, and the installed package's entry point."""

from __future__ import annotations

import importlib.metadata as md
import math

import numpy as np
import pytest
import torch

from ichbench.api import (PretrainConfig, UNet, example_batch, get_registry, part_names, part_state, reset_registry,
                          resolve)
from ichbench_mae import MaskedImageModelling, masked_l1, patch_pixels, random_patch_mask


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster than several fighting
    yield
    torch.set_num_threads(before)


def smoke_cfg() -> PretrainConfig:
    return PretrainConfig(image_size=64, **MaskedImageModelling().pretrain_overrides("smoke"))


def test_mask_covers_whole_cells_in_the_paper_ratio():
    mask = random_patch_mask(6, 64, 64, 8, 0.6, generator=torch.Generator().manual_seed(3))
    assert mask.shape == (6, 1, 64, 64)
    cells = mask.view(6, 8, 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(6, 64, 64)  # (B, cell, pixel)
    per_cell = cells.mean(dim=2)
    assert set(per_cell.unique().tolist()) == {0.0, 1.0}                 # a cell is all or nothing
    assert per_cell.sum(dim=1).tolist() == [math.ceil(0.6 * 64)] * 6      # exactly 39 of 64 cells
    assert len({tuple(row.tolist()) for row in per_cell}) == 6            # drawn per image
    again = random_patch_mask(6, 64, 64, 8, 0.6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)


def test_mask_with_partial_edge_cells():
    mask = random_patch_mask(2, 20, 12, 8, 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 20, 12)    # 3 x 2 cells of 8, cut at the bottom and right edges
    with pytest.raises(ValueError, match="0 < ratio < 1"):
        random_patch_mask(1, 16, 16, 4, 1.0)


def test_masked_l1_ignores_visible_pixels():
    target = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2, :2] = 1                                   # 8 masked pixels in all
    pred = torch.full((2, 1, 4, 4), 5.0)                      # wrong everywhere ...
    pred[:, :, :2, :2] = 0.5                                 # ... but off by 0.5 where masked
    assert masked_l1(pred, target, mask).item() == pytest.approx(0.5, abs=1e-5)
    pred[0, 0, 0, 0] = 2.5                                   # one masked pixel off by 2.5
    assert masked_l1(pred, target, mask).item() == pytest.approx((7 * 0.5 + 2.5) / 8, abs=1e-5)


def test_mask_token_fills_only_masked_pixels():
    m, cfg = MaskedImageModelling(), smoke_cfg()
    model = m.build_pretext(UNet(base=8), cfg)
    assert model.patch == 8 == patch_pixels(32, 64) and patch_pixels(32, 256) == 32
    with torch.no_grad():
        model.mask_token.fill_(0.25)
    images = torch.rand(2, 1, 64, 64)
    mask = random_patch_mask(2, 64, 64, 8, 0.6, generator=torch.Generator().manual_seed(1))
    filled = model.fill(images, mask)
    assert torch.equal(filled[mask == 0], images[mask == 0])
    assert torch.all(filled[mask == 1] == 0.25)


def test_declares_unlabeled_pretraining_of_the_whole_unet():
    m = MaskedImageModelling()
    assert m.name == "mae" and m.transfers == ("all",)
    assert m.label_needs.describe() == ["segmentation", "unlabeled"]
    model = m.build_pretext(UNet(base=8), smoke_cfg())
    saved = part_state(model.unet, m.transfers)
    assert set(saved) == set(model.unet.state_dict())            # every tensor of the U-Net ...
    assert all(any(k.startswith(p + ".") for k in saved) for p in part_names(model.unet))  # ... head included
    assert not any("mask_token" in k for k in saved)          # the token is the pretext's, not the U-Net's


def test_profiles():
    m = MaskedImageModelling()
    assert m.pretrain_overrides("paper") == {"batch_size": 32, "params": {"patch": 32, "mask_ratio": 0.6}}
    cfg = resolve(m, "phantom", "smoke")
    assert cfg.pretrain.batch_size == 8 and cfg.pretrain.params["mask_ratio"] == 0.6
    assert m.build_pretext(UNet(base=8), cfg.pretrain).patch == 8


def test_loss_falls_on_phantom_slices():
    torch.manual_seed(0)
    m, cfg = MaskedImageModelling(), smoke_cfg()
    model = m.build_pretext(UNet(base=8), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = example_batch(8, size=64)
    losses = []
    for _ in range(15):
        loss = m.pretext_loss(model, batch, cfg, torch.Generator().manual_seed(0))  # a fixed mask
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_installed_plugin_is_found_through_its_entry_point(monkeypatch):
    try:
        dist = md.distribution("ichbench-mae")
    except md.PackageNotFoundError:
        pytest.skip("ichbench-mae is not installed (pip install ./plugins/ichbench-mae)")
    assert [(e.name, e.value) for e in dist.entry_points if e.group == "ichbench"] == [("mae", "ichbench_mae.plugin")]
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()
    try:
        reg = get_registry()
        assert "mae" in reg.methods()
        owner = reg.owner("methods", "mae")
        assert owner.distribution == "ichbench-mae" and not owner.builtin
    finally:
        reset_registry()
