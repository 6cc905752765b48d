"""The method plugin surface.

A method is registered through the `register_methods` hook. It declares its label needs (the
paper's Table 2), which U-Net parts its pretraining hands over, its hyperparameters per profile,
and — for pretext methods — how to build the pretext model around a U-Net and compute its loss on
a batch. The engine (`ichbench.train`) owns loops, optimisers, checkpoints and devices; a method
only says what is specific to it. A method that wraps a whole framework (plugin API 2) replaces
the fine-tuning of a fold instead (`finetune_fold`): it gets the fold's volumes and returns its
predictions, which the engine scores exactly as it scores its own.

A method may declare the schema of its own settings (`pretrain.params`, `finetune.params`) as a
pydantic model, `pretrain_params_model` / `finetune_params_model`, usually a `MethodParams` with
bounded `Field`s. `resolve` then checks the params against it (`check_params`), so
`--set pretrain.params.n_swaps=1000000000` is one line on a dry run, not a failure (or hours of
training) deep inside a run. The params stay the dicts as given, never the model's values: the
config hashes, the cache keys of pretrainings and leaderboard entries, do not change. A method
that declares none (None) keeps free-form params.

A method declares the 2.5D inputs (`input.*`: neighbouring slices, HU windows) its own code can
take, `inputs`; a method that says nothing takes the paper's one slice in one window, and a run
asking for more is refused before training (`check_inputs`). What its own code sees: the pretext's
batches (the pretraining input, `InputConfig.pretrain_input`) and, for a method that fine-tunes by
itself, the fold. The shared fine-tuning recipe takes any input, so a baseline needs no declaration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ichbench.config import json_schema_of
from ichbench.config.models import MAX_CONTEXT, MAX_WINDOWS
from ichbench.config.problems import validated
from ichbench.errors import IchbenchError, UnknownNameError

STAGES = ("pretrain", "finetune")

# Bounds shared by the built-in heads. No head in the literature comes near them; each stops a typo
# (an extra zero) before it allocates GBs: one 16384x16384 layer is 268 M weights (1 GB, 3 more for
# Adam); the widest head here is VICReg's 8192-wide expander (plugins/ichbench-vicreg).
MAX_WIDTH = 16384
MAX_LAYERS = 16      # widths of a head, input first: the paper's are 3 or 4


@dataclass(frozen=True)
class LabelNeeds:
    """What labels a method consumes (the paper's Table 2)."""
    segmentation: bool = True      # voxel masks for fine-tuning (every method)
    unlabeled: bool = False        # pretraining on images alone
    binary: bool = False           # slice-level ICH yes/no
    multilabel: bool = False       # slice-level ICH + five subtypes

    def describe(self) -> list[str]:
        return [name for name in ("segmentation", "unlabeled", "binary", "multilabel") if getattr(self, name)]


@dataclass(frozen=True)
class InputSupport:
    """The 2.5D inputs a method's own code takes (docs/plugins.md, "Inputs")."""
    max_context: int = 0      # neighbouring slices on each side (`input.context`)
    max_windows: int = 1      # HU windows (`input.windows`)


ANY_INPUT = InputSupport(MAX_CONTEXT, MAX_WINDOWS)


class MethodParams(BaseModel):
    """Base of a method's params schema: a typo'd key is refused, NaN and infinities too, and the
    field docstrings are the settings' descriptions (as in the run config's own models)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Widths = Annotated[list[Width], Field(min_length=2, max_length=MAX_LAYERS)]   # a head's, input first


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
    # schemas of `pretrain.params` and `finetune.params` (pydantic models, see the module
    # docstring); None: free-form, as before they existed
    pretrain_params_model: type[BaseModel] | None = None
    finetune_params_model: type[BaseModel] | None = None
    inputs: InputSupport = InputSupport()   # the paper's input only, unless the method says more
    # the `finetune.task` values its own fine-tuning (`finetune_fold`) takes; the shared recipe takes both
    tasks: tuple[str, ...] = ("binary",)

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
        """Loss on one batch. batch: `images` (B,C,H,W) windowed to [0,1] on the device (C = 1 but
        for 2.5D inputs, `InputConfig.channels`), `centre` the channel of the centre slice in the
        first window, `labels` (B,7) uint8, the centre slice's. `generator` is a torch.Generator on
        the device for the method's randomness."""
        raise NotImplementedError

    def pretext_setup(self, model, labels, cfg) -> dict:
        """Called once before a pretraining's first batch (again when it resumes), with the model
        `build_pretext` returned and the slice labels (N, 7) uint8 (numpy) of the pretraining
        selection: every slice it trains on or holds out. What the pretext derives from them once
        (not a running estimate), e.g. class weights, it keeps on `model` (a non-persistent buffer
        follows the model to its device) and returns as a JSON-able dict; the engine records it in
        the pretrained checkpoint (`pretext_setup`) and in `pretext_setup.json` beside it, which the
        driver logs to the pretraining's MLflow run. Default: nothing to derive ({})."""
        return {}

    # -- fine-tuning (plugin API 2) ----------------------------------------------------------------
    def finetune_overrides(self, profile: str) -> dict:
        """FinetuneConfig settings that differ from the profile's, per profile (keys of
        FinetuneConfig; the method's own settings under `params`). Default: none."""
        return {}

    def finetune_fold(self, fold):
        """Replace ichbench's fine-tuning of one fold: train on `fold` (an `ichbench.api.Fold`:
        its training volumes with masks, its test volumes without, the resolved config, a folder
        to work in) and return an `ichbench.api.FoldOutput` holding a binary mask for every test
        volume (a label map of class ids 0..C in a subtypes fold, `fold.classes`; only for a
        method whose `tasks` name "subtypes"). The engine scores them as it scores the shared
        recipe's. Not overridden: the shared recipe of the paper trains the fold."""
        raise NotImplementedError

    @property
    def owns_finetuning(self) -> bool:
        """True when the method overrides `finetune_fold` (its own training loop)."""
        return type(self).finetune_fold is not Method.finetune_fold

    # -- the method's own settings ----------------------------------------------------------------
    def stage_params(self, stage: str, cfg) -> dict:
        """The params the `stage` ("pretrain" or "finetune") of the run config `cfg` runs with."""
        return dict(getattr(cfg, stage).params)

    def check_params(self, cfg) -> None:
        """IchbenchError in one line when a stage's params break the method's declared schema."""
        for stage in STAGES:
            model = getattr(self, f"{stage}_params_model")
            if model is not None:
                check_params(model, self.stage_params(stage, cfg), f"{stage}.params", self.name)

    def check_inputs(self, cfg) -> None:
        """IchbenchError in one line when the run's input (`input.*`) is more than the method's own
        code takes (`inputs`): the pretext's batches, and the fold of a method that fine-tunes by
        itself. The shared recipe takes any input."""
        seen = ([("pretraining", cfg.input.pretrain_input())] if self.has_pretext else []) + \
            ([("fine-tuning", cfg.input)] if self.owns_finetuning else [])
        for stage, inp in seen:
            if inp.context > self.inputs.max_context or len(inp.windows) > self.inputs.max_windows:
                raise IchbenchError(
                    f"method {self.name!r} takes input.context <= {self.inputs.max_context} and at most "
                    f"{self.inputs.max_windows} window(s) in its {stage}, got context {inp.context} and "
                    f"{len(inp.windows)} window(s) (docs/plugins.md, \"Inputs\")")

    def params_schema(self) -> dict:
        """The declared params schemas by stage, as JSON Schema (None: free-form)."""
        return {stage: _schema(getattr(self, f"{stage}_params_model")) for stage in STAGES}

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "paper_section": self.paper_section,
                "label_needs": self.label_needs.describe(), "transfers": list(self.transfers),
                "init_from": self.init_from, "icm": self.icm, "sampling": self.sampling,
                "inputs": {"max_context": self.inputs.max_context, "max_windows": self.inputs.max_windows},
                # the shared recipe fine-tunes every method in both tasks; an own loop in what it declares
                "tasks": list(self.tasks) if self.owns_finetuning else ["binary", "subtypes"],
                "params": self.params_schema()}


def check_params(model: type[BaseModel], params: dict, where: str, method: str) -> None:
    """Validate `params` against `model` (the values are left as they are: validate, don't
    replace); a key the model lacks is refused naming the ones it has, whatever its config says."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise IchbenchError(f"method {method!r}: its {where} schema must be a pydantic model "
                            f"(ichbench.api.MethodParams), got {model!r}")
    known = list(model.model_fields)
    unknown = [k for k in params if k not in known]
    if unknown:
        takes = f"its settings: {', '.join(known)}" if known else "it takes none"
        raise IchbenchError(f"{where}.{unknown[0]} is not a setting of method {method!r}; {takes}")
    validated(model, params, f"{where}.")


def _schema(model: type[BaseModel] | None) -> dict | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None   # free-form (or not a model, which resolving the method's config says)
    if not model.model_fields:
        return {"type": "object", "maxProperties": 0}   # none: the stage reads no params
    return json_schema_of(model)


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
        return {**self.profiles.get("paper", {}).get("params", {}), **(getattr(cfg, "params", None) or {})}

    def stage_params(self, stage: str, cfg) -> dict:
        # what the pretext reads: a key the config lacks falls back to the paper profile's
        return self.params(cfg.pretrain) if stage == "pretrain" else super().stage_params(stage, cfg)
