"""Context restoration (Chen et al. 2019; Spahr et al. 2023 §2.6.1.1).

Each image is corrupted by swapping N pairs of h×w patches; the whole U-Net (one output channel)
restores the original under the mean-square error. The paper's own words are that the learned
features "initialize the whole model", so every part, the 1x1 head included, is handed over: the
restoration head already maps the last decoder features to one channel, like the segmentation head.

Patches are "isolated" (Chen et al.): they never overlap, so the N sequential swaps of the paper
are one permutation of pixels and the whole batch is corrupted with a single gather on the device.
Non-overlap comes from placing patches on a lattice of h×w cells whose origin is shifted by a
random offset in [0, h)×[0, w) per image, then drawing 2N distinct cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ichbench.config import PAPER_AUGMENT
from ichbench.methods.base import LabelNeeds
from ichbench.methods.heads import PretextMethod


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


class ContextRestoration(PretextMethod):
    name = "context_restoration"
    description = "restore images with N swapped patch pairs (MSE); whole U-Net transferred"
    paper_section = "§2.6.1.1 (Chen et al. 2019)"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("all",)
    profiles = {
        # N = 20 swaps of 20x20 patches at 256x256, batch 32; 50 epochs, Adam 1e-3 are the defaults
        "paper": {"batch_size": 32, "augment": dict(PAPER_AUGMENT), "params": {"n_swaps": 20, "patch": 20}},
        # 64x64 images: the patch scales with the image (20 * 64/256 = 5), same share corrupted
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT), "params": {"n_swaps": 20, "patch": 5}},
    }

    def build_pretext(self, unet, cfg):
        return RestorationModel(unet)

    def corrupt(self, images: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
        p = self.params(cfg)
        return swap_patches(images, int(p["n_swaps"]), int(p["patch"]), generator)

    def pretext_loss(self, model, batch, cfg, generator):
        images = batch["images"]
        restored = model(self.corrupt(images, cfg, generator))
        return F.mse_loss(restored.float(), images.float())


METHODS = [ContextRestoration()]
