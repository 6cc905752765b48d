"""Settings as a nested dict: defaults, then profiles and methods merged in, then `--set key=value`.

The dict is validated by the pydantic models once it is complete (`problems.validated`); here a
`--set` value only has to become its setting's type, so `--set finetune.augment.scale=0.8,1.2` is
a pair of floats, `none` an unset optional, and a typo an error listing the valid keys.
"""

from __future__ import annotations

import copy
import functools
import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from ichbench.config.fields import Augment
from ichbench.config.models import (DataConfig, EvalConfig, FinetuneConfig, IcmConfig, InputConfig,
                                    ModelConfig, PretrainConfig)
from ichbench.config.problems import parse_problem, shown
from ichbench.errors import IchbenchError

SECTIONS = {"model": ModelConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig, "icm": IcmConfig,
            "data": DataConfig, "input": InputConfig, "eval": EvalConfig}
TOP = ("pretrain_dataset",)   # the top-level key `--set` may change


def as_data(obj: Any) -> Any:
    """A config (or part of one) as plain nested dicts, its values as they are."""
    if isinstance(obj, BaseModel):
        return {name: as_data(value) for name, value in obj}
    if isinstance(obj, dict):
        return {k: as_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_data(v) for v in obj]
    return obj


def merge_settings(data: dict, values: dict, where: str, sections=SECTIONS) -> None:
    """Apply nested `values` onto `data`: sections key by key, dict settings (params, augment)
    merged, anything else replaced; a key `data` lacks is an error naming `where`."""
    for k, v in values.items():
        if k not in data:
            raise IchbenchError(f"{where}: unknown setting {k!r}")
        cur = data[k]
        if k in sections and isinstance(cur, dict) and isinstance(v, dict):
            merge_settings(cur, v, f"{where}.{k}", sections={})
        elif isinstance(cur, dict) and isinstance(v, dict):
            cur.update(copy.deepcopy(v))
        else:
            data[k] = copy.deepcopy(v)


def split_assignment(item: str, flag: str, value_name: str = "value") -> tuple[str, str]:
    """`key=value` from a repeatable command-line option (--set, --option, --space), stripped;
    IchbenchError naming the option otherwise."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise IchbenchError(f"{flag} expects key={value_name}, got {shown(item)}")
    return key.strip(), text.strip()


def valid_keys(data: dict) -> list[str]:
    keys = list(TOP)
    for sec in SECTIONS:
        for name, value in (data.get(sec) or {}).items():
            if isinstance(value, dict):
                keys += [f"{sec}.{name}.{k}" for k in value] or [f"{sec}.{name}.<key>"]
            else:
                keys.append(f"{sec}.{name}")
    return keys


def apply_override(data: dict, item: str, method: str) -> None:
    """Apply one `key=value` to the settings of `method`; IchbenchError on a bad key or a value
    that is not of its setting's type (ranges are the models' to check)."""
    key, text = split_assignment(item, "--set")
    parts = key.split(".")

    def unknown() -> IchbenchError:
        return IchbenchError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys(data))}")

    if len(parts) == 1 and parts[0] in TOP:
        data[parts[0]] = text
        return
    if parts[0] not in SECTIONS or len(parts) < 2:
        raise unknown()
    section = data.get(parts[0])
    if section is None:
        raise IchbenchError(f"--set {item}: method {method!r} does not mask its predictions with the "
                            f"intracranial cavity; `{parts[0]}.*` settings apply to the +ICM methods")
    field = SECTIONS[parts[0]].model_fields.get(parts[1])
    if field is None:
        raise unknown()
    current = section[parts[1]]
    if len(parts) == 3 and isinstance(current, dict) and parts[2] in current:
        # a method declares its params by their values, the augmentation by `Augment`
        target, name = current, parts[2]
        tp = Augment.model_fields[name].annotation if parts[1] == "augment" else _type_like(current[name])
    elif len(parts) == 2:
        target, name, tp = section, parts[1], field.annotation
    else:
        raise unknown()   # a params key the method did not declare is a typo
    try:
        target[name] = parse_value(text, tp)
    except ValueError as exc:   # pydantic's ValidationError and json's errors are ValueErrors
        raise IchbenchError(f"--set {shown(item, quote=False)}: {parse_problem(exc)}") from None


def _type_like(value: Any):
    """The type `--set` reads a method's param as: that of the value the method gave it."""
    if isinstance(value, (list, tuple)):
        elem = float if any(isinstance(v, float) for v in value) else type(value[0]) if value else str
        return list[elem] if isinstance(value, list) else tuple[(elem,) * max(len(value), 1)]
    if isinstance(value, dict):
        return dict
    return type(value) if isinstance(value, (bool, int, float, str)) else str


@functools.lru_cache(maxsize=None)
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp, config=ConfigDict(allow_inf_nan=False))


def parse_value(text: str, tp) -> Any:
    """`text` as the annotated type `tp`: int, float, bool, str, comma-separated tuple or list of
    those, `none`/`null` for an optional, a JSON object for a dict or a model."""
    inner, optional = _strip_optional(tp)
    inner = _bare(inner)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(inner) or inner
    if origin is Literal or inner is str:
        return text   # its allowed values are the model's to check, with the others
    if origin is dict or (isinstance(inner, type) and issubclass(inner, BaseModel)):
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {shown(text)}")
        return obj
    value: Any = text
    if origin is list and typing.get_origin(_bare(typing.get_args(inner)[0])) in (tuple, list):
        value = json.loads(text)   # a list of pairs (input.windows=[[-50,150],[0,80]]) is JSON
    elif origin in (tuple, list):
        value = _split_seq(text)
        args = typing.get_args(inner)
        if origin is tuple and args and Ellipsis not in args and len(args) != len(value):
            raise ValueError(f"expected {len(args)} comma-separated values, got {len(value)}")
    return _adapter(inner).validate_python(value)


def _bare(tp):
    """`tp` without the bounds annotated on it or its items: a value out of range is the models'
    to refuse, in their words (`finetune.augment.scale.1 must be <= 4, got 6.0`)."""
    if typing.get_origin(tp) is typing.Annotated:
        return _bare(typing.get_args(tp)[0])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list) and args:
        return origin[tuple(a if a is Ellipsis else _bare(a) for a in args)]
    return tp


def _strip_optional(tp) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def _split_seq(text: str) -> list[str]:
    text = text.strip()
    if text.startswith(("[", "(")):
        text = text[1:-1]
    return [p.strip() for p in text.split(",") if p.strip()]
