"""Transfer copies exactly the declared U-Net parts into the fine-tuning model, and nothing else."""

import copy

import pytest
import torch

from ichbench.resolve import resolve
from ichbench.errors import IchbenchError
from ichbench.methods.base import LabelNeeds, Method
from ichbench.models.unet import UNet, expand_parts, part_state
from ichbench.train import checkpoint as ckpt
from ichbench.train.engine import _load_pretrained_into, pretrain
from tests.test_engine import PRE_TINY, FakeDenoising

MODEL = {"base_channels": 4, "depth": 5, "encoder_growth": "second"}


def method_with(parts, name="fake_pretext") -> Method:
    m = Method()
    m.name, m.transfers, m.label_needs = name, tuple(parts), LabelNeeds(unlabeled=True)
    return m


def trained_like_source(seed: int = 1) -> UNet:
    """A U-Net whose every tensor (BN statistics included) differs from any fresh init."""
    torch.manual_seed(seed)
    net = UNet(base=MODEL["base_channels"], depth=MODEL["depth"], encoder_growth=MODEL["encoder_growth"])
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) + 0.5)
            else:
                t.fill_(7)  # num_batches_tracked
    return net


def save_pretrained(net: UNet, parts, path, method="fake_pretext"):
    return ckpt.save_atomic({"kind": "pretrained", "method": method, "transfers": list(parts),
                             "state": part_state(net, parts), "model": dict(MODEL), "config_hash": "h"}, path)


@pytest.fixture
def cfg():
    return resolve("unet_mixed", "phantom", "smoke", ["model.base_channels=4"])


@pytest.mark.parametrize("parts", [
    ("encoder",),                                           # contrastive / classification pretexts
    ("encoder", "decoder.0", "decoder.1", "decoder.2"),     # local contrastive
    ("all",),                                               # context restoration
    ("encoder.0", "head"),
])
def test_transfer_copies_exactly_the_declared_parts(parts, cfg, tmp_path):
    src = trained_like_source()
    path = save_pretrained(src, parts, tmp_path / "pretrained.pt")
    torch.manual_seed(2)
    dst = UNet(base=4)
    fresh = copy.deepcopy(dst.state_dict())
    info = _load_pretrained_into(dst, method_with(parts), path, cfg)

    prefixes = tuple(p + "." for p in expand_parts(dst, parts))
    declared = {k for k in fresh if k.startswith(prefixes)}
    assert declared and info["tensors"] == len(declared)
    after, source = dst.state_dict(), src.state_dict()
    for key in after:
        if key in declared:
            assert torch.equal(after[key], source[key]), key
        else:
            assert torch.equal(after[key], fresh[key]), key
            assert not torch.equal(after[key], source[key]), key
    if parts != ("all",):
        assert set(after) - declared  # something was left at its fresh init


def test_pretrain_saves_only_the_declared_parts(phantom_store, tmp_path):
    m = FakeDenoising()
    m.transfers = ("encoder", "decoder.0")
    path = pretrain(m, phantom_store, resolve(m, "phantom", "smoke", PRE_TINY), tmp_path / "pre", device="cpu",
                    progress=False)
    saved = ckpt.load_pretrained(path)
    expected = set(part_state(UNet(base=4), ("encoder", "decoder.0")))
    assert set(saved["state"]) == expected
    assert saved["transfers"] == ["encoder", "decoder.0"] and saved["model"] == MODEL


def test_transfer_refuses_mismatches(cfg, tmp_path):
    src = trained_like_source()
    path = save_pretrained(src, ("encoder",), tmp_path / "enc.pt")
    # a baseline has nothing to receive
    from ichbench.methods.base import get_method
    with pytest.raises(IchbenchError, match="transfers no pretrained parts"):
        _load_pretrained_into(UNet(base=4), get_method("unet_mixed"), path, cfg)
    # a method asking for parts the checkpoint lacks
    with pytest.raises(IchbenchError, match="lacks"):
        _load_pretrained_into(UNet(base=4), method_with(("all",), name="other"), path, cfg)
    # another U-Net width
    wide = resolve("unet_mixed", "phantom", "smoke", ["model.base_channels=8"])
    with pytest.raises(IchbenchError, match="pretrained for U-Net"):
        _load_pretrained_into(UNet(base=8), method_with(("encoder",)), path, wide)
    # a checkpoint from before `encoder_growth` (ichbench 0.1's 7.76 M block) is named as such
    old = {**ckpt.load_pretrained(path), "model": {"base_channels": 4, "depth": 5}}
    ckpt.save_atomic(old, tmp_path / "old.pt")
    with pytest.raises(IchbenchError, match="pretrained for U-Net {'encoder_growth': 'first'"):
        _load_pretrained_into(UNet(base=4), method_with(("encoder",)), tmp_path / "old.pt", cfg)
    with pytest.raises(IchbenchError, match="not a pretrained checkpoint"):
        ckpt.save_atomic({"kind": "training_state"}, tmp_path / "state.pt")
        _load_pretrained_into(UNet(base=4), method_with(("encoder",)), tmp_path / "state.pt", cfg)


def test_every_registered_method_declares_real_parts():
    from ichbench.plugins import get_registry
    net = UNet(base=4)
    for name, m in get_registry().methods().items():
        parts = expand_parts(net, m.transfers)
        assert bool(parts) == m.has_pretext, name
