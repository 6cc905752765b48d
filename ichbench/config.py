"""Typed run configuration: a named profile, then the method's own pretext settings, then
`--set key=value` overrides.

    cfg = resolve("unet_mixed", "hssayeni", "paper", ["finetune.epochs=3"])   # ichbench.resolve
    cfg.to_dict()        # everything, JSON-ready: printed by --dry-run, saved with every result
    cfg.hash()           # identity of the pretraining (method, model, pretrain [, init_from's])

Overrides are dotted keys into the nested dataclasses (and into their dict fields), and values are
parsed with the type of the field they replace, so `--set finetune.augment.scale=0.8,1.2` becomes a
tuple of floats and a typo is an error listing the valid keys instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ichbench.errors import IchbenchError, UnknownNameError
from ichbench.files import sha256_json
from ichbench.names import name_problem

PROFILES = ("paper", "smoke")

# §2.3.2: translate ±10 %, rotate ±15°, scale 0.9–1.1, horizontal flip 50 %. Fine-tuning always
# uses it; the non-contrastive pretexts use it too ("upon data loading"; the authors' pretraining
# configs), the contrastive ones their own view transforms instead.
PAPER_AUGMENT = {"translate": 0.1, "rotate": 15.0, "scale": (0.9, 1.1), "hflip": 0.5}


@dataclass
class ModelConfig:
    base_channels: int = 32   # first encoder block's width (§2.5.1)
    depth: int = 5            # encoder blocks including the bottleneck
    # §2.5.1: an encoder block's channels grow on its second conv (5.41 M parameters at base 32);
    # "first" is ichbench 0.1's block (7.76 M), for reproducing runs made with it
    encoder_growth: str = "second"


@dataclass
class PretrainConfig:
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 0.96    # ExponentialLR gamma, stepped once per epoch
    weight_decay: float = 1e-6
    image_size: int = 256
    steps_per_epoch: int | None = None   # None: one pass over the selected slices
    holdout: int = 5000       # slices kept out for the validation loss (a tenth on small stores)
    seed: int = 0
    compile: bool = False     # torch.compile on CUDA
    params: dict = field(default_factory=dict)   # method-specific (tau, n_swaps, ...)
    # the §2.3.2 affine augmentation of pretraining batches (keys as PAPER_AUGMENT); empty: none
    augment: dict = field(default_factory=dict)


@dataclass
class FinetuneConfig:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.96
    weight_decay: float = 1e-6
    image_size: int = 256
    empty_weight: float = 0.2   # α of eq. 5 on slices without hemorrhage
    nonich_ratio: float = 2.0   # Mixed: non-ICH slices drawn per ICH slice each epoch
    augment: dict = field(default_factory=lambda: dict(PAPER_AUGMENT))
    steps_per_epoch: int | None = None
    seed: int = 0
    threshold: float = 0.5      # on the sigmoid output (§2.5.2)
    labeled_fraction: float = 1.0  # label-efficiency runs: share of each fold's training volumes used
    compile: bool = False
    # Initial foreground probability of the output layer (its bias set to logit(prior)) when the
    # head is not transferred; None keeps PyTorch's default init (the paper profile). See the
    # smoke profile for why.
    head_prior: float | None = None
    # Settings of a method that runs its own fine-tuning (API 2, `Method.finetune_fold`), merged
    # from its `finetune_overrides(profile)`; empty for the shared recipe, and then left out of
    # `to_dict` and the hashes, so the identities of runs made before it existed do not change.
    params: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """How training reads its store (`ichbench.train.stream`). It changes the order batches are
    drawn in, not the run, so it is left out of the hashes, and out of `to_dict` while it holds
    the defaults (so the run keys of runs made before it existed do not change)."""
    stream: bool | None = None   # None: the engine streams when the arrays would not fit its memory
    shuffle_shards: int = 16     # shuffle buffer of a streamed epoch, in shards (64 slices each)


ICM_SOURCES = ("unet", "classical", "shipped")


@dataclass
class IcmConfig:
    """The intracranial cavity mask (ICM) of the +ICM methods (§2.3.3).

    `source` picks the mask: "unet" (the paper's: two U-Nets on a tissue and a bone window, their
    masks united, trained by `ichbench icm train` on the brain masks of `dataset`'s store),
    "classical" (threshold-and-fill, `ichbench.preprocess.brain`) or "shipped" (the dataset's own
    brain masks, where it ships them). The rest configures the ICM U-Nets' training."""
    source: str = "unet"
    dataset: str | None = None    # whose shipped masks train the U-Nets (None: see `default_icm_dataset`)
    epochs: int = 50
    batch_size_tissue: int = 20
    batch_size_bone: int = 16
    lr: float = 1e-3
    lr_decay: float = 0.96
    weight_decay: float = 1e-6
    image_size: int = 256
    steps_per_epoch: int | None = None
    base_channels: int = 32       # the segmentation U-Net of §2.5.1 ("a 2D U-Net", Akkus et al.)
    tissue_window: tuple[float, float] = (0.0, 600.0)
    bone_window: tuple[float, float] = (150.0, 650.0)
    augment: dict = field(default_factory=lambda: dict(PAPER_AUGMENT))
    holdout: float = 0.2          # share of the store's volumes held out to measure the ICM Dice
    threshold: float = 0.5
    seed: int = 0

    def identity(self) -> dict:
        """What determines the trained ICM U-Nets (with the training store's content)."""
        d = _jsonable(dataclasses.asdict(self))
        for k in ("source", "threshold"):   # how the masks are used, not how they are learned
            d.pop(k)
        return d

    def model_key(self, store_fingerprint: str) -> str:
        """Cache key of the trained ICM: its training settings and the store it learned from."""
        return _sha({"icm": self.identity(), "store": store_fingerprint})


@dataclass
class RunConfig:
    method: str
    dataset: str
    profile: str
    pretrain_dataset: str
    model: ModelConfig = field(default_factory=ModelConfig)
    # which of pretrain_dataset's stores the pretext trains on: its "pretraining" store, or for a
    # dataset without one its "segmentation" store (derived by `resolve`, never set by hand)
    pretrain_role: str = "pretraining"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    init: "RunConfig | None" = None   # the resolved config of the method's `init_from`, if any
    icm: IcmConfig | None = None      # only for methods that mask predictions with the ICM
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        out = {"method": self.method, "dataset": self.dataset, "profile": self.profile,
               "pretrain_dataset": self.pretrain_dataset, "pretrain_role": self.pretrain_role,
               "model": _jsonable(dataclasses.asdict(self.model)),
               "pretrain": _jsonable(dataclasses.asdict(self.pretrain)),
               "finetune": finetune_dict(self.finetune),
               "pretrain_hash": self.hash()}
        if self.icm is not None:
            out["icm"] = _jsonable(dataclasses.asdict(self.icm))
        if self.init is not None:
            out["init"] = self.init.to_dict()
        if self.data != DataConfig():
            out["data"] = _jsonable(dataclasses.asdict(self.data))
        return out

    def pretrain_identity(self) -> dict:
        """What determines a pretraining's result, apart from the store's content."""
        ident = {"method": self.method, "pretrain_dataset": self.pretrain_dataset,
                 "model": _jsonable(dataclasses.asdict(self.model)),
                 "pretrain": _jsonable(dataclasses.asdict(self.pretrain))}
        if self.pretrain_role != "pretraining":
            # only where it is not the usual store, so existing pretraining caches keep their keys
            ident["pretrain_role"] = self.pretrain_role
        if self.init is not None:
            ident["init"] = self.init.hash()
        return ident

    def hash(self) -> str:
        """Stable sha256 of the pretraining part: the cache key of a pretrained checkpoint."""
        return _sha(self.pretrain_identity())

    def finetune_hash(self, pretrained: str | None = None, icm_model: str | None = None) -> str:
        """Identity of a fine-tuning run: model, fine-tuning settings, what initialised it and, for
        +ICM methods, which intracranial mask its predictions are multiplied by."""
        ident = {"method": self.method, "dataset": self.dataset,
                 "model": _jsonable(dataclasses.asdict(self.model)),
                 "finetune": finetune_dict(self.finetune),
                 "pretrained": pretrained}
        if self.icm is not None:
            ident["icm"] = {"source": self.icm.source, "threshold": self.icm.threshold, "model": icm_model}
        return _sha(ident)


def finetune_dict(fc: FinetuneConfig) -> dict:
    """The fine-tuning settings as JSON; `params` only when a method set some."""
    out = _jsonable(dataclasses.asdict(fc))
    if not out["params"]:
        del out["params"]
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


_sha = sha256_json


# -- profiles ---------------------------------------------------------------------------------------

# §2.5.3: Hssayeni 100 epochs, batch 16; Seg-CQ500 40 epochs, batch 32 (all fine-tuning alike).
PAPER_FINETUNE = {"hssayeni": {"epochs": 100, "batch_size": 16},
                  "segcq500": {"epochs": 40, "batch_size": 32}}


def profile_settings(profile: str, dataset: str) -> dict:
    """The profile's values, as a nested dict of overrides on the dataclass defaults (which are the
    paper's shared settings: Adam 1e-3, decay 0.96 per epoch, L2 1e-6, 256², pretexts 50 epochs)."""
    if profile == "paper":
        # Datasets the paper did not use (the phantom, third-party ones) get Seg-CQ500's recipe.
        return {"finetune": dict(PAPER_FINETUNE.get(dataset, PAPER_FINETUNE["segcq500"]))}
    if profile == "smoke":
        # Tiny: 64², an 8-channel U-Net and a few hundred steps, so any method runs end to end on
        # two CPU cores in a minute or two. Depth stays 5 (the parts a method transfers must exist).
        # head_prior: the paper's recipe has thousands of steps; from the default init (sigmoid
        # ~0.5 everywhere) the Dice loss spends most of a few hundred steps suppressing the
        # background, whose gradient under eq. 4 is tiny, and the phantom's held-out Dice stays
        # near 0. Starting the output at 1 % foreground (RetinaNet's prior init) lets 384 steps
        # reach a mean volume Dice of 0.64-0.84 on the 20 held-out volumes of a 60-volume phantom
        # (tests/test_finetune_smoke.py; the spread is seeds, threads and CPU kernels).
        return {"model": {"base_channels": 8},
                "pretrain": {"epochs": 2, "batch_size": 16, "image_size": 64, "steps_per_epoch": 8,
                             "holdout": 32},
                "finetune": {"epochs": 16, "batch_size": 16, "image_size": 64, "steps_per_epoch": 24,
                             "head_prior": 0.01},
                # the classical mask needs no training; `--set icm.source=unet` trains the ICM
                # U-Nets at this size first: 4 x 24 steps per window at lr 3e-3 reach a held-out
                # union Dice of 0.999 on the phantom (1e-3 reaches 0.82 in that budget)
                "icm": {"source": "classical", "epochs": 4, "image_size": 64, "base_channels": 8,
                        "steps_per_epoch": 24, "batch_size_tissue": 16, "batch_size_bone": 16, "lr": 3e-3}}
    raise UnknownNameError("profile", profile, PROFILES)


# -- overrides --------------------------------------------------------------------------------------

_SECTIONS = {"model": ModelConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig, "icm": IcmConfig,
             "data": DataConfig}
_TOP = ("pretrain_dataset",)


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def _split_seq(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") or text.startswith("("):
        text = text[1:-1]
    return [p.strip() for p in text.split(",") if p.strip()]


def _parse_scalar(text: str, tp) -> Any:
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    if tp is int:
        return int(text)
    if tp is float:
        value = float(text)
        if not math.isfinite(value):   # nan passed every range check and died in the optimiser
            raise ValueError(f"expected a finite number, got {text!r}")
        return value
    if tp is str:
        return text
    raise ValueError(f"cannot parse a value of type {tp}")


def parse_value(text: str, tp) -> Any:
    """Parse `text` as the annotated type `tp` (int, float, bool, str, tuple/list of those,
    optional versions of them, dict as JSON)."""
    tp, optional = _strip_optional(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list) or tp in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        parts = _split_seq(text)
        if origin is tuple and args and Ellipsis not in typing.get_args(tp) and len(args) != len(parts):
            raise ValueError(f"expected {len(args)} comma-separated values, got {len(parts)}")
        elem = [args[min(i, len(args) - 1)] if args else _guess_type(p) for i, p in enumerate(parts)]
        vals = [_parse_scalar(p, t) for p, t in zip(parts, elem)]
        return tuple(vals) if (origin is tuple or tp is tuple) else vals
    if tp is dict or origin is dict:
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return obj
    return _parse_scalar(text, tp)


def _guess_type(text: str):
    """Type of a value with no annotation (a new key in `params`): int, float, bool or str."""
    for tp in (int, float):
        try:
            tp(text)
            return tp
        except ValueError:
            pass
    return bool if text.strip().lower() in ("true", "false") else str


def _type_of_value(value: Any):
    """Annotation-like type for a value already in a dict field (so `scale` stays a float pair)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, (tuple, list)):
        inner = [_type_of_value(v) for v in value]
        inner = [float if float in inner else (inner[0] if inner else str)] * max(len(value), 1)
        return tuple[tuple(inner)] if isinstance(value, tuple) else list[inner[0]]
    if isinstance(value, dict):
        return dict
    return str


def _valid_keys(cfg: RunConfig) -> list[str]:
    keys = list(_TOP)
    for sec, cls in _SECTIONS.items():
        obj = getattr(cfg, sec)
        if obj is None:
            continue
        for f in dataclasses.fields(cls):
            val = getattr(obj, f.name)
            if isinstance(val, dict):
                keys += [f"{sec}.{f.name}.{k}" for k in val] or [f"{sec}.{f.name}.<key>"]
            else:
                keys.append(f"{sec}.{f.name}")
    return keys


def _shown(text: str, quote: bool = True, limit: int = 100) -> str:
    """A value as an error message shows it: a 5,000-digit number is not echoed whole."""
    text = text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text):,} characters)"
    return repr(text) if quote else text


def split_assignment(item: str, flag: str, value_name: str = "value") -> tuple[str, str]:
    """`key=value` from a repeatable command-line option (--set, --option, --space), stripped;
    IchbenchError naming the option otherwise."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise IchbenchError(f"{flag} expects key={value_name}, got {_shown(item)}")
    return key.strip(), text.strip()


def apply_override(cfg: RunConfig, item: str) -> None:
    """Apply one `key=value` to cfg in place; IchbenchError on a bad key or value."""
    key, text = split_assignment(item, "--set")
    parts = key.split(".")

    def unknown() -> IchbenchError:
        return IchbenchError(f"unknown config key {key!r}; valid keys: {', '.join(_valid_keys(cfg))}")

    try:
        if len(parts) == 1 and parts[0] in _TOP:
            setattr(cfg, parts[0], text)
            return
        if parts[0] not in _SECTIONS or len(parts) < 2:
            raise unknown()
        cls = _SECTIONS[parts[0]]
        obj = getattr(cfg, parts[0])
        if obj is None:
            raise IchbenchError(f"--set {item}: method {cfg.method!r} does not mask its predictions with the "
                                f"intracranial cavity; `{parts[0]}.*` settings apply to the +ICM methods")
        types_ = _field_types(cls)
        name = parts[1]
        if name not in types_:
            raise unknown()
        current = getattr(obj, name)
        if len(parts) == 2:
            setattr(obj, name, parse_value(text, types_[name]))
            return
        if not isinstance(current, dict) or len(parts) != 3:
            raise unknown()
        sub = parts[2]
        if sub not in current:
            # A method declares its params (and the augmentation its keys); anything else is a typo.
            raise unknown()
        current[sub] = parse_value(text, _type_of_value(current[sub]))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        problem = _shown(str(exc), quote=False)
        raise IchbenchError(f"--set {_shown(item, quote=False)}: {problem}") from None


def merge_settings(obj, values: dict, where: str) -> None:
    """Apply a nested dict of settings onto a dataclass (dict fields are merged key by key)."""
    for k, v in values.items():
        if not hasattr(obj, k):
            raise IchbenchError(f"{where}: unknown setting {k!r}")
        cur = getattr(obj, k)
        if isinstance(cur, dict) and isinstance(v, dict):
            cur.update(copy.deepcopy(v))
        elif dataclasses.is_dataclass(cur) and isinstance(v, dict):
            merge_settings(cur, v, f"{where}.{k}")
        else:
            setattr(obj, k, copy.deepcopy(v))


def _non_finite(obj, where: str) -> str | None:
    """The first setting holding NaN or an infinity (a comparison with NaN is always false, so
    range checks alone let it through)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        items = ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def validate(cfg: RunConfig) -> None:
    bad = _non_finite(cfg.to_dict(), "")
    if bad:
        raise IchbenchError(f"{bad} must be a finite number")
    problem = name_problem(cfg.pretrain_dataset)   # free text from --set; it becomes a folder
    if problem:
        raise IchbenchError(f"pretrain_dataset {ascii(cfg.pretrain_dataset)}: {problem}")
    m = cfg.model
    if m.base_channels < 1 or m.depth < 2:
        raise IchbenchError(f"model: base_channels must be >= 1 and depth >= 2, got {m.base_channels}, {m.depth}")
    if m.encoder_growth not in ("second", "first"):
        raise IchbenchError(f"model.encoder_growth must be 'second' (the paper's block) or 'first', got {m.encoder_growth!r}")
    stride = 2 ** (m.depth - 1)
    for sec in ("pretrain", "finetune"):
        c = getattr(cfg, sec)
        if c.epochs < 1 or c.batch_size < 2:
            raise IchbenchError(f"{sec}: epochs must be >= 1 and batch_size >= 2 (BatchNorm), "
                                f"got {c.epochs}, {c.batch_size}")
        if c.image_size < stride or c.image_size % stride:
            raise IchbenchError(f"{sec}.image_size {c.image_size} must be a multiple of {stride} "
                                f"(the U-Net pools {m.depth - 1} times)")
        if c.steps_per_epoch is not None and c.steps_per_epoch < 1:
            raise IchbenchError(f"{sec}.steps_per_epoch must be >= 1 or none")
        if c.lr <= 0 or not 0 < c.lr_decay <= 1 or c.weight_decay < 0:
            raise IchbenchError(f"{sec}: need lr > 0, 0 < lr_decay <= 1, weight_decay >= 0")
    f = cfg.finetune
    if not 0 <= f.empty_weight or f.nonich_ratio < 0 or not 0 < f.threshold < 1:
        raise IchbenchError("finetune: need empty_weight >= 0, nonich_ratio >= 0, 0 < threshold < 1")
    if f.head_prior is not None and not 0 < f.head_prior < 1:
        raise IchbenchError(f"finetune.head_prior must be in (0, 1) or none, got {f.head_prior}")
    if not 0 < f.labeled_fraction <= 1:
        raise IchbenchError(f"finetune.labeled_fraction must be in (0, 1], got {f.labeled_fraction}")
    if cfg.data.shuffle_shards < 1:
        raise IchbenchError(f"data.shuffle_shards must be >= 1, got {cfg.data.shuffle_shards}")
    _validate_augment("finetune", f.augment, required=True)
    _validate_augment("pretrain", cfg.pretrain.augment, required=False)
    if cfg.icm is not None:
        validate_icm(cfg.icm)


ICM_DEPTH = 5   # the ICM U-Nets are §2.5.1's U-Net whatever `model` says


def validate_icm(c: IcmConfig) -> None:
    bad = _non_finite(_jsonable(dataclasses.asdict(c)), "icm")
    if bad:
        raise IchbenchError(f"{bad} must be a finite number")
    if c.source not in ICM_SOURCES:
        raise IchbenchError(f"icm.source must be one of {', '.join(ICM_SOURCES)}, got {c.source!r}")
    if c.epochs < 1 or min(c.batch_size_tissue, c.batch_size_bone) < 2 or c.base_channels < 1:
        raise IchbenchError("icm: need epochs >= 1, batch sizes >= 2 (BatchNorm), base_channels >= 1")
    stride = 2 ** (ICM_DEPTH - 1)
    if c.image_size < stride or c.image_size % stride:
        raise IchbenchError(f"icm.image_size {c.image_size} must be a multiple of {stride}")
    if c.steps_per_epoch is not None and c.steps_per_epoch < 1:
        raise IchbenchError("icm.steps_per_epoch must be >= 1 or none")
    if c.lr <= 0 or not 0 < c.lr_decay <= 1 or c.weight_decay < 0:
        raise IchbenchError("icm: need lr > 0, 0 < lr_decay <= 1, weight_decay >= 0")
    for name in ("tissue_window", "bone_window"):
        lo, hi = getattr(c, name)
        if not lo < hi:
            raise IchbenchError(f"icm.{name} must be two HU values low < high, got {getattr(c, name)}")
    if not 0 < c.holdout <= 0.5 or not 0 < c.threshold < 1:
        raise IchbenchError("icm: need 0 < holdout <= 0.5 and 0 < threshold < 1")
    _validate_augment("icm", c.augment, required=False)


def _validate_augment(sec: str, aug: dict, required: bool) -> None:
    """All four §2.3.2 keys with values in range (pretraining may have none: no augmentation)."""
    if not aug and not required:
        return
    unknown, missing = set(aug) - set(PAPER_AUGMENT), set(PAPER_AUGMENT) - set(aug)
    if unknown or missing:
        raise IchbenchError(f"{sec}.augment: needs exactly the keys {', '.join(PAPER_AUGMENT)}"
                            + (f"; unknown {sorted(unknown)}" if unknown else "")
                            + (f"; missing {sorted(missing)}" if missing else ""))
    try:
        lo, hi = (float(v) for v in aug["scale"])
        ok = (0 <= float(aug["translate"]) < 1 and 0 <= float(aug["rotate"]) <= 180
              and 0 < lo <= hi and 0 <= float(aug["hflip"]) <= 1)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise IchbenchError(f"{sec}.augment: need 0 <= translate < 1, 0 <= rotate <= 180, "
                            f"scale = two numbers 0 < lo <= hi, 0 <= hflip <= 1; got {aug}")


def resolve_icm(dataset: str, profile: str = "paper", overrides=()) -> IcmConfig:
    """The ICM settings of `profile` for training on `dataset`'s brain masks (`ichbench icm
    train`), with `icm.*` overrides."""
    holder = RunConfig(method="(icm)", dataset=dataset, profile=profile, pretrain_dataset="", icm=IcmConfig())
    merge_settings(holder.icm, profile_settings(profile, dataset).get("icm", {}), f"profile {profile!r}")
    for item in overrides or ():
        if not item.strip().startswith("icm."):
            raise IchbenchError(f"--set {item}: only icm.* settings apply to the ICM U-Nets")
        apply_override(holder, item)
    holder.icm.dataset = dataset
    validate_icm(holder.icm)
    return holder.icm
