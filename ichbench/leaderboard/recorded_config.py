"""The run config an entry recorded, rebuilt as a `RunConfig` to run it again.

An entry's `config` is `RunConfig.to_dict()` of its run. Keys this ichbench does not know refuse
the rebuild (another version wrote them, and running without them would not be that run). Keys the
entry lacks (written before they existed) take the value that reproduces the older behaviour: the
dataclass default, except where the default changed since (`LEGACY`). Derived keys
(`pretrain_hash`) are recomputed, and checked when nothing had to be filled in.
"""

from __future__ import annotations

import dataclasses

from ichbench.config import (DataConfig, FinetuneConfig, IcmConfig, ModelConfig, PretrainConfig,
                             RunConfig, validate)
from ichbench.errors import IchbenchError

# keys whose default changed after entries without them were written: the value they ran with
LEGACY = {"model.encoder_growth": "first"}   # ichbench 0.1's block (see ModelConfig)
DERIVED = ("pretrain_hash",)
SECTIONS = {"model": ModelConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
            "icm": IcmConfig, "data": DataConfig}
NAMES = ("method", "dataset", "profile", "pretrain_dataset")


class ConfigNotRebuilt(IchbenchError):
    pass


def _unknown(key: str) -> ConfigNotRebuilt:
    return ConfigNotRebuilt(f"config key {key} is unknown to this ichbench (written by another "
                            "version?)")


def _value(value, default):
    """JSON gives lists where the dataclass holds tuples (windows, augment scale)."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, dict) and isinstance(value, dict):
        return {k: _value(v, default.get(k)) for k, v in value.items()}
    return value


def _section(cls, data, where: str, filled: list[str]):
    if not isinstance(data, dict):
        raise ConfigNotRebuilt(f"config {where} is not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _unknown(f"{where}.{unknown[0]}")
    obj = cls()
    for name in fields:
        key = f"{where}.{name}"
        if name in data:
            setattr(obj, name, _value(data[name], getattr(obj, name)))
        elif key in LEGACY:
            setattr(obj, name, LEGACY[key])
            filled.append(f"{key}={LEGACY[key]}")
        else:
            filled.append(f"{key}={getattr(obj, name)!r}")
    return obj


def rebuild(data, filled: list[str] | None = None, where: str = "") -> RunConfig:
    """RunConfig from an entry's config; names what it had to fill in, in `filled`."""
    filled = [] if filled is None else filled
    if not isinstance(data, dict):
        raise ConfigNotRebuilt("the entry's config is not an object")
    top = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - top - set(DERIVED))
    if unknown:
        raise _unknown(f"{where}{unknown[0]}")
    missing = [k for k in NAMES if not isinstance(data.get(k), str)]
    if missing:
        raise ConfigNotRebuilt(f"the entry's config lacks {where}{missing[0]}")
    cfg = RunConfig(method=data["method"], dataset=data["dataset"], profile=data["profile"],
                    pretrain_dataset=data["pretrain_dataset"])
    if "pretrain_role" in data:
        cfg.pretrain_role = data["pretrain_role"]
    else:
        filled.append(f"{where}pretrain_role={cfg.pretrain_role!r}")
    for name, cls in SECTIONS.items():
        if name == "icm":
            icm = data.get("icm")
            cfg.icm = None if icm is None else _section(cls, icm, f"{where}icm", filled)
        elif name == "data":   # recorded only when not the defaults: absent is not "filled in"
            cfg.data = _section(cls, data["data"], f"{where}data", filled) if "data" in data else DataConfig()
        else:
            setattr(cfg, name, _section(cls, data.get(name, {}), f"{where}{name}", filled))
    if data.get("init") is not None:
        cfg.init = rebuild(data["init"], filled, f"{where}init.")
    try:
        validate(cfg)
    except IchbenchError as exc:
        raise ConfigNotRebuilt(f"the entry's config does not validate: {exc}") from None
    check_same(data, cfg.to_dict(), where, filled)
    return cfg


def check_same(recorded: dict, rebuilt: dict, where: str, filled: list[str]) -> None:
    """Every recorded value comes back from the rebuilt config (derived ones when nothing was
    filled in)."""
    for key, value in recorded.items():
        if key in DERIVED and filled:
            continue
        if key == "init":
            continue   # checked by its own rebuild
        nested = isinstance(value, dict) and isinstance(rebuilt.get(key), dict)
        if nested and key not in ("params", "augment"):
            check_same(value, rebuilt[key], f"{where}{key}.", filled)
        elif rebuilt.get(key) != value:
            raise ConfigNotRebuilt(f"config {where}{key} = {value!r} comes back as "
                                   f"{rebuilt.get(key)!r}")


__all__ = ["rebuild", "ConfigNotRebuilt", "LEGACY"]
