"""Global contrastive pretraining (SimCLR, Chen et al. 2020; Spahr et al. 2023 §2.6.1.2, eq. 6).

ψ = MLP(ψ_e): the U-Net encoder ψ_e, a global average pool of its 512-channel bottleneck and a
2-layer MLP 512 -> 512 -> 128. Each image gives two views under T_G; InfoNCE with τ = 0.1 over
the 2B views of the batch (batch 60). Only ψ_e, the encoder, is handed to the U-Net; the MLP
projector is discarded, as the paper (after SimCLR) prescribes.
"""

from __future__ import annotations

from ichbench.methods.base import LabelNeeds, PretextMethod


class GlobalContrastive(PretextMethod):
    name = "global_contrastive"
    description = "SimCLR on the encoder: T_G views, MLP 512-512-128 projector, InfoNCE tau=0.1; encoder transferred"
    paper_section = "§2.6.1.2, eq. 6 (Chen et al. 2020)"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("encoder",)
    profiles = {
        "paper": {"batch_size": 60, "params": {"tau": 0.1, "proj_dims": [512, 512, 128]}},
        # widths scale with the U-Net (base 8: 128 -> 128 -> 32); a batch of 8 gives 14 negatives
        "smoke": {"batch_size": 8, "params": {"tau": 0.1, "proj_dims": [512, 512, 128]}},
    }

    def build_pretext(self, unet, cfg):
        from ichbench.methods.nets.heads import PooledEncoderHead
        return PooledEncoderHead(unet, self.params(cfg)["proj_dims"], classes=False)

    def pretext_loss(self, model, batch, cfg, generator):
        import torch

        from ichbench.transforms import T_GLOBAL, contrastive_view
        from ichbench.losses import info_nce
        images = batch["images"]
        v1 = contrastive_view(images, T_GLOBAL, generator=generator)
        v2 = contrastive_view(images, T_GLOBAL, generator=generator)
        # one forward over both views: BatchNorm sees the same statistics for both
        z1, z2 = model(torch.cat([v1, v2], 0)).chunk(2, 0)
        return info_nce(z1, z2, tau=float(self.params(cfg)["tau"]))


METHODS = [GlobalContrastive()]
