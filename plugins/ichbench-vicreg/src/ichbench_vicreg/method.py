"""VICReg as an ichbench pretext: the U-Net encoder learns from two views of each unlabeled slice.

The representation is the global average pool of the U-Net bottleneck (512 channels at the paper's
width), the counterpart of the ResNet's pooled 2048-d output in Bardes et al.; the expander is
their MLP of three linear layers, the first two followed by BatchNorm and ReLU (8192-8192-8192).
Views come from the same transform T_G the paper's SimCLR pretext uses, so the two joint-embedding
pretexts differ only in their objective. Only the encoder is handed to the U-Net; the expander is
discarded, as VICReg prescribes.
"""

from __future__ import annotations

from ichbench.api import Field, LabelNeeds, MethodParams, PretextMethod, Widths

# The loss coefficients: Bardes et al. use 25, 25 and 1 and vary them within a factor of a few;
# 1000, 40 times the largest, stops a typo (an extra zero or three), not an experiment.
MAX_COEFF = 1000.0


def coeff():
    return Field(ge=0, le=MAX_COEFF)


class VICRegParams(MethodParams):
    """`pretrain.params`, checked when a run's config is resolved (dry runs too)."""
    sim_coeff: float = coeff()
    """λ, weight of the invariance term (25)"""
    std_coeff: float = coeff()
    """μ, weight of the variance term (25)"""
    cov_coeff: float = coeff()
    """ν, weight of the covariance term (1)"""
    eps: float = Field(gt=0, le=1)   # under the square root of a variance of [0, 1] features
    """ε, added to the variance before its square root (1e-4)"""
    expander_dims: Widths            # widths up to 16384: an 8192x8192 layer is already 67 M weights
    """the expander, input first (512 at the paper's U-Net width; all scale with a narrower one)"""


class VICReg(PretextMethod):
    name = "vicreg"
    description = ("VICReg on the encoder: T_G views, expander 8192-8192-8192, "
                   "invariance/variance/covariance 25/25/1; encoder transferred")
    paper_section = "Bardes et al. 2021 (cited in §1); not one of the paper's methods"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)
    transfers = ("encoder",)
    pretrain_params_model = VICRegParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    profiles = {
        # Bardes et al.: λ = μ = 25, ν = 1, ε = 1e-4, expander 8192-8192-8192 on a 2048-d
        # representation. Their LARS, batch 2048 and 1000 epochs are replaced by this harness's
        # shared pretext recipe (Adam 1e-3, 50 epochs); batch 128 per view fits one GPU at 256².
        "paper": {"batch_size": 128, "params": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                                                "eps": 1e-4, "expander_dims": [512, 8192, 8192, 8192]}},
        # same numbers; the expander scales with the 8-channel U-Net (128 -> 2048 -> 2048 -> 2048)
        "smoke": {"batch_size": 8, "params": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                                              "eps": 1e-4, "expander_dims": [512, 8192, 8192, 8192]}},
    }

    # torch is imported where it is used, so listing the method stays fast
    def build_pretext(self, unet, cfg):
        from ichbench_vicreg.model import VICRegModel
        return VICRegModel(unet, self.params(cfg)["expander_dims"])

    def pretext_loss(self, model, batch, cfg, generator):
        from ichbench.api import T_GLOBAL, contrastive_view
        from ichbench_vicreg.loss import vicreg_loss
        p = self.params(cfg)
        images = batch["images"]
        v1 = contrastive_view(images, T_GLOBAL, generator=generator)
        v2 = contrastive_view(images, T_GLOBAL, generator=generator)
        # Two forward passes, as in the authors' code: each branch's BatchNorm and its variance
        # and covariance terms see one view of the batch, never a mix of both.
        z1, z2 = model(v1), model(v2)
        return vicreg_loss(z1, z2, sim_coeff=float(p["sim_coeff"]), std_coeff=float(p["std_coeff"]),
                           cov_coeff=float(p["cov_coeff"]), eps=float(p["eps"]))


METHODS = [VICReg()]
