"""The method plugin surface.

A method is registered through the `register_methods` hook. It declares its label needs (the
paper's Table 2), which U-Net parts its pretraining hands over, its hyperparameters per profile,
and — for pretext methods — how to build the pretext model around a U-Net and compute its loss on
a batch. The engine (`ichbench.train`) owns loops, optimisers, checkpoints and devices; a method
only says what is specific to it. A method that wraps a whole framework (plugin API 2) replaces
the fine-tuning of a fold instead (`finetune_fold`): it gets the fold's volumes and returns its
predictions, which the engine scores exactly as it scores its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ichbench.errors import UnknownNameError


@dataclass(frozen=True)
class LabelNeeds:
    """What labels a method consumes (the paper's Table 2)."""
    segmentation: bool = True      # voxel masks for fine-tuning (every method)
    unlabeled: bool = False        # pretraining on images alone
    binary: bool = False           # slice-level ICH yes/no
    multilabel: bool = False       # slice-level ICH + five subtypes

    def describe(self) -> list[str]:
        return [name for name in ("segmentation", "unlabeled", "binary", "multilabel") if getattr(self, name)]


class Method:
    """Base class. Baselines only set attributes; pretext methods also implement the hooks below."""

    name: str = ""
    description: str = ""
    paper_section: str = ""
    label_needs: LabelNeeds = LabelNeeds()
    transfers: tuple[str, ...] = ()          # U-Net parts the pretraining initialises ("encoder", "decoder.0", ...)
    init_from: str | None = None             # a method whose pretraining initialises this one's
    icm: bool = False                        # multiply predictions by the intracranial mask
    sampling: str = "mixed"                  # fine-tuning slice sampling: "mixed" or "ich_only"

    @property
    def has_pretext(self) -> bool:
        return bool(self.transfers)

    # -- pretext hooks (only for methods with transfers) ----------------------------------------
    def pretrain_overrides(self, profile: str) -> dict:
        """Pretraining hyperparameters that differ from the shared defaults, per profile."""
        return {}

    def build_pretext(self, unet, cfg):
        """Return an nn.Module holding `unet` (as attribute `unet`) plus any heads the pretext needs."""
        raise NotImplementedError

    def pretext_loss(self, model, batch: dict, cfg, generator):
        """Loss on one batch. batch: `images` (B,1,H,W) windowed to [0,1] on the device, `labels`
        (B,7) uint8. `generator` is a torch.Generator on the device for the method's randomness."""
        raise NotImplementedError

    # -- fine-tuning (plugin API 2) ----------------------------------------------------------------
    def finetune_overrides(self, profile: str) -> dict:
        """FinetuneConfig settings that differ from the profile's, per profile (keys of
        FinetuneConfig; the method's own settings under `params`). Default: none."""
        return {}

    def finetune_fold(self, fold):
        """Replace ichbench's fine-tuning of one fold: train on `fold` (an `ichbench.api.Fold`:
        its training volumes with masks, its test volumes without, the resolved config, a folder
        to work in) and return an `ichbench.api.FoldOutput` holding a binary mask for every test
        volume. The engine scores them as it scores the shared recipe's. Not overridden: the
        shared recipe of the paper trains the fold."""
        raise NotImplementedError

    @property
    def owns_finetuning(self) -> bool:
        """True when the method overrides `finetune_fold` (its own training loop)."""
        return type(self).finetune_fold is not Method.finetune_fold

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "paper_section": self.paper_section,
                "label_needs": self.label_needs.describe(), "transfers": list(self.transfers),
                "init_from": self.init_from, "icm": self.icm, "sampling": self.sampling}


def get_method(name: str) -> Method:
    from ichbench.plugins import get_registry
    known = get_registry().methods()
    if name not in known:
        raise UnknownNameError("method", name, known)
    return known[name]


class PretextMethod(Method):
    """A pretext method whose hyperparameters come from a per-profile table.

    `profiles[name]` holds PretrainConfig overrides with the method's own `params`. The paper
    profile's params are also the fallback when a config lacks a key, so a method run through a
    config built without `pretrain_overrides` still follows the paper rather than failing late.
    """

    profiles: dict[str, dict] = {}

    def pretrain_overrides(self, profile: str) -> dict:
        if profile not in self.profiles:
            raise UnknownNameError("profile", profile, self.profiles)
        return copy.deepcopy(self.profiles[profile])

    def params(self, cfg) -> dict:
        return {**self.profiles["paper"].get("params", {}), **(getattr(cfg, "params", None) or {})}
