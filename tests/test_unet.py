"""The paper's U-Net (§2.5.1): block shapes and parameter count, by hand."""

import pytest
import torch

from ichbench.resolve import resolve
from ichbench.models.unet import UNet, part_names, unet_for


def conv_block(cin, mid, cout):
    """Two bias-free 3x3 convs, each followed by BatchNorm (weight + bias)."""
    return 9 * cin * mid + 2 * mid + 9 * mid * cout + 2 * cout


def paper_count(base=32, depth=5):
    w = [base * 2 ** i for i in range(depth)]
    enc = sum(conv_block(cin, cout // 2, cout) for cin, cout in zip([1] + w[:-1], w))
    dec = sum(4 * w[i + 1] * w[i] + w[i] + conv_block(2 * w[i], w[i], w[i]) for i in range(depth - 1))
    return enc + dec + w[0] + 1   # 1x1 head with bias


def test_paper_unet_has_5_41_million_parameters(registry):
    """`UNet()` as the paper profile builds it: the channel count grows on each encoder block's
    second conv (h×w×32 → h×w×32 → h×w×64)."""
    for dataset in ("segcq500", "hssayeni"):
        net = unet_for(resolve("unet_mixed", dataset, "paper").model)
        n = sum(p.numel() for p in net.parameters())
        assert n == paper_count() == 5_406_641
    assert [m.out_channels for m in net.encoder[1] if isinstance(m, torch.nn.Conv2d)] == [32, 64]
    assert [m.out_channels for m in net.encoder[0] if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    assert [m.out_channels for m in net.bottleneck if isinstance(m, torch.nn.Conv2d)] == [256, 512]
    # decoder: h×w×64 → h×w×32 → h×w×32 after the up-convolution
    assert [m.out_channels for m in net.decoder[-1].block if isinstance(m, torch.nn.Conv2d)] == [32, 32]


def test_old_block_still_buildable_and_part_names_unchanged():
    old, new = UNet(encoder_growth="first"), UNet()
    assert sum(p.numel() for p in old.parameters()) == 7_762_465
    assert part_names(old) == part_names(new)
    x = torch.rand(2, 1, 64, 64)
    assert new(x).shape == old(x).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="encoder_growth"):
        UNet(encoder_growth="middle")
