"""Context restoration's torch side: the batched patch swap and the restoration model."""

from __future__ import annotations

import torch
from torch import nn


def swap_patches(images: torch.Tensor, n_swaps: int, patch: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Return a copy of `images` (B, C, H, W) with `n_swaps` disjoint pairs of patch×patch squares
    swapped in each image (same positions across channels, different per image)."""
    b, c, h, w = images.shape
    if n_swaps < 1 or patch < 1:
        raise ValueError(f"swap_patches: n_swaps and patch must be positive, got {n_swaps}, {patch}")
    # cells that fit whatever offset in [0, patch) the image draws
    ny, nx = (h - patch + 1) // patch, (w - patch + 1) // patch
    if 2 * n_swaps > ny * nx:
        raise ValueError(f"swap_patches: {n_swaps} pairs of {patch}x{patch} patches do not fit disjointly "
                         f"in a {h}x{w} image ({ny * nx} cells)")
    dev = images.device
    gen_dev = generator.device if generator is not None else dev   # draw where the generator lives
    offset = torch.randint(0, patch, (b, 2), generator=generator, device=gen_dev).to(dev)
    cells = torch.rand(b, ny * nx, generator=generator, device=gen_dev).argsort(dim=1)[:, : 2 * n_swaps].to(dev)
    top = offset[:, :1] + (cells // nx) * patch                        # (B, 2N) patch corners
    left = offset[:, 1:] + (cells % nx) * patch
    d = torch.arange(patch, device=dev)
    rows = top[:, :, None, None] + d[:, None]                           # (B, 2N, p, 1)
    cols = left[:, :, None, None] + d[None, :]                          # (B, 2N, 1, p)
    flat = (rows * w + cols).flatten(2)                                 # (B, 2N, p*p) pixel indices
    src_a, src_b = flat[:, :n_swaps].flatten(1), flat[:, n_swaps:].flatten(1)
    index = torch.arange(h * w, device=dev).expand(b, -1).clone()
    index.scatter_(1, src_a, src_b)   # pixels of patch a read from patch b ...
    index.scatter_(1, src_b, src_a)   # ... and the other way round
    out = images.flatten(2).gather(2, index[:, None, :].expand(-1, c, -1))
    return out.view(b, c, h, w)


class RestorationModel(nn.Module):
    def __init__(self, unet):
        super().__init__()
        if unet.head.out_channels != 1:
            raise ValueError(f"context restoration needs a one-channel U-Net output, got {unet.head.out_channels}")
        self.unet = unet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet(images)
