"""The masked-image-modelling network: the U-Net behind a learnable pixel-space mask token (torch).

Kept apart from `method.py` so that registering the method never imports torch.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedModel(nn.Module):
    def __init__(self, unet, patch: int):
        super().__init__()
        if unet.head.out_channels != 1:
            raise ValueError(f"masked image modelling needs a one-channel U-Net output, got {unet.head.out_channels}")
        self.unet = unet
        self.patch = patch
        self.mask_token = nn.Parameter(torch.zeros(1, 1, patch, patch))

    def fill(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked pixels replaced by the mask token, tiled on the patch grid."""
        _, c, h, w = images.shape
        reps = (-(-h // self.patch), -(-w // self.patch))
        token = self.mask_token.repeat(1, 1, *reps)[:, :, :h, :w].to(images.dtype)
        return images * (1 - mask) + token.expand(1, c, h, w) * mask

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.unet(self.fill(images, mask))
