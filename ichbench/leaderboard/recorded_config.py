"""The run config an entry recorded, rebuilt as a `RunConfig` to run it again.

An entry's `config` is `RunConfig.to_dict()` of its run, and the models validate it as they would
any config. Keys this ichbench does not know refuse the rebuild (another version wrote them, and
running without them would not be that run). Keys the entry lacks (written before they existed)
take the value that reproduces the older behaviour: the model's default, except where the default
changed since (`LEGACY`). Derived keys (`pretrain_hash`) are recomputed, and checked when nothing
had to be filled in.
"""

from __future__ import annotations

from pydantic import ValidationError

from ichbench.config import SECTIONS, RunConfig, one_line
from ichbench.errors import IchbenchError

# keys whose default changed after entries without them were written: the value they ran with
LEGACY = {"model.encoder_growth": "first"}   # ichbench 0.1's block (see ModelConfig)
DERIVED = ("pretrain_hash",)
NAMES = ("method", "dataset", "profile", "pretrain_dataset")
# left out of to_dict when empty (params) or at the default that reproduces the runs made before
# they existed (negatives), by design: an entry without them is not missing them
OMITTED_WHEN_EMPTY = ("finetune.params", "finetune.negatives", "finetune.task")


class ConfigNotRebuilt(IchbenchError):
    pass


def _unknown(key: str) -> ConfigNotRebuilt:
    return ConfigNotRebuilt(f"config key {key} is unknown to this ichbench (written by another "
                            "version?)")


def _fill(values: dict, where: str, filled: list[str]) -> None:
    """Put in the settings an older entry lacks, naming each in `filled`."""
    if "pretrain_role" not in values:
        values["pretrain_role"] = RunConfig.model_fields["pretrain_role"].default
        filled.append(f"{where}pretrain_role={values['pretrain_role']!r}")
    for name, cls in SECTIONS.items():
        if name == "icm" and values.get(name) is None:
            continue   # a method without the ICM
        if name in ("data", "input", "eval") and name not in values:
            continue   # recorded only when not the defaults: absent is not "filled in"
        section = values.setdefault(name, {})
        if not isinstance(section, dict):
            continue   # the model refuses it, by name
        for key, field in cls.model_fields.items():
            if key in section or f"{name}.{key}" in OMITTED_WHEN_EMPTY:
                continue
            if f"{name}.{key}" in LEGACY:
                section[key] = LEGACY[f"{name}.{key}"]
                filled.append(f"{where}{name}.{key}={section[key]}")
            else:
                section[key] = field.get_default(call_default_factory=True)
                filled.append(f"{where}{name}.{key}={section[key]!r}")


def rebuild(data, filled: list[str] | None = None, where: str = "") -> RunConfig:
    """RunConfig from an entry's config; names what it had to fill in, in `filled`."""
    filled = [] if filled is None else filled
    if not isinstance(data, dict):
        raise ConfigNotRebuilt("the entry's config is not an object")
    missing = [k for k in NAMES if not isinstance(data.get(k), str)]
    if missing:
        raise ConfigNotRebuilt(f"the entry's config lacks {where}{missing[0]}")
    values = {k: v for k, v in data.items() if k not in DERIVED and k != "init"}
    _fill(values, where, filled)
    try:
        cfg = RunConfig.model_validate(values)
    except ValidationError as exc:
        extra = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extra:
            raise _unknown(where + ".".join(str(p) for p in extra[0]["loc"])) from None
        raise ConfigNotRebuilt(f"the entry's config does not validate: {one_line(exc, where)}") from None
    if data.get("init") is not None:
        cfg.init = rebuild(data["init"], filled, f"{where}init.")
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
