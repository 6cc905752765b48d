"""Names and constants of the store format, shared by the writer, the reader and `verify`.

Integrity is per shard: every array is written in shards of SHARD_SLICES rows, the writer records
the sha256 of each shard's decoded bytes (`shard_digests`), an array's digest is the sha256 of its
ordered shard digests, and the fingerprint covers the settings, the volumes table and the array
digests. A reader hashes each shard as it decodes it, so a flipped byte or a lost shard file is
caught by the read that would have used it, naming the shard, at the cost of one hash of data
that is being read anyway.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ichbench.files import canonical_json

FORMAT_VERSION = 2   # 2: per-shard digests (1: one digest per array, no check on read)
# 3: format 2 plus a `classes` array (per-voxel class ids) and the `class_names` it indexes. Only a
# store that has the array says 3, so binary stores, their bytes and fingerprints stay what they were.
CLASSES_FORMAT_VERSION = 3
READABLE_FORMATS = (FORMAT_VERSION, CLASSES_FORMAT_VERSION)
ARRAYS = ("images", "masks", "labels", "volume", "brain", "classes")  # fixed order: the fingerprint depends on it
SHARD_SLICES = 64    # slices per shard file; one chunk per slice inside it (images, masks, brain)
# Volumes whose id starts with this hold a pretraining store's validation slices (chosen at ingest).
VALIDATION_PREFIX = "val/"


def shard_digest(block: np.ndarray) -> str:
    """sha256 of one shard's rows as C-contiguous bytes (dtype and shape are the array's)."""
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()


def array_digest(shard_digests: list[str]) -> str:
    return hashlib.sha256("\n".join(shard_digests).encode()).hexdigest()


def fingerprint(settings: dict, volumes: list[dict], digests: dict[str, str], version: int = FORMAT_VERSION,
                class_names: list[str] | None = None) -> str:
    """sha256 over the store format, the ingest settings, the volumes table, each array's content
    digest and, in a store with a `classes` array, the names its ids stand for."""
    doc = {"format": version, "settings": settings, "volumes": volumes,
           "arrays": {k: digests[k] for k in sorted(digests)}}
    if class_names is not None:
        doc["class_names"] = list(class_names)
    return hashlib.sha256(canonical_json(doc)).hexdigest()
