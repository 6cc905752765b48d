"""Digests of a fold's predictions, so an entry can say exactly what its models predicted.

A volume's digest is the sha256 of `b"ichbench-pred-v1\\n"`, then the mask's shape as ASCII
`"S,H,W\\n"`, then the predicted binary mask (the thresholded masks that are scored: training
resolution, after the +ICM cavity mask) flattened in C order (slice, row, column) and packed
eight voxels to a byte, most significant bit first (`numpy.packbits`). A fold's digest is the
sha256 of `b"ichbench-fold-predictions-v1\\n"` followed by one line `"<volume id> <volume
digest>\\n"` per test volume, sorted by volume id. Anyone holding the fold's masks, or re-running
the fold, recomputes both with these two functions.
"""

from __future__ import annotations

import hashlib

import numpy as np

VOLUME_PREFIX = b"ichbench-pred-v1\n"
FOLD_PREFIX = b"ichbench-fold-predictions-v1\n"


def volume_digest(mask) -> str:
    """sha256 (hex) of one volume's predicted binary mask, shape (slices, H, W)."""
    a = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    h = hashlib.sha256(VOLUME_PREFIX)
    h.update((",".join(str(int(n)) for n in a.shape) + "\n").encode("ascii"))
    h.update(np.packbits(a.ravel(order="C"), bitorder="big").tobytes())
    return h.hexdigest()


LABELS_PREFIX = b"ichbench-pred-labels-v1\n"


def label_map_digest(labels) -> str:
    """sha256 (hex) of one volume's predicted label map (subtypes task): `LABELS_PREFIX`, the shape
    as for `volume_digest`, then the class ids as uint8 in C order (its union is `volume_digest`'s)."""
    a = np.ascontiguousarray(np.asarray(labels, dtype=np.uint8))
    h = hashlib.sha256(LABELS_PREFIX)
    h.update((",".join(str(int(n)) for n in a.shape) + "\n").encode("ascii"))
    h.update(a.tobytes(order="C"))
    return h.hexdigest()


def fold_digest(rows) -> str:
    """sha256 (hex) of a fold's predictions, from its per-volume rows (`volume_id`,
    `pred_sha256`)."""
    h = hashlib.sha256(FOLD_PREFIX)
    for r in sorted(rows, key=lambda r: str(r["volume_id"])):
        h.update(f"{r['volume_id']} {r['pred_sha256']}\n".encode("utf-8"))
    return h.hexdigest()
