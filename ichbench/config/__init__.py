"""Typed run configuration: pydantic models filled from a named profile, then the method's own
settings, then `--set key=value` overrides.

    cfg = resolve("unet_mixed", "hssayeni", "paper", ["finetune.epochs=3"])   # ichbench.resolve
    cfg.to_dict()        # everything, JSON-ready: printed by --dry-run, saved with every result
    cfg.hash()           # identity of the pretraining (method, model, pretrain [, init_from's])
    json_schema()        # the run config's JSON Schema (docs/config.schema.json)

Overrides are dotted keys into the nested settings (and into their dict settings), read as the
type of the setting they replace, so `--set finetune.augment.scale=0.8,1.2` becomes a pair of
floats and a typo is an error listing the valid keys instead of a silently ignored setting. The
models check the ranges; every problem is one line naming the setting.
"""

from __future__ import annotations

from ichbench.config.fields import ICM_DEPTH, PAPER_AUGMENT, Augment
from ichbench.config.models import (DataConfig, FinetuneConfig, IcmConfig,
                                    ModelConfig, PretrainConfig, RunConfig, finetune_dict,
                                    settings_dict)
from ichbench.config.overrides import (SECTIONS, apply_override, as_data, merge_settings, parse_value,
                                       split_assignment)
from ichbench.config.problems import one_line, validated
from ichbench.config.profiles import PAPER_FINETUNE, PROFILES, profile_settings
from ichbench.errors import IchbenchError


def json_schema() -> dict:
    """The JSON Schema of a run config (pydantic's, from the models and their docstrings)."""
    schema = _one_line_descriptions(RunConfig.model_json_schema())
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_of(model) -> dict:
    """The JSON Schema of another settings model (a method's params), in the same style."""
    return _one_line_descriptions(model.model_json_schema())


def _one_line_descriptions(obj):
    """Field docstrings wrap at 100 columns; in the schema each description is one line."""
    if isinstance(obj, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str)
                else _one_line_descriptions(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_one_line_descriptions(v) for v in obj]
    return obj


def resolve_icm(dataset: str, profile: str = "paper", overrides=()) -> IcmConfig:
    """The ICM settings of `profile` for training on `dataset`'s brain masks (`ichbench icm
    train`), with `icm.*` overrides."""
    data = {"icm": as_data(IcmConfig())}
    merge_settings(data["icm"], profile_settings(profile, dataset).get("icm", {}), f"profile {profile!r}")
    for item in overrides or ():
        if not item.strip().startswith("icm."):
            raise IchbenchError(f"--set {item}: only icm.* settings apply to the ICM U-Nets")
        apply_override(data, item, "(icm)")
    data["icm"]["dataset"] = dataset
    return validated(IcmConfig, data["icm"], "icm.")


__all__ = ["ICM_DEPTH", "PAPER_AUGMENT", "PAPER_FINETUNE", "PROFILES", "SECTIONS", "Augment", "DataConfig",
           "FinetuneConfig", "IcmConfig", "ModelConfig", "PretrainConfig", "RunConfig",
           "apply_override", "as_data", "finetune_dict", "json_schema", "json_schema_of", "merge_settings",
           "one_line", "parse_value", "profile_settings", "resolve_icm", "settings_dict",
           "split_assignment", "validated"]
