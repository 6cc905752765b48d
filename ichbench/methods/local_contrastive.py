"""Local contrastive pretraining (Chaitanya et al. 2020; Spahr et al. 2023 §2.6.1.3, eq. 7).

ψ = the U-Net encoder (initialised by `global_contrastive`, then frozen), the first three decoder
blocks (skip connections kept) and two 1x1 convolutions 64 -> 128 -> 32. Two views of each image
under T_L give feature maps F1, F2 at half the image size; N_r = 20 non-overlapping 3x3 regions of
F1 and the same places of F2 are the comparison units, and each region must pick its counterpart
among the 2N_r - 1 other regions of the same image (InfoNCE, τ = 0.1; no other image is involved).
Encoder and the three decoder levels are handed to the U-Net; the projector is discarded.

T_L is geometric (translate, rotate, scale, crop), so "the same region" in the two views is not
the same pixel position. Chaitanya et al. sidestep this with intensity-only views; the paper keeps
the geometric transforms, so we follow each region through the warps: a 3x3 region of F1 at
normalised positions u1 shows the input at θ1(u1), which view 2 shows at θ2⁻¹(θ1(u1)); F2 is
sampled there (bilinear). Regions whose counterpart falls outside view 2 are not drawn.
"""

from __future__ import annotations

from pydantic import Field

from ichbench.methods.base import ANY_INPUT, LabelNeeds, MethodParams, PretextMethod, Widths
from ichbench.methods.global_contrastive import tau_field

# Regions per image: each image's loss compares its 2N regions with each other, a (2N)² matrix:
# at 1000, 4 M entries an image, 384 MB for the paper's batch of 24. The paper's 256² images give
# a 128² feature map, 1764 cells of 3x3; regions that do not fit are refused in `region_pairs`.
MAX_REGIONS = 1000
# A region's side in feature-map pixels: at 64, a region of the 32-channel projection is a
# 131,072-long vector (the paper's 3x3 one is 288 long).
MAX_REGION = 64


class LocalContrastiveParams(MethodParams):
    tau: float = tau_field()
    """InfoNCE temperature (the paper's 0.1)"""
    proj_dims: Widths
    """the two 1x1 convolutions, input first (64 channels at the paper's U-Net width; all scale
    with a narrower one)"""
    n_regions: int = Field(ge=2, le=MAX_REGIONS)   # one region has no negatives to pick from
    """N_r, regions drawn per image (the paper's 20)"""
    region: int = Field(ge=1, le=MAX_REGION)
    """side of a region in feature-map pixels (the paper's 3)"""


class LocalContrastive(PretextMethod):
    name = "local_contrastive"
    description = ("local InfoNCE on 3x3 regions of the third decoder level (T_L views, tau=0.1), "
                   "frozen encoder from global_contrastive; encoder + 3 decoder levels transferred")
    paper_section = "§2.6.1.3, eq. 7 (Chaitanya et al. 2020)"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("encoder", "decoder.0", "decoder.1", "decoder.2")
    init_from = "global_contrastive"
    pretrain_params_model = LocalContrastiveParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    inputs = ANY_INPUT   # a view transforms a sample's channels together
    profiles = {
        "paper": {"batch_size": 24, "params": {"tau": 0.1, "proj_dims": [64, 128, 32],
                                               "n_regions": 20, "region": 3}},
        # 64x64 images give a 32x32 feature map: 100 cells of 3x3, still room for 20 regions
        "smoke": {"batch_size": 4, "params": {"tau": 0.1, "proj_dims": [64, 128, 32],
                                              "n_regions": 20, "region": 3}},
    }

    def build_pretext(self, unet, cfg):
        from ichbench.methods.nets.local import LocalContrastiveModel
        return LocalContrastiveModel(unet, self.params(cfg)["proj_dims"])

    def pretext_loss(self, model, batch, cfg, generator):
        import torch

        from ichbench.methods.nets.local import region_info_nce, region_pairs
        from ichbench.transforms import T_LOCAL, contrastive_view
        p = self.params(cfg)
        images = batch["images"]
        v1, theta1 = contrastive_view(images, T_LOCAL, generator=generator, return_theta=True)
        v2, theta2 = contrastive_view(images, T_LOCAL, generator=generator, return_theta=True)
        f1, f2 = model(torch.cat([v1, v2], 0)).float().chunk(2, 0)
        r1, r2, valid = region_pairs(f1, f2, theta1, theta2, int(p["n_regions"]), int(p["region"]), generator)
        return region_info_nce(r1, r2, valid, float(p["tau"]))


METHODS = [LocalContrastive()]
