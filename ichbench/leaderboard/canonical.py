"""`canonical.json`: what every entry for a dataset must match.

Per dataset: the volume ids, their ICH flags, the split hash per k and the expected store
fingerprint(s). A split is a pure function of the sorted ids, their ICH flags, k and the fixed
seed (`ichbench.splits`), so once the flags are recorded the hash for any k follows from them.
Values that are only known from a real ingest stay `null` until someone records them with
`ichbench leaderboard canonical record`; nothing here is guessed.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from ichbench import __version__
from ichbench.errors import IchbenchError, InputError
from ichbench.leaderboard.jsonio import read_json, write_json
from ichbench.leaderboard.paths import Folder
from ichbench.splits import DEFAULT_K, PAPER_K, SPLIT_SEED, make_split

CANONICAL_VERSION = 1


def empty_dataset(paper_k: int | None = None) -> dict:
    return {"paper_k": paper_k, "n_volumes": None, "n_ich_volumes": None, "counts_source": None,
            "volume_ids": None, "volume_ids_source": None, "has_ich": None,
            "fingerprints": [], "split_hashes": {}, "recorded": []}


def load(folder: Folder) -> dict:
    if not folder.canonical.exists():
        raise InputError(folder.rel(folder.canonical), "missing: the leaderboard folder needs its canonical.json")
    data = read_json(folder.canonical, shown=folder.rel(folder.canonical))
    problems = problems_in(data)
    if problems:
        raise InputError(folder.rel(folder.canonical), problems[0])
    return data


def save(folder: Folder, data: dict) -> Path:
    return write_json(folder.canonical, data)


def problems_in(data) -> list[str]:
    """Structural and internal-consistency problems of a canonical.json document."""
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        return ["expected an object with a 'datasets' object"]
    if data.get("schema_version") != CANONICAL_VERSION:
        return [f"schema_version must be {CANONICAL_VERSION}"]
    if data.get("seed") != SPLIT_SEED:
        return [f"seed must be ichbench's split seed {SPLIT_SEED}, got {data.get('seed')!r}"]
    out = []
    keys = set(empty_dataset())
    for name, d in data["datasets"].items():
        if not isinstance(d, dict) or set(d) != keys:
            out.append(f"dataset {name}: expected exactly the keys {', '.join(sorted(keys))}")
            continue
        ids = d["volume_ids"]
        if ids is not None:
            if len(set(ids)) != len(ids):
                out.append(f"dataset {name}: volume_ids has duplicates")
            if d["n_volumes"] is not None and len(ids) != d["n_volumes"]:
                out.append(f"dataset {name}: {len(ids)} volume_ids but n_volumes = {d['n_volumes']}")
        flags = d["has_ich"]
        if flags is not None:
            if ids is None or set(flags) != set(ids):
                out.append(f"dataset {name}: has_ich must name exactly the volume_ids")
                continue
            if d["n_ich_volumes"] is not None and sum(map(bool, flags.values())) != d["n_ich_volumes"]:
                out.append(f"dataset {name}: has_ich marks {sum(map(bool, flags.values()))} volumes, "
                           f"n_ich_volumes = {d['n_ich_volumes']}")
            for k, h in d["split_hashes"].items():
                derived = make_split(name, flags, int(k), SPLIT_SEED)["hash"]
                if h != derived:
                    out.append(f"dataset {name}: split_hashes[{k}] does not follow from the recorded volumes "
                               f"and ICH flags ({derived[:12]}…)")
    return out


@dataclass
class Expectation:
    """What canonical.json says about one dataset, with the checks it cannot support named."""

    dataset: str
    known: bool
    n_volumes: int | None = None
    n_ich_volumes: int | None = None
    volume_ids: list | None = None
    has_ich: dict | None = None
    fingerprints: list = field(default_factory=list)
    split_hashes: dict = field(default_factory=dict)
    paper_k: int | None = None

    @property
    def all_ich(self) -> bool:
        """Every volume has ICH (Seg-CQ500): the flags are known even before the ids are."""
        return self.n_volumes is not None and self.n_ich_volumes == self.n_volumes

    def flags_for(self, ids) -> dict | None:
        """The canonical ICH flags to split these ids by, when canonical.json determines them."""
        if self.has_ich is not None:
            return self.has_ich
        if self.all_ich:
            return {v: True for v in ids}
        return None

    def left_out(self) -> list[str]:
        """The checks this record cannot make, in words."""
        out = []
        if self.volume_ids is None:
            out.append("volume ids (every canonical volume present exactly once)"
                       + ("; only the volume count is checked" if self.n_volumes is not None else ""))
        if self.has_ich is None and not self.all_ich:  # all-ICH: the count check fixes every flag
            out.append("per-volume ICH flags" + ("; only the number of ICH volumes is checked"
                                                   if self.n_ich_volumes is not None else ""))
        if not self.fingerprints:
            out.append("dataset fingerprint")
        if self.has_ich is None and self.all_ich:
            out.append("split hash against recorded ids (it is checked against the canonical split of the "
                       "entry's own volume ids, all of which have ICH)")
        elif self.has_ich is None and not self.split_hashes:
            out.append("split hash (only checked to be the hash of the folds the entry's volumes were scored in)")
        return out


def expectation(data: dict, dataset: str) -> Expectation:
    d = data["datasets"].get(dataset)
    if d is None:
        return Expectation(dataset, known=False)
    return Expectation(dataset, True, d["n_volumes"], d["n_ich_volumes"], d["volume_ids"], d["has_ich"],
                       list(d["fingerprints"]), dict(d["split_hashes"]), d["paper_k"])


def record_from_store(folder: Folder, home: Path, dataset: str, ks: list[int] | None = None,
                      force: bool = False) -> dict:
    """Record a dataset's ids, ICH flags, fingerprint and split hashes from its ingested store.

    Refuses (unless `force`) when the store disagrees with what is already recorded or published
    (ids, counts): a partial ingest must not become the canonical record.
    """
    from ichbench.splits import split_for_store
    from ichbench.store import open_store, store_path

    path = store_path(home, dataset, "segmentation")
    store = open_store(path)
    if store.attrs.get("dataset") != dataset:
        raise InputError(path, f"store belongs to dataset {store.attrs.get('dataset')!r}, not {dataset!r}")
    problems = store.verify()
    if problems:
        raise InputError(path, f"store does not verify ({problems[0]}); re-ingest before recording")
    flags = {v["id"]: bool(v.get("has_ich")) for v in store.volumes}
    ids = sorted(flags)
    data = load(folder)
    d = data["datasets"].setdefault(dataset, empty_dataset(PAPER_K.get(dataset)))
    conflicts = []
    if d["volume_ids"] is not None and sorted(d["volume_ids"]) != ids:
        missing = sorted(set(d["volume_ids"]) - set(ids))
        extra = sorted(set(ids) - set(d["volume_ids"]))
        conflicts.append(f"volume ids differ from the recorded ones (missing {_few(missing)}; extra {_few(extra)})")
    elif d["n_volumes"] is not None and len(ids) != d["n_volumes"]:
        conflicts.append(f"{len(ids)} volumes, expected {d['n_volumes']}")
    n_ich = sum(flags.values())
    if d["n_ich_volumes"] is not None and n_ich != d["n_ich_volumes"]:
        conflicts.append(f"{n_ich} volumes with ICH, expected {d['n_ich_volumes']}")
    if d["has_ich"] is not None and d["has_ich"] != flags:
        changed = sorted(v for v in flags if d["has_ich"].get(v) != flags[v])
        conflicts.append(f"ICH flags differ from the recorded ones for {_few(changed)}")
    if conflicts and not force:
        raise IchbenchError(f"{path}: not recorded: " + "; ".join(conflicts) + " (use --force if this store is right)")
    if force and conflicts:
        d["fingerprints"] = []  # fingerprints of the superseded record no longer describe these volumes
        d["split_hashes"] = {}
    d["volume_ids"] = ids
    d["has_ich"] = {v: flags[v] for v in ids}
    d["n_volumes"], d["n_ich_volumes"] = len(ids), n_ich
    if d["fingerprints"] is None or store.fingerprint not in d["fingerprints"]:
        d["fingerprints"] = [*(d["fingerprints"] or []), store.fingerprint]
    too_many = [k for k in ks or [] if k > len(ids)]
    if too_many:
        raise IchbenchError(f"{path}: cannot make {too_many[0]} folds from {len(ids)} volumes")
    # The paper's k, any asked for, and those already recorded; a hash for any other k still
    # follows from the recorded ICH flags.
    wanted = set(ks or []) | {int(k) for k in d["split_hashes"]} | {int(d["paper_k"] or DEFAULT_K)}
    wanted = {k for k in wanted if 2 <= k <= len(ids)}
    d["split_hashes"] = {str(k): split_for_store(store, k, SPLIT_SEED)["hash"] for k in sorted(wanted)}
    d["recorded"] = [*d["recorded"], {
        "fingerprint": store.fingerprint, "n_volumes": len(ids), "n_ich_volumes": n_ich,
        "image_size": int(store.attrs.get("settings", {}).get("size", 0)) or None,
        "ichbench_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}]
    problems = problems_in(data)
    if problems:
        raise IchbenchError(f"{folder.rel(folder.canonical)}: would become inconsistent: {problems[0]}")
    save(folder, data)
    return d


def _few(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
