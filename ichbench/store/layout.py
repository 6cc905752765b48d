"""Names and constants of the store format, shared by the writer, the reader and `verify`."""

from __future__ import annotations

import hashlib
import json

FORMAT_VERSION = 1
ARRAYS = ("images", "masks", "labels", "volume", "brain")  # fixed order: the fingerprint depends on it
SHARD_SLICES = 64
# Volumes whose id starts with this hold a pretraining store's validation slices (chosen at ingest).
VALIDATION_PREFIX = "val/"  # slices per shard file; one chunk per slice inside it


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(settings: dict, volumes: list[dict], digests: dict[str, str]) -> str:
    """sha256 over the ingest settings, the volumes table and each array's content digest."""
    h = hashlib.sha256()
    h.update(canonical_json({"format": FORMAT_VERSION, "settings": settings, "volumes": volumes,
                             "arrays": {k: digests[k] for k in sorted(digests)}}))
    return h.hexdigest()
