"""Random patch masks and the masked reconstruction loss of SimMIM (Xie et al., CVPR 2022)."""

from __future__ import annotations

import math

import torch


def random_patch_mask(batch: int, height: int, width: int, patch: int, ratio: float,
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 where masked: the image is cut into patch×patch cells (a
    partial cell at the right and bottom edges when H or W is not a multiple) and exactly
    ceil(ratio × cells) of them, drawn independently per image, are masked."""
    if patch < 1 or not 0 < ratio < 1:
        raise ValueError(f"random_patch_mask: need patch >= 1 and 0 < ratio < 1, got {patch}, {ratio}")
    gy, gx = math.ceil(height / patch), math.ceil(width / patch)
    cells = gy * gx
    k = min(cells - 1, max(1, math.ceil(ratio * cells)))  # at least one masked and one visible cell
    gen_dev = generator.device if generator is not None else device   # draw where the generator lives
    order = torch.rand(batch, cells, generator=generator, device=gen_dev).argsort(dim=1)[:, :k]
    grid = torch.zeros(batch, cells, device=gen_dev).scatter_(1, order, 1.0).view(batch, 1, gy, gx)
    full = grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return full[:, :, :height, :width].to(device if device is not None else gen_dev).contiguous()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels only (SimMIM's loss): sum |pred - target| · mask
    / (number of masked pixels · channels). Visible pixels contribute nothing."""
    if pred.shape != target.shape:
        raise ValueError(f"masked_l1: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred.float() - target.float()).abs() * mask
    return err.sum() / (mask.expand_as(err).sum() + 1e-5)
