"""VICReg's network: the U-Net encoder, the pooled bottleneck and the expander (torch).

Kept apart from `method.py` so that registering the method (what `ichbench methods` does) never
imports torch; `VICReg.build_pretext` imports this module when a pretraining starts.
"""

from __future__ import annotations

import torch
from torch import nn

from ichbench.api import scaled_widths


def expander(dims: list[int]) -> nn.Sequential:
    """Linear-BN-ReLU blocks, then a last Linear without bias (the authors' `Projector`)."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)


class VICRegModel(nn.Module):
    """U-Net encoder -> global average pool of the bottleneck -> expander."""

    def __init__(self, unet, paper_dims):
        super().__init__()
        self.unet = unet
        # widths are given for the paper's 512-channel bottleneck and scale with a narrower U-Net
        self.dims = scaled_widths(paper_dims, unet.widths[-1])
        self.expander = expander(self.dims)

    def representation(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet.encode(images)[-1].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.expander(self.representation(images))
