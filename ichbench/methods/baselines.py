"""The paper's four supervised baselines (§2.5.3): the U-Net trained on the labeled slices alone.

ICH-only trains on the slices with hemorrhage; Mixed adds twice as many random healthy slices
each epoch with loss weight α = 0.2 on them (eq. 5). The `_icm` variants keep only predictions
inside the intracranial cavity mask. No pretext: nothing is transferred.
"""

from __future__ import annotations

from ichbench.methods.base import ANY_INPUT, LabelNeeds, Method, MethodParams


class Baseline(Method):
    paper_section = "§2.5.3"
    label_needs = LabelNeeds(segmentation=True)
    transfers = ()
    # no pretext, and the shared recipe reads no params: any key is a typo
    pretrain_params_model = MethodParams
    finetune_params_model = MethodParams
    inputs = ANY_INPUT

    def __init__(self, name: str, sampling: str, icm: bool, description: str):
        self.name = name
        self.sampling = sampling
        self.icm = icm
        self.description = description


METHODS = [
    Baseline("unet_ich_only", "ich_only", False, "U-Net trained on the ICH slices only"),
    Baseline("unet_ich_only_icm", "ich_only", True,
             "U-Net trained on the ICH slices only; predictions masked by the intracranial cavity"),
    Baseline("unet_mixed", "mixed", False,
             "U-Net trained on ICH slices plus twice as many healthy slices (alpha = 0.2 on those)"),
    Baseline("unet_mixed_icm", "mixed", True,
             "Mixed U-Net; predictions masked by the intracranial cavity"),
]
