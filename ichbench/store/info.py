"""What `ichbench data info` shows, read from a store's metadata alone.

A zarr v3 group keeps its attributes in `zarr.json`: the volumes table, the settings and the
per-slice label counts the writer records are all there, so describing a store needs neither
zarr nor a pass over its arrays (it takes milliseconds where opening the store with zarr took
seconds). Stores written before the counts were recorded are described through the reader.
"""

from __future__ import annotations

import json

from ichbench import SUBTYPES
from ichbench.errors import IchbenchError
from ichbench.store.atomic import published
from ichbench.store.layout import ARRAYS
from ichbench.store.location import Location, parse


def read_attrs(path: Location | str) -> dict:
    meta = published(parse(path)) / "zarr.json"
    if not meta.is_file():
        raise IchbenchError(f"{path}: no slice store here (run `ichbench data ingest` first)")
    try:
        return json.loads(meta.read_text())["attributes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IchbenchError(f"{meta}: unreadable store metadata ({type(exc).__name__})") from None


def describe(path: Location | str, attrs: dict, label_counts: dict) -> dict:
    volumes = attrs["volumes"]
    root = published(parse(path))
    present = [a for a in ARRAYS if (root / a / "zarr.json").is_file()]
    return {
        "path": str(path),
        "dataset": attrs.get("dataset"),
        "role": attrs.get("role"),
        "fingerprint": attrs["fingerprint"],
        "n_volumes": len(volumes),
        "n_slices": int(attrs["n_slices"]),
        "n_ich_slices": int(label_counts["n_ich_slices"]),
        "n_unlabeled_slices": int(label_counts["n_unlabeled_slices"]),
        "n_ich_volumes": sum(1 for v in volumes if v.get("has_ich")),
        "subtype_volumes": {s: sum(1 for v in volumes if v.get("subtypes") and s in v["subtypes"]) for s in SUBTYPES},
        "image_size": int(attrs["settings"]["size"]),
        "class_names": attrs.get("class_names"),   # ids 1..C of the `classes` array; null: binary store
        "arrays": present,
        "derived": sorted(attrs.get("derived") or {}),
        "created": attrs.get("created"),
        "ichbench_version": attrs.get("ichbench_version"),
    }


def store_info(path: Location | str) -> dict:
    attrs = read_attrs(path)
    if "label_counts" in attrs and "fingerprint" in attrs:
        return describe(path, attrs, attrs["label_counts"])
    from ichbench.store import open_store  # an older store: count from the labels array
    return open_store(path).info()
