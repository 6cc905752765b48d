"""Context restoration (Chen et al. 2019; Spahr et al. 2023 §2.6.1.1).

Each image is corrupted by swapping N pairs of h×w patches; the whole U-Net (one output channel)
restores the original under the mean-square error. The paper's own words are that the learned
features "initialize the whole model", so every part, the 1x1 head included, is handed over: the
restoration head already maps the last decoder features to one channel, like the segmentation head.

Patches are "isolated" (Chen et al.): they never overlap, so the N sequential swaps of the paper
are one permutation of pixels and the whole batch is corrupted with a single gather on the device.
Non-overlap comes from placing patches on a lattice of h×w cells whose origin is shifted by a
random offset in [0, h)×[0, w) per image, then drawing 2N distinct cells.

2.5D inputs (`input.*`): every channel is corrupted by the same swaps (the same places in each
neighbour and window) and the network restores the centre slice in the first window only. The
one-channel output is then the same head the segmentation U-Net has, so "all" still transfers,
head included; restoring every channel would need a head that fine-tuning throws away.
"""

from __future__ import annotations

from pydantic import Field

from ichbench.config import PAPER_AUGMENT
from ichbench.config.fields import MAX_IMAGE
from ichbench.methods.base import ANY_INPUT, LabelNeeds, MethodParams, PretextMethod

# 1000 pairs are 2000 disjoint patches: 256² holds 2601 of 5x5 (the smoke profile's size at 64²
# scaled up). More pairs than fit are refused only when a batch is corrupted (`swap_patches`).
MAX_SWAPS = 1000


class ContextRestorationParams(MethodParams):
    n_swaps: int = Field(ge=1, le=MAX_SWAPS)
    """patch pairs swapped in each image (the paper's 20); 0 would leave nothing to restore"""
    patch: int = Field(ge=1, le=MAX_IMAGE // 2)   # two patches still fit the largest image
    """side of a patch in pixels of the training image (the paper's 20 at 256²)"""


class ContextRestoration(PretextMethod):
    name = "context_restoration"
    description = "restore images with N swapped patch pairs (MSE); whole U-Net transferred"
    paper_section = "§2.6.1.1 (Chen et al. 2019)"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("all",)
    pretrain_params_model = ContextRestorationParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    inputs = ANY_INPUT   # every channel corrupted alike; the centre slice (first window) restored
    profiles = {
        # N = 20 swaps of 20x20 patches at 256x256, batch 32; 50 epochs, Adam 1e-3 are the defaults
        "paper": {"batch_size": 32, "augment": dict(PAPER_AUGMENT), "params": {"n_swaps": 20, "patch": 20}},
        # 64x64 images: the patch scales with the image (20 * 64/256 = 5), same share corrupted
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT), "params": {"n_swaps": 20, "patch": 5}},
    }

    def build_pretext(self, unet, cfg):
        from ichbench.methods.nets.restoration import RestorationModel
        return RestorationModel(unet)

    def corrupt(self, images, cfg, generator):
        from ichbench.methods.nets.restoration import swap_patches
        p = self.params(cfg)
        return swap_patches(images, int(p["n_swaps"]), int(p["patch"]), generator)

    def pretext_loss(self, model, batch, cfg, generator):
        import torch.nn.functional as F
        images = batch["images"]
        centre = int(batch.get("centre", 0))   # 2.5D: the centre slice in the first window
        restored = model(self.corrupt(images, cfg, generator))
        return F.mse_loss(restored.float(), images[:, centre:centre + 1].float())


METHODS = [ContextRestoration()]
