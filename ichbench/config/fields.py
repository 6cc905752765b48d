"""The building blocks of the run configuration's sections: pydantic settings, bounds with the
reasons for them, HU windows, the augmentation dict and finite free-form params."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WrapValidator, field_validator

# a typo'd key is an error, NaN and infinities are refused (a comparison with NaN is always false,
# so a range check alone let it through to the optimiser); field docstrings document the schema
SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)

# §2.3.2: translate ±10 %, rotate ±15°, scale 0.9–1.1, horizontal flip 50 %. Fine-tuning always
# uses it; the non-contrastive pretexts use it too ("upon data loading"; the authors' pretraining
# configs), the contrastive ones their own view transforms instead.
PAPER_AUGMENT = {"translate": 0.1, "rotate": 15.0, "scale": (0.9, 1.1), "hflip": 0.5}

ICM_DEPTH = 5   # the ICM U-Nets are §2.5.1's U-Net whatever `model` says

# Upper bounds of every size, count, duration and rate. No real experiment comes near them; each
# stops a typo (an extra zero, 1e24) before it allocates memory or runs for hours:
# `finetune.batch_size=100000000` was accepted and ran a one-epoch fine-tune for 326 s.
MAX_EPOCHS = 10_000         # the paper trains 40-100 epochs
MAX_BATCH = 4096            # the paper's largest batch is 64; 4096 slices of 256² do not fit a GPU
MAX_IMAGE = 2048            # CT slices are 512²; the paper trains at 256²
MAX_STEPS = 1_000_000       # steps per epoch: one pass over RSNA's 752,803 slices at batch 2 is 376,402
MAX_SLICES = 1_000_000      # slices held out: more than RSNA holds (752,803)
MAX_CHANNELS = 256          # the first block's width: the paper's 32 (5.4 M parameters); 256 has 350 M
MAX_DEPTH = 10              # pools 9 times: a 512² image down to 1², a 2048² one to 4²
MAX_LR = 1.0                # Adam moves each weight by about lr a step: the paper's 1e-3
MAX_WEIGHT_DECAY = 1.0      # the paper's L2 is 1e-6
MAX_SEED = 2 ** 32 - 1      # numpy's seed range (torch takes more); seeds are not negative
MAX_SCALE = 4.0             # zoom: the paper's 0.9-1.1; 4 shows a quarter of the image
HU = (-32768, 32767)        # stores hold int16 HU: a window outside it shows nothing the store has


def seed_field() -> Any:
    return Field(0, ge=0, le=MAX_SEED)


class Augment(BaseModel):
    """The §2.3.2 affine augmentation, applied batched on the training device."""
    model_config = SETTINGS
    translate: float = Field(ge=0, lt=1)
    """largest shift, as a fraction of the image size"""
    rotate: float = Field(ge=0, le=180)
    """largest rotation, degrees either way"""
    scale: tuple[Annotated[float, Field(le=MAX_SCALE)], Annotated[float, Field(le=MAX_SCALE)]]
    """zoom range: two numbers 0 < lo <= hi <= 4"""
    hflip: float = Field(ge=0, le=1)
    """probability of a horizontal flip"""

    @field_validator("scale")
    @classmethod
    def _range(cls, scale):
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"must be two numbers 0 < lo <= hi, got {list(scale)}")
        return scale


def _augment_dict(optional: bool):
    def check(value, handler):
        if optional and value == {}:
            return {}   # no augmentation
        handler(value)   # checked as Augment: an error names the key, e.g. finetune.augment.scale.0
        return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(value).items()}
    return check


def _or_empty(schema: dict) -> None:
    schema["anyOf"] = [{"$ref": schema.pop("$ref")}, {"type": "object", "maxProperties": 0}]


AugmentDict = Annotated[Augment, WrapValidator(_augment_dict(False)), PlainSerializer(dict)]
OptionalAugmentDict = Annotated[Augment, WrapValidator(_augment_dict(True)), PlainSerializer(dict)]


def _finite(value, where: str = ""):
    """A method's own setting, whatever its type, holds no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number{f' (at {where})' if where else ''}")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite(v, f"{where}.{i}" if where else str(i))
    return value


Params = dict[str, Annotated[Any, AfterValidator(_finite)]]


def _low_high(window: tuple[float, float]) -> tuple[float, float]:
    if not window[0] < window[1]:
        raise ValueError(f"must be two HU values low < high, got {list(window)}")
    return window


HuValue = Annotated[float, Field(ge=HU[0], le=HU[1])]
Window = Annotated[tuple[HuValue, HuValue], AfterValidator(_low_high)]
