"""Masked image modelling as an ichbench pretext: the whole U-Net learns to fill in masked patches.

SimMIM's formulation (Xie et al., CVPR 2022) rather than MAE's (He et al. 2022): MAE's encoder
drops the masked tokens, which only a transformer can do; a convolutional U-Net sees the whole
image, so, as in SimMIM, masked patches are replaced by a learnable mask token, the network
predicts every pixel and the loss is the L1 error on the masked pixels only. SimMIM's prediction
head is one linear layer; here it is the U-Net's own 1×1 output convolution, so every part —
encoder, decoder and head — is trained and handed to the segmentation U-Net. The mask token is
part of the pretext, not of the U-Net, and is discarded.

The mask token lives in pixel space: a learnable patch×patch image patch, the counterpart of
SimMIM's learnable vector in patch-embedding space (a patch embedding is linear in the pixels of
a patch). It starts at 0, the bottom of the [-50, 150] HU window.
"""

from __future__ import annotations

from ichbench.api import Field, LabelNeeds, MethodParams, PretextMethod

REFERENCE_SIZE = 256   # `patch` is given in pixels at 256×256 and scales with the image size


def patch_pixels(patch_at_256: int, image_size: int) -> int:
    return max(1, round(int(patch_at_256) * int(image_size) / REFERENCE_SIZE))


class MaeParams(MethodParams):
    """`pretrain.params`, checked when a run's config is resolved (dry runs too)."""
    patch: int = Field(ge=1, le=REFERENCE_SIZE)   # at most one patch the size of the image
    """side of a masked patch in pixels at 256x256 (SimMIM's 32); it scales with the image"""
    mask_ratio: float = Field(gt=0, lt=1)         # all or nothing leaves nothing to learn
    """share of the patches masked (SimMIM's 0.6)"""


class MaskedImageModelling(PretextMethod):
    name = "mae"
    description = ("masked image modelling (SimMIM): 60 % of 32x32 patches masked, L1 on the masked "
                   "pixels; whole U-Net transferred")
    paper_section = "Xie et al. 2022 (SimMIM), after He et al. 2022 (MAE); not one of the paper's methods"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("all",)
    pretrain_params_model = MaeParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    profiles = {
        # SimMIM: random masking of 32x32 patches, ratio 0.6, L1 on masked pixels. Its AdamW,
        # batch 2048 and hundreds of epochs are replaced by this harness's shared pretext recipe
        # (Adam 1e-3, 50 epochs); batch 32 as the paper's other whole-U-Net pretext.
        "paper": {"batch_size": 32, "params": {"patch": 32, "mask_ratio": 0.6}},
        # 64x64 images: the patch scales with the image (32 * 64/256 = 8 pixels), same ratio
        "smoke": {"batch_size": 8, "params": {"patch": 32, "mask_ratio": 0.6}},
    }

    # torch is imported where it is used, so listing the method stays fast
    def build_pretext(self, unet, cfg):
        from ichbench_mae.model import MaskedModel
        return MaskedModel(unet, patch_pixels(self.params(cfg)["patch"], cfg.image_size))

    def pretext_loss(self, model, batch, cfg, generator):
        from ichbench_mae.masking import masked_l1, random_patch_mask
        images = batch["images"]
        b, _, h, w = images.shape
        mask = random_patch_mask(b, h, w, model.patch, float(self.params(cfg)["mask_ratio"]),
                                 generator=generator, device=images.device).to(images.dtype)
        return masked_l1(model(images, mask), images, mask)


METHODS = [MaskedImageModelling()]
