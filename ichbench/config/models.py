"""The run configuration as pydantic models: one per stage, checked by pydantic on construction.

Identity: `RunConfig.to_dict()` and the hashes are computed from the values exactly as they were
given (a method's int stays an int in a dict setting), so cached pretrainings and recorded
leaderboard entries keep their keys. The dict settings (`params`, `augment`) are therefore kept as
dicts; `augment` is checked against `Augment` but not replaced by it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (BaseModel, Field, field_validator, model_validator)

from ichbench.files import sha256_json
from ichbench.names import name_problem

from ichbench.config.fields import (
    AugmentDict, ICM_DEPTH, MAX_BATCH, MAX_CHANNELS, MAX_DEPTH, MAX_EPOCHS, MAX_IMAGE, MAX_LR, MAX_SLICES,
    MAX_STEPS, MAX_WEIGHT_DECAY, OptionalAugmentDict, PAPER_AUGMENT, Params, SETTINGS, Window, _or_empty,
    seed_field,
)


class ModelConfig(BaseModel):
    """The segmentation U-Net (§2.5.1)."""
    model_config = SETTINGS
    base_channels: int = Field(32, ge=1, le=MAX_CHANNELS)
    """first encoder block's width (§2.5.1)"""
    depth: int = Field(5, ge=2, le=MAX_DEPTH)
    """encoder blocks including the bottleneck"""
    encoder_growth: Literal["second", "first"] = "second"
    """where an encoder block's channels grow: on its second conv (§2.5.1, 5.41 M parameters at
    base 32), or "first", ichbench 0.1's block (7.76 M), for reproducing runs made with it"""


class PretrainConfig(BaseModel):
    """The pretext's training (the baselines have none)."""
    model_config = SETTINGS
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=2, le=MAX_BATCH, description="at least 2 (BatchNorm)")
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    lr_decay: float = Field(0.96, gt=0, le=1)
    """ExponentialLR gamma, stepped once per epoch"""
    weight_decay: float = Field(1e-6, ge=0, le=MAX_WEIGHT_DECAY)
    image_size: int = Field(256, ge=1, le=MAX_IMAGE)
    """a multiple of 2^(model.depth - 1)"""
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS)
    """None: one pass over the selected slices"""
    holdout: int = Field(5000, ge=0, le=MAX_SLICES)
    """slices kept out for the validation loss (a tenth on small stores)"""
    seed: int = seed_field()
    compile: bool = False
    """torch.compile on CUDA"""
    params: Params = Field(default_factory=dict)
    """the method's own settings (tau, n_swaps, ...)"""
    augment: OptionalAugmentDict = Field(default_factory=dict, json_schema_extra=_or_empty)
    """the §2.3.2 affine augmentation of pretraining batches; {}: none"""


class FinetuneConfig(BaseModel):
    """The shared fine-tuning recipe (§2.5.3), k-fold on the labeled set."""
    model_config = SETTINGS
    epochs: int = Field(40, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=2, le=MAX_BATCH, description="at least 2 (BatchNorm)")
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    lr_decay: float = Field(0.96, gt=0, le=1)
    weight_decay: float = Field(1e-6, ge=0, le=MAX_WEIGHT_DECAY)
    image_size: int = Field(256, ge=1, le=MAX_IMAGE)
    """a multiple of 2^(model.depth - 1)"""
    empty_weight: float = Field(0.2, ge=0, le=100)   # at 100 the slices with hemorrhage barely count
    """α of eq. 5 on slices without hemorrhage (the paper's 0.2)"""
    nonich_ratio: float = Field(2.0, ge=0, le=1000)  # a store's slices are mostly without: 1000 takes all
    """Mixed: non-ICH slices drawn per ICH slice (the paper's 2)"""
    negatives: Literal["per_epoch", "per_fold"] = "per_epoch"
    """Mixed: when those non-ICH slices are drawn. "per_fold": once per fold, from `seed` and the
    fold's number, so a fold trains on the same ones every epoch, run and machine (the authors'
    scripts; the paper profile); "per_epoch": redrawn every epoch (what ichbench did before the
    setting existed, hence the default). Left out of `to_dict` and the hashes while "per_epoch", so
    the identities of runs made before it existed do not change"""
    augment: AugmentDict = Field(default_factory=lambda: dict(PAPER_AUGMENT))
    """the §2.3.2 affine augmentation of training batches"""
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS)
    seed: int = seed_field()
    threshold: float = Field(0.5, gt=0, lt=1)
    """on the sigmoid output (§2.5.2)"""
    labeled_fraction: float = Field(1.0, gt=0, le=1)
    """label-efficiency runs: share of each fold's training volumes used"""
    compile: bool = False
    head_prior: float | None = Field(None, gt=0, lt=1)
    """initial foreground probability of the output layer (its bias set to logit(prior)) when the
    head is not transferred; None keeps PyTorch's default init (the paper profile)"""
    task: Literal["binary", "subtypes"] = "binary"
    """what the U-Net segments: "binary", the hemorrhage (the paper); "subtypes", each class of the
    store's class map (bhsd, phantom) with a softmax head over background + classes and the
    multi-class Dice loss (docs/methods.md). Left out of `to_dict` and the hashes while it is "binary"."""
    params: Params = Field(default_factory=dict)
    """settings of a method that runs its own fine-tuning (API 2, `Method.finetune_fold`), from its
    `finetune_overrides(profile)`; empty for the shared recipe, and then left out of `to_dict` and
    the hashes, so the identities of runs made before it existed do not change"""


class IcmConfig(BaseModel):
    """The intracranial cavity mask (ICM) of the +ICM methods (§2.3.3).

    `source` picks the mask: "unet" (the paper's: two U-Nets on a tissue and a bone window, their
    masks united, trained by `ichbench icm train` on the brain masks of `dataset`'s store),
    "classical" (threshold-and-fill, `ichbench.preprocess.brain`) or "shipped" (the dataset's own
    brain masks, where it ships them). The rest configures the ICM U-Nets' training."""
    model_config = SETTINGS
    source: Literal["unet", "classical", "shipped"] = "unet"
    dataset: str | None = None
    """whose shipped masks train the U-Nets (None: the resolver's default)"""
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS)
    batch_size_tissue: int = Field(20, ge=2, le=MAX_BATCH)
    batch_size_bone: int = Field(16, ge=2, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    lr_decay: float = Field(0.96, gt=0, le=1)
    weight_decay: float = Field(1e-6, ge=0, le=MAX_WEIGHT_DECAY)
    image_size: int = Field(256, ge=1, le=MAX_IMAGE)
    """a multiple of 16 (the ICM U-Nets pool 4 times)"""
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS)
    base_channels: int = Field(32, ge=1, le=MAX_CHANNELS)
    """the segmentation U-Net of §2.5.1 ("a 2D U-Net", Akkus et al.)"""
    tissue_window: Window = (0.0, 600.0)
    bone_window: Window = (150.0, 650.0)
    augment: OptionalAugmentDict = Field(default_factory=lambda: dict(PAPER_AUGMENT),
                                         json_schema_extra=_or_empty)
    holdout: float = Field(0.2, gt=0, le=0.5)
    """share of the store's volumes held out to measure the ICM Dice"""
    threshold: float = Field(0.5, gt=0, lt=1)
    seed: int = seed_field()

    @field_validator("image_size")
    @classmethod
    def _poolable(cls, size: int) -> int:
        stride = 2 ** (ICM_DEPTH - 1)
        if size % stride:
            raise ValueError(f"must be a multiple of {stride}, got {size}")
        return size

    def identity(self) -> dict:
        """What determines the trained ICM U-Nets (with the training store's content)."""
        d = settings_dict(self)
        for k in ("source", "threshold"):   # how the masks are used, not how they are learned
            d.pop(k)
        return d

    def model_key(self, store_fingerprint: str) -> str:
        """Cache key of the trained ICM: its training settings and the store it learned from."""
        return sha256_json({"icm": self.identity(), "store": store_fingerprint})


class DataConfig(BaseModel):
    """How training reads its store (`ichbench.train.stream`). It changes neither the run nor its
    batches (every path draws the same ones from a seed), so it is left out of the hashes, and out
    of `to_dict` while it holds the defaults (so the run keys of runs made before it existed do not
    change)."""
    model_config = SETTINGS
    stream: bool | None = None
    """stream shards instead of loading the arrays; None: stream when they would not fit the memory
    the worker was given (pretraining only: fine-tuning stores are always loaded)"""
    shuffle_shards: int = Field(16, ge=1, le=100_000)
    """rows a streamed epoch without the node cache gathers at a time, in shards' worth (64 slices
    each); batches are uniform draws from the selection whatever it is"""


MAX_CONTEXT = 8    # neighbours a side: 17 slices span 8.5 cm at 5 mm, more than any bleed
MAX_WINDOWS = 8    # HU windows: the RSNA 2019 winners used 3 (brain, subdural, bone)
PAPER_WINDOW = (-50.0, 150.0)


class InputConfig(BaseModel):
    """What the network sees of a slice (2.5D, issue 24): the slice and `context` neighbours on each
    side — of the same volume, in store order, replicated at the volume's ends — each in every HU
    window of `windows`: (2·context + 1) × len(windows) channels, slice-major (a slice's windows
    are adjacent channels; the centre slice in the first window is channel `context·len(windows)`).
    The defaults, one slice in the paper's [-50, 150] HU window, are left out of `to_dict` and the
    hashes, so the identities of runs made before the section existed do not change."""
    model_config = SETTINGS
    context: int = Field(0, ge=0, le=MAX_CONTEXT)
    """neighbouring slices on each side (0: the slice alone, as in the paper; 1: three slices)"""
    windows: list[Window] = Field(default_factory=lambda: [PAPER_WINDOW], min_length=1, max_length=MAX_WINDOWS)
    """HU windows, each [low, high] mapped to [0, 1]; e.g. brain, subdural, bone:
    [[0, 80], [-20, 180], [-800, 2000]]"""
    pretrain: Literal["same", "2d"] = "same"
    """what a pretext trains on: "same", these channels; "2d", the centre slice in the first window
    (the 2D pretraining, cached under the 2D key), whose first convolution fine-tuning then
    inflates to these channels (replicated and divided by their number, as I3D inflates 2D
    filters: the inflated network gives the 2D one's output on channels that are all equal)"""

    @property
    def channels(self) -> int:
        return (2 * self.context + 1) * len(self.windows)

    @property
    def centre(self) -> int:
        """The channel of the centre slice in the first window."""
        return self.context * len(self.windows)

    def is_default(self) -> bool:
        return self == InputConfig()

    def pretrain_input(self) -> "InputConfig":
        """The input the pretext trains on."""
        return self if self.pretrain == "same" else InputConfig(windows=self.windows[:1])


MAX_DISTANCE_MM = 1000.0   # farther than any two points of a head CT (a 512² slice at 1 mm: 724 mm)


class EvalConfig(BaseModel):
    """How test volumes are scored beyond the paper's metrics (issue 22, docs/score.md).

    Left out of `to_dict` while it holds the defaults, so every identity made before it stays.
    `nsd_mm` changes every volume's NSD, so a value other than 1.0 enters the run key and the
    fine-tuning identity (`identity()`): folds scored at another tolerance are never reused as if
    scored at this one (they train and score again in their own run folder; `ichbench score` scores
    saved predictions at any tolerance without retraining). `hd_cap_mm` changes only summaries,
    which every run recomputes from its rows: it is recorded in `to_dict` but kept out of the run
    key (`orchestrate.plan.run_identity`) and the hashes, so another cap reuses every fold."""
    model_config = SETTINGS
    nsd_mm: float = Field(1.0, ge=0, le=MAX_DISTANCE_MM)
    """normalised surface Dice tolerance in mm (INSTANCE 2022 uses 0.42)"""
    hd_cap_mm: float | None = Field(None, gt=0, le=MAX_DISTANCE_MM)
    """also give HD/HD95 means with every value capped here (an infinite HD counts as the cap);
    None: no capped means"""

    def identity(self) -> dict:
        """What of it determines a fold's per-volume numbers: nsd_mm when not the default."""
        return {} if self.nsd_mm == EvalConfig().nsd_mm else {"nsd_mm": self.nsd_mm}


class RunConfig(BaseModel):
    """Everything one run of a method on a dataset depends on."""
    model_config = SETTINGS
    method: str
    dataset: str
    profile: str
    pretrain_dataset: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain_role: Literal["pretraining", "segmentation"] = "pretraining"
    """which of pretrain_dataset's stores the pretext trains on: its "pretraining" store, or for a
    dataset without one its "segmentation" store (derived by `resolve`, never set by hand)"""
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    init: RunConfig | None = None
    """the resolved config of the method's `init_from`, if any"""
    icm: IcmConfig | None = None
    """only for methods that mask predictions with the ICM"""
    data: DataConfig = Field(default_factory=DataConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    """the network's input channels: neighbouring slices and HU windows (2.5D)"""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """scoring: the NSD tolerance and an optional HD cap for summaries"""

    @field_validator("pretrain_dataset")
    @classmethod
    def _a_name(cls, name: str) -> str:
        problem = name_problem(name)   # free text from --set; it becomes a folder
        if problem:
            raise ValueError(f"{ascii(name)}: {problem}")
        return name

    @model_validator(mode="after")
    def _poolable(self) -> RunConfig:
        stride = 2 ** (self.model.depth - 1)
        for sec in ("pretrain", "finetune"):
            size = getattr(self, sec).image_size
            if size < stride or size % stride:
                raise ValueError(f"{sec}.image_size {size} must be a multiple of {stride} "
                                 f"(the U-Net pools {self.model.depth - 1} times)")
        return self

    def to_dict(self) -> dict:
        out = {"method": self.method, "dataset": self.dataset, "profile": self.profile,
               "pretrain_dataset": self.pretrain_dataset, "pretrain_role": self.pretrain_role,
               "model": settings_dict(self.model), "pretrain": settings_dict(self.pretrain),
               "finetune": finetune_dict(self.finetune), "pretrain_hash": self.hash()}
        if self.icm is not None:
            out["icm"] = settings_dict(self.icm)
        if self.init is not None:
            out["init"] = self.init.to_dict()
        if self.data != DataConfig():
            out["data"] = settings_dict(self.data)
        if not self.input.is_default():
            out["input"] = settings_dict(self.input)
        if self.eval != EvalConfig():
            out["eval"] = settings_dict(self.eval)
        return out

    def pretrain_identity(self) -> dict:
        """What determines a pretraining's result, apart from the store's content."""
        ident = {"method": self.method, "pretrain_dataset": self.pretrain_dataset,
                 "model": settings_dict(self.model), "pretrain": settings_dict(self.pretrain)}
        if self.pretrain_role != "pretraining":
            # only where it is not the usual store, so existing pretraining caches keep their keys
            ident["pretrain_role"] = self.pretrain_role
            # a segmentation store's slice labels are withheld from pretexts that need none
            # (train.engine._labels_withheld); pretrainings cached before that are not reused
            ident["slice_labels"] = "withheld-unless-needed"
        if self.init is not None:
            ident["init"] = self.init.hash()
        pretrain_input = self.input.pretrain_input()
        if not pretrain_input.is_default():   # only then: the identities of 2D pretrainings stay
            ident["input"] = settings_dict(pretrain_input)
        return ident

    def hash(self) -> str:
        """Stable sha256 of the pretraining part: the cache key of a pretrained checkpoint."""
        return sha256_json(self.pretrain_identity())

    def finetune_hash(self, pretrained: str | None = None, icm_model: str | None = None) -> str:
        """Identity of a fine-tuning run: model, fine-tuning settings, what initialised it and, for
        +ICM methods, which intracranial mask its predictions are multiplied by."""
        ident = {"method": self.method, "dataset": self.dataset, "model": settings_dict(self.model),
                 "finetune": finetune_dict(self.finetune), "pretrained": pretrained}
        if self.icm is not None:
            ident["icm"] = {"source": self.icm.source, "threshold": self.icm.threshold, "model": icm_model}
        if not self.input.is_default():
            ident["input"] = settings_dict(self.input)
        if self.eval.identity():   # the NSD its rows hold (EvalConfig)
            ident["eval"] = self.eval.identity()
        return sha256_json(ident)


def settings_dict(section: BaseModel) -> dict:
    """A section's settings as JSON, values as given (tuples become lists)."""
    return _jsonable(dict(section))


def finetune_dict(fc: FinetuneConfig) -> dict:
    """The fine-tuning settings as JSON; `params` only when a method set some, `negatives` only
    when not "per_epoch", `task` only when not "binary" (all later than the identities recorded
    without them)."""
    out = settings_dict(fc)
    if not out["params"]:
        del out["params"]
    if out["negatives"] == "per_epoch":
        del out["negatives"]
    if out["task"] == "binary":
        del out["task"]
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
