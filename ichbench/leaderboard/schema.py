"""JSON Schemas of a leaderboard entry and of a published table.

The schemas live here, in code, and `leaderboard/schema/entry.schema.json` is a copy written by
`ichbench leaderboard render`; validation checks the copy is unchanged, so loosening the schema
in a pull request is itself a rejection rather than a way around the checks.
"""

from __future__ import annotations

import re

from jsonschema import Draft202012Validator

from ichbench.leaderboard import classes as _classes
from ichbench.leaderboard import seeds as _seeds

from ichbench.leaderboard import test_sets as _test_sets

# 2: entries carry `folds` (each fold's model and prediction digests and numerics). Entries of
# version 1 stay valid; they cannot show that their predictions are the ones reproduced.
# 3: every row carries its surface and volume metrics (SURFACE_KEYS) and the entry the NSD
# tolerance they were computed at (`nsd_mm`). Entries of versions 1 and 2 stay valid as written
# (read-time upgrade: their HD, HD95 and NSD are unknown and shown as "–"); they may not carry
# these keys, so each version means one thing.
SCHEMA_VERSION = 3
SCHEMA_VERSIONS = (1, 2, 3)
# What an entry is (an optional key of version 3, absent meaning an ichbench run): "ichbench-run",
# written by `submit --run-id` from a run ichbench trained and scored, or "external-tool", written
# by `submit --predictions` from another tool's masks that ichbench scored: self-reported, since
# ichbench never saw the training (docs/leaderboard.md, "Three kinds of entry").
ICHBENCH_RUN, EXTERNAL_TOOL = "ichbench-run", "external-tool"
KINDS = (ICHBENCH_RUN, EXTERNAL_TOOL)
EXTERNAL_MARK = "self-reported, external tool"
METRICS = ("dice", "precision", "recall")
GROUPS = ("all", "ich")
# the per-volume keys of `ichbench.evaluate.summary.SURFACE_KEYS`, as runs log them
SURFACE_KEYS = ("hd_mm", "hd95_mm", "nsd", "rvd", "abs_rvd", "vol_err_ml", "abs_vol_err_ml", "empty")

# Control characters: C0 (newlines, tabs, escapes), DEL, C1, the Unicode line and paragraph
# separators and the bidirectional overrides. No string of an entry holds one: each is shown on one
# line of the README, the page and every message, as written. A negated search, because a pattern
# anchored with `$` still matches before a final newline ("name\n" passes ^[a-z]+$ in Python).
CONTROL = r"[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_CONTROL_RE = re.compile(CONTROL)
_ONE_LINE = {"not": {"type": "string", "pattern": CONTROL}}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$", **_ONE_LINE}
_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$", **_ONE_LINE}
_OPT_STR = {"type": ["string", "null"], "maxLength": 500, **_ONE_LINE}
# any JSON, with no control character in a string or a key (an entry's free-form config)
_DATA = {**_ONE_LINE, "propertyNames": _ONE_LINE, "items": {"$ref": "#/$defs/data"},
         "additionalProperties": {"$ref": "#/$defs/data"}}
# Every number has a physical bound, so no entry can carry a value that overflows a float when
# re-scored (tp = 10**400) or a 309-digit cell on the page (gpu_hours = 1e308).
MAX_VOXELS = 10**10     # voxels in one volume: 2048 x 2048 x 2000 slices is 8.4e9
MAX_ML = 100_000        # mL in one volume: 100 L, more than a CT scanner's whole field of view
MAX_GPU_HOURS = 100_000  # one submission: over 11 GPU-years
MAX_VOLUMES = 20_000
MAX_K = 100
MAX_MM = 10_000         # a distance inside one scan: 10 m, far beyond any field of view
# |RVD| of a prediction of at most MAX_ML against the smallest true volume, one 0.1 mm voxel (1e-6 mL)
MAX_RVD = 10**11
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_VOXELS}
_ML = {"type": "number", "minimum": 0, "maximum": MAX_ML}
_RATIO = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
# a distance or ratio that is infinite when exactly one mask is empty: JSON has no infinity, so the
# string "inf" (docs/score.md)
_INF = {"const": "inf"}
_MM_OR_INF = {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_MM}, _INF]}
_SURFACE = {
    "hd_mm": _MM_OR_INF, "hd95_mm": _MM_OR_INF,
    "nsd": {"type": "number", "minimum": 0, "maximum": 1},
    "rvd": {"anyOf": [{"type": "number", "minimum": -1, "maximum": MAX_RVD}, _INF]},
    "abs_rvd": {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_RVD}, _INF]},
    "vol_err_ml": {"type": "number", "minimum": -MAX_ML, "maximum": MAX_ML},
    "abs_vol_err_ml": _ML,
    # which mask was empty: the empty-case rule the row fell under
    "empty": {"enum": ["none", "pred", "truth", "both"]},
}
_STAT = {"type": "object", "additionalProperties": False, "required": ["mean", "std"],
         "properties": {"mean": _RATIO, "std": _RATIO}}
_NUMERICS = {"type": "object", "additionalProperties": False,
             "description": "what a fold's last bits depend on besides the seed "
                            "(ichbench.train.device.numerics)",
             "properties": {"cpu_threads": {"type": ["integer", "null"], "minimum": 1,
                                            "maximum": 4096},
                            "cpu_capability": _OPT_STR, "gpu": _OPT_STR}}
_FOLD = {"type": "object", "additionalProperties": False,
         "required": ["fold", "model_sha256", "predictions_sha256", "numerics"],
         "properties": {"fold": {"type": "integer", "minimum": 0, "maximum": 99},
                        # null: a method that fine-tunes by itself and keeps no model file
                        "model_sha256": {**_HEX64, "type": ["string", "null"],
                                         "description": "sha256 of the fold's model.pt"},
                        "predictions_sha256": {**_HEX64,
                                               "description": "ichbench.evaluate.digest.fold_digest"},
                        "numerics": _NUMERICS}}
_GROUP = {"type": "object", "additionalProperties": False, "required": ["n", *METRICS],
          "properties": {"n": {"type": "integer", "minimum": 0, "maximum": MAX_VOLUMES},
                         **{m: _STAT for m in METRICS}}}

_ROW = {
    "type": "object", "additionalProperties": False,
    "required": ["volume_id", "fold", "tp", "fp", "fn", "pred_ml", "true_ml", "subtypes"],
    "properties": {
        # dataset volume ids only (file or folder names of the public release)
        "volume_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      **_ONE_LINE},
        "fold": {"type": "integer", "minimum": 0, "maximum": MAX_K - 1},
        "tp": _COUNT, "fp": _COUNT, "fn": _COUNT,
        "pred_ml": _ML, "true_ml": _ML,
        "subtypes": {"type": ["array", "null"], "maxItems": 16,
                     "items": {"type": "string", "pattern": "^[a-z]{1,16}$", **_ONE_LINE}},
        # hemorrhage in the native-resolution mask (absent in older entries: tp + fn > 0)
        "has_ich": {"type": "boolean"},
        **_SURFACE,
    },
}

ENTRY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "ichbench/leaderboard/entry.schema.json",
    "title": "ichbench leaderboard entry",
    "description": "One submission: a method's per-volume counts on a dataset's canonical split, with the "
                   "summary they give. Ratios are not stored: validation recomputes them from the counts.",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "method", "plugin", "dataset", "split", "profile", "config", "per_volume",
                 "summary", "ichbench_version", "hardware", "gpu_hours", "mlflow_run_id", "date", "code"],
    "allOf": [
        # from version 2 on, every entry says what each fold's model and predictions were
        {"if": {"properties": {"schema_version": {"const": 1}}}, "else": {"required": ["folds"]}},
        # version 3: every row its surface metrics, the entry their NSD tolerance; before, neither
        {"if": {"properties": {"schema_version": {"const": 3}}},
         "then": {"required": ["nsd_mm"],
                  "properties": {"per_volume": {"items": {"required": list(SURFACE_KEYS)}}}},
         "else": {"properties": {"nsd_mm": False,
                                 "per_volume": {"items": {"properties": {k: False for k in SURFACE_KEYS}}}}}},
        # `kind` extends version 3 (entries without it are ichbench runs); older versions never carry it
        {"if": {"properties": {"schema_version": {"const": 3}}}, "else": {"not": {"required": ["kind"]}}},
        # so does `external` (--test-on results, leaderboard.test_sets)
        {"if": {"properties": {"schema_version": {"const": 3}}}, "else": {"not": {"required": ["external"]}}},
    ],
    "$defs": {"data": _DATA},
    "properties": {
        "schema_version": {"enum": list(SCHEMA_VERSIONS)},
        "kind": {"enum": list(KINDS),
                 "description": "ichbench-run (absent: the same) or external-tool: another tool's predictions, "
                                "scored by ichbench, training self-reported"},
        "method": _NAME,
        "plugin": {"type": "object", "additionalProperties": False, "required": ["distribution", "version"],
                   "properties": {"distribution": _OPT_STR, "version": _OPT_STR}},
        "dataset": {"type": "object", "additionalProperties": False, "required": ["name", "fingerprint"],
                    "properties": {"name": _NAME, "fingerprint": _HEX64}},
        "split": {"type": "object", "additionalProperties": False, "required": ["hash", "k"],
                  "properties": {"hash": _HEX64,
                                 "k": {"type": "integer", "minimum": 2, "maximum": MAX_K}}},
        "profile": _NAME,
        "config": {"type": "object", "$ref": "#/$defs/data",
                   "description": "the run's resolved configuration (data only)"},
        "per_volume": {
            "type": "array", "minItems": 1, "maxItems": MAX_VOLUMES,
            "items": _ROW,
        },
        "nsd_mm": {"type": "number", "minimum": 0, "maximum": 100,
                   "description": "the NSD tolerance tau (mm) of the rows' nsd (schema version 3)"},
        "summary": {"type": "object", "additionalProperties": False, "required": list(GROUPS),
                    "properties": {g: _GROUP for g in GROUPS}},
        "ichbench_version": {"type": "string", "maxLength": 100, **_ONE_LINE},
        # the ichbench checkout that ran it; code.commit is the method's own code (a plugin's)
        # (optional: entries written before it existed stay valid)
        "ichbench_commit": _OPT_STR,
        "hardware": _OPT_STR,
        "gpu_hours": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_GPU_HOURS},
        "mlflow_run_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$", **_ONE_LINE},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
                 **_ONE_LINE},
        "folds": {"type": "array", "minItems": 1, "maxItems": 100, "items": _FOLD,
                  "description": "per fold, what its results can be checked against "
                                 "(schema version 2)"},
        "external": _test_sets.schema(_ROW, _NAME, _HEX64, _GROUP, SURFACE_KEYS),
        "code": {"type": "object", "additionalProperties": False, "required": ["url", "commit"],
                 "description": "where the method's code is and its commit (the plugin's, for a plugin method)",
                 "properties": {"url": _OPT_STR, "commit": _OPT_STR}},
    },
}

# `task`, `classes` and `class_summary` (finetune.task=subtypes, leaderboard.classes) extend version 3
# as `kind` does, and so do a row's `classes` and `pred_labels_sha256`; added before `seeds` copies the row
_classes.extend(ENTRY_SCHEMA, count=_COUNT, ml=_ML, surface=_SURFACE, hex64=_HEX64, group=_GROUP,
                one_line=_ONE_LINE, v3={"properties": {"schema_version": {"const": 3}}})

# `seeds` (ichbench run --seeds, leaderboard.seeds) extends version 3 as `kind` does: the other seeds'
# rows are the entry's rows with their seed
ENTRY_SCHEMA["properties"]["seeds"] = _seeds.schema(ENTRY_SCHEMA["properties"]["per_volume"]["items"],
                                                   ENTRY_SCHEMA["properties"]["mlflow_run_id"], _FOLD, SURFACE_KEYS)
ENTRY_SCHEMA["allOf"].append({"if": {"properties": {"schema_version": {"const": 3}}},
                              "else": {"not": {"required": ["seeds"]}}})

_PCT = {"type": "object", "additionalProperties": False, "required": ["mean", "std"],
        "properties": {"mean": {"type": "number", "minimum": 0, "maximum": 100},
                       "std": {"type": "number", "minimum": 0, "maximum": 100}}}
_PGROUP = {"type": "object", "additionalProperties": False, "required": ["n", *METRICS],
           "properties": {"n": {"type": "integer", "minimum": 1, "maximum": MAX_VOLUMES},
                          **{m: _PCT for m in METRICS}}}

PUBLISHED_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["published", "source", "units", "notes", "rows"],
    "properties": {
        "published": {"const": True},
        "source": {"type": "object"},
        "units": {"const": "percent"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["dataset", "method", "label", "all", "ich", "bold"],
            "properties": {"dataset": _NAME, "method": _NAME, "label": {"type": "string"},
                           "all": _PGROUP, "ich": _PGROUP,
                           "bold": {"type": "array", "items": {"type": "string"}}}}},
    },
}


def _problems(schema: dict, data) -> list[str]:
    validator = Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(printable(str(p)) for p in err.absolute_path) or "(top level)"
        msg = err.message
        if err.validator in ("maximum", "minimum"):   # a 400-digit number would fill the line
            side = {"maximum": "greater than the maximum", "minimum": "less than the minimum"}
            msg = f"{_short(err.instance)} is {side[err.validator]} of {err.validator_value:,}"
        elif err.validator == "anyOf" and _INF in err.validator_value:
            msg = (f"{_short(err.instance)} is neither a number within "
                   f"[{err.validator_value[0].get('minimum'):,}, {err.validator_value[0].get('maximum'):,}] "
                   f"nor \"inf\" (an infinite value, as JSON holds it)")
        elif err.validator == "not" and set(err.validator_value) == {"required"}:
            key = err.validator_value["required"][0]
            msg = f"holds {key}, which only entries of schema version {SCHEMA_VERSION} carry" + (
                "" if key in ("kind", "external", "seeds", "task") else ", of task subtypes")
        elif err.validator == "not" and err.validator_value == {}:   # leaderboard.classes: a row's classes
            msg = f"holds {err.absolute_path[-1]}, which only rows of an entry of task subtypes carry"
        elif err.schema is False:   # jsonschema names neither the key nor its parent's path here
            msg = (f"holds nsd_mm or a row's surface metrics ({', '.join(SURFACE_KEYS)}), which only "
                   f"entries of schema version {SCHEMA_VERSION} carry")
        elif err.validator == "not" and err.validator_value == _ONE_LINE["not"]:
            what = "the key" if "propertyNames" in err.schema_path else "the text"
            msg = f"{what} {err.instance!r} holds a control character (newlines included); text is one plain line"
        msg = printable(msg if len(msg) < 200 else msg[:200] + "…")
        out.append(f"schema: at {where}: {msg}")
    return out


def printable(text: str) -> str:
    """`text` with each control character written as its escape (\\n, \\x1b, \\u2028): one line."""
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


def _short(x) -> str:
    text = f"{x:.6g}" if isinstance(x, float) else str(x)
    return text if len(text) <= 20 else f"{text[:6]}… ({len(text)} digits)"


def entry_problems(entry) -> list[str]:
    return _problems(ENTRY_SCHEMA, entry)


def published_problems(table) -> list[str]:
    return _problems(PUBLISHED_SCHEMA, table)
