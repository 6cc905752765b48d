"""Global contrastive pretraining (SimCLR, Chen et al. 2020; Spahr et al. 2023 §2.6.1.2, eq. 6).

ψ = MLP(ψ_e): the U-Net encoder ψ_e, a global average pool of its 512-channel bottleneck and a
2-layer MLP 512 -> 512 -> 128. Each image gives two views under T_G; InfoNCE with τ = 0.1 over
the 2B views of the batch (batch 60). Only ψ_e, the encoder, is handed to the U-Net; the MLP
projector is discarded, as the paper (after SimCLR) prescribes.
"""

from __future__ import annotations

from pydantic import Field

from ichbench.methods.base import ANY_INPUT, LabelNeeds, MethodParams, PretextMethod, Widths

# SimCLR's temperatures span 0.05-1 (Chen et al. 2020, Table 5). Below 1e-3 the logits of cosine
# similarities pass 1000 and the softmax is one-hot (no gradient); above 10 they differ by less
# than 0.2 and it is nearly uniform.
MIN_TAU, MAX_TAU = 1e-3, 10.0


def tau_field():
    return Field(ge=MIN_TAU, le=MAX_TAU)


class GlobalContrastiveParams(MethodParams):
    tau: float = tau_field()
    """InfoNCE temperature (the paper's 0.1)"""
    proj_dims: Widths
    """the MLP projector, input first (512 at the paper's U-Net width; all scale with a narrower one)"""


class GlobalContrastive(PretextMethod):
    name = "global_contrastive"
    description = "SimCLR on the encoder: T_G views, MLP 512-512-128 projector, InfoNCE tau=0.1; encoder transferred"
    paper_section = "§2.6.1.2, eq. 6 (Chen et al. 2020)"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("encoder",)
    pretrain_params_model = GlobalContrastiveParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    inputs = ANY_INPUT   # a view transforms a sample's channels together
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
