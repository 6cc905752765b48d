"""Infinite metrics in JSON, both directions: one rule for every file ichbench writes.

An empty prediction against a hemorrhage has an infinite Hausdorff distance (docs/score.md), and
JSON has no infinity (Python would write the non-standard `Infinity`). Every per-volume row and
summary written as JSON (fold result.json, MLflow JSON artifacts, `ichbench score --json`, `ichbench
runs --json`) holds infinity as the string "inf" ("-inf"); `decode` turns those strings back into
floats under the keys that can hold one, so rows read back score and summarise as they were made.
"""

from __future__ import annotations

import math

# the per-volume keys that can be infinite (the one-empty-mask rule); only these are decoded, so
# a volume or case named "inf" stays a name
INF_KEYS = frozenset({"hd_mm", "hd95_mm", "rvd", "abs_rvd"})
_TEXT = {"inf": math.inf, "-inf": -math.inf}


def encode(value):
    """`value` with every infinite float replaced by "inf" / "-inf" (dicts and lists copied)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value):
    """The inverse of `encode` for what it wrote: "inf" / "-inf" under `INF_KEYS` become floats."""
    if isinstance(value, dict):
        return {k: _TEXT[v] if k in INF_KEYS and isinstance(v, str) and v in _TEXT else decode(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
