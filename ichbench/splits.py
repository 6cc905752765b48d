"""Canonical k-fold splits at volume level, stratified by ICH presence.

A split is a pure function of the sorted volume ids, their ICH flags, k and a fixed seed, so anyone
holding the same data derives the same folds and the same hash (the leaderboard relies on it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ichbench.errors import IchbenchError
from ichbench.files import sha256_json

SPLIT_SEED = 20230725  # the paper's publication date; fixed forever, part of the split's identity
PAPER_K = {"hssayeni": 10, "segcq500": 5}
DEFAULT_K = 5  # folds for a dataset the paper does not cover (the phantom, plugins)


def fold_count(k: int | None, dataset: str) -> int:
    """`--k`, or the paper's k for the dataset (else DEFAULT_K) when not given. A given 0 is an
    error, not "not given": it silently became 5."""
    if k is None:
        return PAPER_K.get(dataset, DEFAULT_K)
    if k < 2:
        raise IchbenchError(f"--k {k}: cross-validation needs at least 2 folds")
    return k


def make_folds(volumes: dict[str, bool], k: int, seed: int = SPLIT_SEED) -> list[list[str]]:
    """volumes: id -> has ICH. Returns k lists of test ids, each sorted."""
    if k < 2:
        raise IchbenchError(f"k must be at least 2, got {k}")
    if len(volumes) < k:
        raise IchbenchError(f"cannot make {k} folds from {len(volumes)} volumes")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    nxt = 0
    for flag in (True, False):  # ICH volumes first, then the rest continue the round-robin
        ids = sorted(v for v, has in volumes.items() if bool(has) == flag)
        for i in rng.permutation(len(ids)):
            folds[nxt % k].append(ids[i])
            nxt += 1
    return [sorted(f) for f in folds]


def split_hash(folds: list[list[str]], k: int, seed: int = SPLIT_SEED) -> str:
    return sha256_json({"k": k, "seed": seed, "folds": folds})


def make_split(dataset: str, volumes: dict[str, bool], k: int, seed: int = SPLIT_SEED) -> dict:
    folds = make_folds(volumes, k, seed)
    return {"dataset": dataset, "k": k, "seed": seed, "n_volumes": len(volumes),
            "folds": [{"fold": i, "test": f, "n_ich": sum(volumes[v] for v in f)} for i, f in enumerate(folds)],
            "hash": split_hash(folds, k, seed)}


def split_for_store(store, k: int, seed: int = SPLIT_SEED) -> dict:
    volumes = {v["id"]: bool(v.get("has_ich")) for v in store.volumes}
    split = make_split(store.attrs.get("dataset", "?"), volumes, k, seed)
    split["store_fingerprint"] = store.fingerprint
    return split


def train_ids(split: dict, fold: int) -> list[str]:
    test = set(split["folds"][fold]["test"])
    return sorted(v for f in split["folds"] for v in f["test"] if v not in test)


def labeled_subset(train: list[str], has_ich: dict[str, bool], fraction: float, seed: int = SPLIT_SEED) -> list[str]:
    """The training volumes whose labels a label-efficiency run may use: `fraction` of each ICH
    stratum, at least one volume per non-empty stratum. One fixed permutation per stratum, so a
    smaller fraction's volumes are always a subset of a larger one's (nested curves)."""
    if not 0 < fraction <= 1:
        raise IchbenchError(f"labeled_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return sorted(train)
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    for flag in (True, False):
        ids = sorted(v for v in train if bool(has_ich[v]) == flag)
        if ids:
            order = rng.permutation(len(ids))
            keep += [ids[i] for i in order[:max(1, round(fraction * len(ids)))]]
        else:
            rng.permutation(0)  # keep the stream aligned whatever the strata sizes
    return sorted(keep)


def save_split(split: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=2))
    return path
