"""The heads pretext methods put on the U-Net: MLPs on the pooled bottleneck, 1x1-conv projectors.

Head widths are written in `params` exactly as the paper gives them for its U-Net (bottleneck 512
channels, third decoder level 64). A narrower U-Net (the smoke profile's base 8) scales every
hidden width by the same factor as its input, so `[512, 512, 128]` becomes `[128, 128, 32]` and the
paper profile's numbers never have to be rewritten per model width. Class counts are not scaled.
"""

from __future__ import annotations

import torch
from torch import nn


def scaled_widths(paper_dims, in_width: int) -> list[int]:
    """`paper_dims[0]` is the input width in the paper; the others scale with `in_width / it`."""
    dims = [int(d) for d in paper_dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"head widths must be at least two positive ints (input first), got {list(paper_dims)}")
    factor = in_width / dims[0]
    return [in_width] + [max(1, round(d * factor)) for d in dims[1:]]


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last: logits / projections)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv1x1_projector(dims: list[int]) -> nn.Sequential:
    """The local contrastive projector: 1x1 convolutions with ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Conv2d(a, b, 1))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PooledEncoderHead(nn.Module):
    """U-Net encoder -> global average pool of the bottleneck -> MLP.

    The paper's classifiers (§2.6.2) and the SimCLR projector (§2.6.1.2) all read the 512-channel
    bottleneck through an average pool; only the MLP differs. `paper_dims` is the MLP as the paper
    writes it (512 -> ... -> out). With `classes=True` the last width is a class count and is kept
    as is; otherwise (a projection dimension) it scales with the U-Net width like the others.
    """

    def __init__(self, unet, paper_dims, *, classes: bool):
        super().__init__()
        self.unet = unet
        paper_dims = [int(d) for d in paper_dims]
        if classes:
            dims = scaled_widths(paper_dims[:-1], unet.widths[-1]) + paper_dims[-1:]
        else:
            dims = scaled_widths(paper_dims, unet.widths[-1])
        self.dims = dims
        self.mlp = mlp(dims)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet.encode(images)[-1].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(images))
