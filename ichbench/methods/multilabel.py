"""Multi-label classification pretraining (Spahr et al. 2023 §2.6.2.2), two losses.

The binary classifier's network with seven sigmoid outputs — no-ICH, ICH and the five subtypes, in
the store's label order — trained either with a weighted binary cross-entropy (`multilabel_ce`) or
with the Dice loss between the 7 probabilities and the 7-label vector (`multilabel_dl`). Same
settings as the binary task (batch 64, 50 epochs). Encoder transferred.

The weights of the "weighted binary cross-entropy" (`pretrain.params.pos_weight`):
- "selection_frequency" (the `paper` and `smoke` profiles): the authors' weights. Their script
  (code/scripts/multiclass_classification_pretraining/MultiClassification_UNet2D_scripts.py,
  lines 120-123) computes once, per class, (N − n_pos) / n_pos over the selected RSNA slices and
  passes it as `pos_weight` to `BCEWithLogitsLoss`. Here: over the labels of the pretraining
  selection (the slices trained on and held out, as the script's table holds both), computed once
  when the pretraining starts (`ichbench.losses.selection_pos_weights`: unclipped; a class with
  no positive gets 1, which then weighs nothing), recorded in the pretrained checkpoint and in
  `pretext_setup.json`, which the run logs to MLflow.
- "none": a plain, unweighted BCE.
- "auto": n_negative/n_positive estimated while training (running counts of the training batches,
  clipped at 100, checkpointed with the model), ichbench's option before the authors' weights;
  kept so runs made with it keep their meaning.
- seven numbers: fixed weights in label order.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WrapValidator, field_validator

from ichbench import LABEL_ORDER
from ichbench.config import PAPER_AUGMENT
from ichbench.errors import IchbenchError
from ichbench.methods.base import ANY_INPUT, LabelNeeds, MethodParams, PretextMethod, Widths

N_CLASSES = len(LABEL_ORDER)
# A fixed positive weight: RSNA's rarest subtype, EDH (~0.3 % of slices), has n_negative/n_positive
# ~330; 1000 outweighs that three times ("auto" clips at 100).
MAX_POS_WEIGHT = 1000.0
SELECTION = "selection_frequency"   # (N − n_pos) / n_pos over the pretraining selection, once
NAMED = ("none", "auto", SELECTION)


def _named_or_numbers(value, handler):
    """A name (NAMED), or seven numbers: a list, or the comma-separated text `--set` leaves in a
    str param, checked as the list (an error names the item, e.g. pretrain.params.pos_weight.3)."""
    if value in NAMED:
        return value
    if isinstance(value, str):
        items = [v.strip() for v in value.strip("[]() ").split(",")]
        if not all(_number(v) for v in items):
            raise ValueError(f"must be {_names()} or {N_CLASSES} numbers ({', '.join(LABEL_ORDER)}), "
                             f"got {value!r}")
        value = items
    handler(value)
    return value


def _names() -> str:
    return ", ".join(repr(n) for n in NAMED)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _or_named(schema: dict) -> None:
    array = {k: schema.pop(k) for k in ("type", "items", "minItems", "maxItems")}
    schema["anyOf"] = [{"enum": list(NAMED)}, array]


PosWeight = Annotated[list[Annotated[float, Field(gt=0, le=MAX_POS_WEIGHT)]],
                      Field(min_length=N_CLASSES, max_length=N_CLASSES, json_schema_extra=_or_named),
                      WrapValidator(_named_or_numbers)]


class MultilabelParams(MethodParams):
    mlp_dims: Widths
    """the MLP on the pooled bottleneck, input first (512 at the paper's U-Net width; the others
    scale with a narrower one), ending in the 7 labels"""

    @field_validator("mlp_dims")
    @classmethod
    def _seven_labels(cls, dims: list[int]) -> list[int]:
        if dims[-1] != N_CLASSES:
            raise ValueError(f"must end in {N_CLASSES} outputs ({', '.join(LABEL_ORDER)}), got {dims}")
        return dims


class MultilabelCEParams(MultilabelParams):
    pos_weight: PosWeight
    """weights of the positives: "selection_frequency" (the paper's: (N − n_pos) / n_pos per class
    over the pretraining selection, computed once), "none", "auto" (a running n_neg/n_pos, clipped
    at 100) or 7 numbers in label order"""


class _Multilabel(PretextMethod):
    label_needs = LabelNeeds(segmentation=True, multilabel=True)
    transfers = ("encoder",)
    paper_section = "§2.6.2.2"
    pretrain_params_model = MultilabelParams
    finetune_params_model = MethodParams   # the shared recipe: no params
    inputs = ANY_INPUT   # the labels are the centre slice's

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
    pretrain_params_model = MultilabelCEParams
    description = "7-label slice classifier (no-ICH, ICH, 5 subtypes), weighted BCE; encoder transferred"
    profiles = {
        # the authors' weights (see the module docstring for the options); smoke trains the same
        # loss on the phantom's pretraining selection
        "paper": {"batch_size": 64, "augment": dict(PAPER_AUGMENT),
                  "params": {"mlp_dims": [512, 1024, 256, 7], "pos_weight": SELECTION}},
        "smoke": {"batch_size": 8, "augment": dict(PAPER_AUGMENT),
                  "params": {"mlp_dims": [512, 1024, 256, 7], "pos_weight": SELECTION}},
    }

    def pretext_setup(self, model, labels, cfg) -> dict:
        """"selection_frequency": the seven weights from the selection's labels, once."""
        if self.params(cfg)["pos_weight"] != SELECTION:
            return {}
        from ichbench.losses import selection_pos_weights
        weights, n_pos, n_known = selection_pos_weights(labels)
        model.use_pos_weight(weights)
        return {"pos_weight": {
            "source": f"{SELECTION}: (N - n_pos) / n_pos per class over the pretraining selection's "
                      "slice labels, computed once; a class with no positive gets 1",
            "classes": list(LABEL_ORDER), "n_slices": int(len(labels)),
            "n_known": [int(v) for v in n_known], "n_positive": [int(v) for v in n_pos],
            "values": [float(v) for v in weights]}}

    def pretext_loss(self, model, batch, cfg, generator):
        from ichbench.losses import weighted_bce
        labels = batch["labels"]
        self._check_labels(labels)
        pw = self.params(cfg)["pos_weight"]
        if pw == "none":
            weights = None
        elif pw == SELECTION:
            weights = model.fixed_pos_weight
            if weights is None:
                raise IchbenchError(f"{self.name}: pos_weight {SELECTION!r} is computed from the pretraining "
                                    "selection's labels by pretext_setup, which was not called before this batch")
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
            raise ValueError(f"multilabel_ce: pos_weight must be {_names()} or {N_CLASSES} positive numbers "
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
