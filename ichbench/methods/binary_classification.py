"""Binary classification pretraining (Spahr et al. 2023 §2.6.2.1).

The U-Net encoder, an average pool of the bottleneck and a 3-layer MLP 512 -> 1024 -> 256 -> 2
classify each RSNA slice as ICH / no ICH under the softmax cross-entropy (batch 64). The label is
the store's `any` column; slices whose label is unknown (255) do not count. Encoder transferred.
"""

from __future__ import annotations

from ichbench import LABEL_ORDER, UNKNOWN_LABEL
from ichbench.config import PAPER_AUGMENT
from pydantic import field_validator

from ichbench.methods.base import ANY_INPUT, LabelNeeds, MethodParams, PretextMethod, Widths

ANY = LABEL_ORDER.index("any")


class BinaryParams(MethodParams):
    mlp_dims: Widths
    """the MLP on the pooled bottleneck, input first (512 at the paper's U-Net width; the others
    scale with a narrower one), ending in the 2 classes (no ICH, ICH)"""

    @field_validator("mlp_dims")
    @classmethod
    def _two_classes(cls, dims: list[int]) -> list[int]:
        if dims[-1] != 2:
            raise ValueError(f"must end in 2 outputs (no ICH, ICH), got {dims}")
        return dims


class BinaryClassification(PretextMethod):
    name = "binary_classification"
    description = ("ICH yes/no slice classifier (encoder + avg pool + MLP 512-1024-256-2, cross-entropy); "
                   "encoder transferred")
    paper_section = "§2.6.2.1"
    label_needs = LabelNeeds(segmentation=True, binary=True)
    transfers = ("encoder",)
    pretrain_params_model = BinaryParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    inputs = ANY_INPUT   # the label is the centre slice's
    profiles = {
        "paper": {"batch_size": 64, "augment": dict(PAPER_AUGMENT), "params": {"mlp_dims": [512, 1024, 256, 2]}},
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT), "params": {"mlp_dims": [512, 1024, 256, 2]}},
    }

    def build_pretext(self, unet, cfg):
        from ichbench.methods.nets.heads import PooledEncoderHead
        dims = self.params(cfg)["mlp_dims"]
        if int(dims[-1]) != 2:
            raise ValueError(f"binary_classification: the MLP must end in 2 outputs (no ICH, ICH), got {dims}")
        return PooledEncoderHead(unet, dims, classes=True)

    def pretext_loss(self, model, batch, cfg, generator):
        import torch.nn.functional as F
        target = batch["labels"][:, ANY].long()
        known = target != UNKNOWN_LABEL
        per_slice = F.cross_entropy(model(batch["images"]).float(), target.where(known, 0), reduction="none")
        weight = known.float()
        return (per_slice * weight).sum() / weight.sum().clamp(min=1.0)


METHODS = [BinaryClassification()]
