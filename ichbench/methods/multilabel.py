"""Multi-label classification pretraining (Spahr et al. 2023 §2.6.2.2), two losses.

The binary classifier's network with seven sigmoid outputs — no-ICH, ICH and the five subtypes, in
the store's label order — trained either with a weighted binary cross-entropy (`multilabel_ce`) or
with the Dice loss between the 7 probabilities and the 7-label vector (`multilabel_dl`). Same
settings as the binary task (batch 64, 50 epochs). Encoder transferred.

The paper says "weighted binary cross-entropy" without giving weights; the authors' config
trains with an unweighted `BCEWithLogitsLoss`, so the `paper` profile uses `pos_weight: "none"`.
Two weightings stay available as options (`--set pretrain.params.pos_weight=...`):
- "auto": each class's positives weighted by n_negative/n_positive (inverse frequency, clipped at
  100, as `ichbench.losses.class_pos_weights`), so EDH (~0.3 % of RSNA slices) is not
  drowned by the balanced no-ICH/ICH pair. The model counts the labels of every training batch
  and weights with the running ratio, which converges to the store's frequencies within the first
  epoch and is checkpointed with the model (buffers), so a resumed run keeps the same weights.
- seven numbers: fixed weights in label order.
"""

from __future__ import annotations

from ichbench import LABEL_ORDER
from ichbench.config import PAPER_AUGMENT
from ichbench.methods.base import LabelNeeds, PretextMethod

N_CLASSES = len(LABEL_ORDER)


class _Multilabel(PretextMethod):
    label_needs = LabelNeeds(segmentation=True, multilabel=True)
    transfers = ("encoder",)
    paper_section = "§2.6.2.2"

    def build_pretext(self, unet, cfg):
        from ichbench.methods.nets.classifier import MultilabelClassifier
        dims = self.params(cfg)["mlp_dims"]
        if int(dims[-1]) != N_CLASSES:
            raise ValueError(f"{self.name}: the MLP must end in {N_CLASSES} outputs ({', '.join(LABEL_ORDER)}), "
                             f"got {dims}")
        return MultilabelClassifier(unet, dims)

    def _check_labels(self, labels) -> None:
        if labels.ndim != 2 or labels.shape[1] != N_CLASSES:
            raise ValueError(f"{self.name}: labels must be (B, {N_CLASSES}), got {tuple(labels.shape)}")


class MultilabelCE(_Multilabel):
    name = "multilabel_ce"
    description = "7-label slice classifier (no-ICH, ICH, 5 subtypes), weighted BCE; encoder transferred"
    profiles = {
        # the authors' config: plain BCEWithLogitsLoss (see the module docstring for the options)
        "paper": {"batch_size": 64, "augment": dict(PAPER_AUGMENT),
                  "params": {"mlp_dims": [512, 1024, 256, 7], "pos_weight": "none"}},
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT),
                  "params": {"mlp_dims": [512, 1024, 256, 7], "pos_weight": "none"}},
    }

    def pretext_loss(self, model, batch, cfg, generator):
        from ichbench.losses import weighted_bce
        labels = batch["labels"]
        self._check_labels(labels)
        pw = self.params(cfg)["pos_weight"]
        if pw == "none":
            weights = None
        elif pw == "auto":
            weights = model.observe(labels)
        else:
            weights = self.fixed_weights(pw).to(labels.device)
        return weighted_bce(model(batch["images"]), labels, pos_weight=weights)

    @staticmethod
    def fixed_weights(pw):
        """Seven numbers, as a list or as the comma-separated text `--set` leaves in a str param."""
        try:
            values = [float(v) for v in (pw.strip("[]() ").split(",") if isinstance(pw, str) else pw)]
        except (TypeError, ValueError):
            values = []
        if len(values) != N_CLASSES or min(values) <= 0:
            raise ValueError(f"multilabel_ce: pos_weight must be 'none', 'auto' or {N_CLASSES} positive numbers "
                             f"({', '.join(LABEL_ORDER)}), got {pw!r}")
        import torch
        return torch.tensor(values, dtype=torch.float32)


class MultilabelDL(_Multilabel):
    name = "multilabel_dl"
    description = "7-label slice classifier (no-ICH, ICH, 5 subtypes), Dice loss; encoder transferred"
    profiles = {
        "paper": {"batch_size": 64, "augment": dict(PAPER_AUGMENT), "params": {"mlp_dims": [512, 1024, 256, 7]}},
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT), "params": {"mlp_dims": [512, 1024, 256, 7]}},
    }

    def pretext_loss(self, model, batch, cfg, generator):
        from ichbench.losses import multilabel_dice_loss
        labels = batch["labels"]
        self._check_labels(labels)
        return multilabel_dice_loss(model(batch["images"]), labels)


METHODS = [MultilabelCE(), MultilabelDL()]
