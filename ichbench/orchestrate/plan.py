"""What a run will do, decided on the driver before anything is submitted: resolved configs, the
stores, the split, the pretraining cache slot and the run's identity. Every refusal (unknown
names, missing stores, label needs) happens here, before any training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ichbench.config import IcmConfig, RunConfig
from ichbench.resolve import own_slices_note, resolve
from ichbench.datasets.base import SEGMENTATION, get_dataset
from ichbench.errors import IchbenchError
from ichbench.files import sha256_json
from ichbench.methods.base import Method, get_method
from ichbench.methods.fold import Fold
from ichbench.names import inside
from ichbench.splits import fold_count, labeled_subset, save_split, split_for_store, train_ids
from ichbench.store import SliceStore, open_store, store_exists, store_path
from ichbench.train.engine import pretrained_dirname
from ichbench.train.label_needs import check_finetuning_store, check_pretraining_store


@dataclass
class IcmPlan:
    """The ICM U-Nets a run (or `ichbench icm train`) needs: settings, training store, cache slot."""
    cfg: IcmConfig
    store: SliceStore
    key: str
    dir: Path

    @property
    def checkpoint(self) -> Path:
        from ichbench.icm.masker import ICM_NAME
        return self.dir / ICM_NAME


def plan_icm(home: Path, cfg: IcmConfig) -> IcmPlan:
    """Refuse early when the training store cannot teach the ICM; else its cache slot."""
    from ichbench.icm.train import icm_dirname, shipped_volumes
    store = open_role(home, cfg.dataset, SEGMENTATION)
    shipped_volumes(store)
    return IcmPlan(cfg, store, cfg.model_key(store.fingerprint),
                   inside(home, "icm", cfg.dataset, icm_dirname(cfg, store.fingerprint)))


@dataclass
class MethodPlan:
    method: Method
    cfg: RunConfig
    store: SliceStore
    split: dict
    split_path: Path
    folds: list[int]
    run_key: str
    run_dir: Path
    pretrain_store: SliceStore | None = None
    pretrain_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    icm: IcmPlan | None = None        # +ICM methods with icm.source=unet
    notes: list[str] = field(default_factory=list)   # one line each, for the console (defaults chosen)
    tests: list = field(default_factory=list)   # --test-on external test sets (`orchestrate.external`)

    def fold_dir(self, fold: int) -> Path:
        return self.run_dir / f"fold_{fold}"


def open_role(home: Path, dataset: str, role: str, *, auto_ingest: bool | None = None) -> SliceStore:
    """The store of `dataset`'s `role`; the phantoms (which make their own sources) are ingested on demand."""
    auto_ingest = dataset in ("phantom", "phantom_shifted") if auto_ingest is None else auto_ingest
    path = store_path(home, dataset, role)
    if not store_exists(path):
        ds = get_dataset(dataset)
        if role not in ds.roles:
            raise IchbenchError(f"dataset {dataset!r} has no {role} store (its roles: {', '.join(ds.roles)})")
        if not auto_ingest:
            raw = ds.default_source(home)
            if raw.exists():
                raise IchbenchError(f"no {role} store for {dataset!r} yet: run `ichbench data ingest {dataset}` "
                                    f"(raw files found at {raw})")
            raise IchbenchError(f"no {role} store for {dataset!r} and no raw data at {raw} "
                                f"(once it is there: `ichbench data ingest {dataset}`)\n{ds.where_to_get(raw)}")
        from ichbench.ingest import ingest  # the phantom makes its own sources: ingest on demand
        ingest(ds, home, roles=[role])
    return open_store(path)


_key = sha256_json


def run_identity(cfg: RunConfig) -> dict:
    """The config as the run key takes it: `to_dict` without `eval.hd_cap_mm`, which changes only
    the summaries every run recomputes from its rows (`config.models.EvalConfig`)."""
    out = cfg.to_dict()
    out.pop("eval", None)
    if cfg.eval.identity():
        out["eval"] = cfg.eval.identity()
    return out


def open_pretraining(home: Path, method: Method, cfg: RunConfig) -> SliceStore:
    """The store `method`'s pretext trains on (`cfg.pretrain_dataset`'s `cfg.pretrain_role`
    store), refused before anything trains if it cannot give the labels the method needs."""
    pstore = open_role(home, cfg.pretrain_dataset, cfg.pretrain_role)
    pretexts = [method] + ([get_method(method.init_from)] if method.init_from else [])
    if pstore.path.resolve() == store_path(home, cfg.dataset, SEGMENTATION).resolve():
        for m in pretexts:
            if m.label_needs.binary or m.label_needs.multilabel:
                # images of the test folds are one thing; their labels would leak the answer
                raise IchbenchError(f"{m.name} cannot pretrain on {cfg.dataset}'s own slices: their ICH labels "
                                    "come from the masks of the volumes it is tested on; ingest rsna (or another "
                                    "pretraining dataset) and pass --pretrain-dataset")
    for m in pretexts:
        check_pretraining_store(m, pstore)
    return pstore


def plan_method(name: str, dataset: str, profile: str, home: Path, *, folds=None, k=None,
                pretrain_dataset=None, overrides=()) -> MethodPlan:
    method = get_method(name)
    get_dataset(dataset)
    k = fold_count(k, dataset)   # before the phantom is ingested on demand
    cfg = resolve(method, dataset, profile, list(overrides), pretrain_dataset, home=home)
    return plan_config(method, cfg, home, folds=folds, k=k, overrides=overrides,
                       pretrain_chosen=pretrain_dataset is not None)


def plan_config(method: Method, cfg: RunConfig, home: Path, *, folds=None, k=None, overrides=(),
                pretrain_chosen: bool = False) -> MethodPlan:
    """The plan of a resolved config: `plan_method`'s, and `leaderboard reproduce`'s for the
    config an entry recorded."""
    dataset, profile = cfg.dataset, cfg.profile
    store = open_role(home, dataset, SEGMENTATION)
    check_finetuning_store(method, store)
    pstore = pdir = None
    notes = []
    if method.has_pretext:
        own = cfg.pretrain_dataset == dataset and cfg.pretrain_role == SEGMENTATION
        if not pretrain_chosen and own:
            notes.append(own_slices_note(dataset))
        pstore = open_pretraining(home, method, cfg)
        pdir = inside(home, "pretrained", cfg.pretrain_dataset, pretrained_dirname(cfg))
    icm = None
    if method.icm and cfg.icm.source == "shipped":
        from ichbench.icm.sources import check_shipped
        check_shipped(store)
    elif method.icm and cfg.icm.source == "unet":
        icm = plan_icm(home, cfg.icm)
    split = split_for_store(store, k)
    split_path = save_split(split, inside(home, "splits", f"{dataset}-k{k}.json"))
    folds = sorted(set(folds)) if folds else list(range(k))
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise IchbenchError(f"--folds {bad} out of range for k={k} (0..{k - 1})")
    run_key = _key({"config": run_identity(cfg), "split": split["hash"], "store": store.fingerprint,
                    "pretrain_store": pstore.fingerprint if pstore else None, "icm": icm.key if icm else None})
    run_dir = inside(home, "runs", dataset, method.name, f"{profile}-{run_key[:12]}")
    notes += _batch_notes(cfg, store, split, folds, pstore, icm)
    plan = MethodPlan(method, cfg, store, split, split_path, folds, run_key, run_dir, pstore, pdir,
                      list(overrides), icm, notes)
    check_reuse(plan)
    return plan


def check_reuse(plan: MethodPlan) -> None:
    """Refuse to reuse the plan's finished folds on a damaged store (again after waiting for
    another run of the same config, whose folds were not there when the plan was made)."""
    _refuse_reuse_on_damage(plan.store, [f for f in plan.folds if (plan.fold_dir(f) / "result.json").exists()])


def _batch_notes(cfg: RunConfig, store: SliceStore, split: dict, folds: list[int], pstore, icm) -> list[str]:
    """A batch larger than what it is drawn from is clamped by the samplers to all of it (one
    batch an epoch, `train.data.EpochSampler`): said in one line each, before anything trains."""
    fc = cfg.finetune
    wanted = []
    sizes = {v["id"]: v.get("n_slices") for v in store.volumes}
    if None not in sizes.values():   # every store ichbench writes records them
        has_ich = {v["id"]: bool(v.get("has_ich")) for v in store.volumes}
        pools = {f: sum(sizes[v] for v in labeled_subset(train_ids(split, f), has_ich, fc.labeled_fraction,
                                                         seed=f))   # as `train.fold_setup` picks them
                 for f in folds}
        smallest = min(pools, key=pools.get)
        wanted.append(("finetune.batch_size", fc.batch_size, pools[smallest],
                       f"slices of the training volumes of fold {smallest}"))
    if pstore is not None:
        wanted.append(("pretrain.batch_size", cfg.pretrain.batch_size, pstore.n_slices,
                       f"slices of the pretraining store {pstore.path}"))
    if icm is not None:
        for name in ("batch_size_tissue", "batch_size_bone"):
            wanted.append((f"icm.{name}", getattr(icm.cfg, name), icm.store.n_slices,
                           f"slices of {icm.store.path}"))
    return [f"{name}={size} is more than the {n} {what}: batches are clamped to the slices there are"
            for name, size, n, what in wanted if size > n]


def _refuse_reuse_on_damage(store: SliceStore, reused: list[int]) -> None:
    """Finished folds are reused without reading the store, so check it first: results are never
    handed out for a store whose content no longer matches its fingerprint. (Folds that train read
    every shard they use, checked, so they need no separate pass.)"""
    if not reused:
        return
    from ichbench.store.reader import StoreDamagedError
    problems = store.verify()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreDamagedError(f"{store.path}: {problems[0]}{more}; "
                                f"the finished folds {reused} are not reused on a damaged store: re-ingest it "
                                f"(`ichbench data ingest {store.attrs.get('dataset')} --force`)")


def expand_methods(spec: str) -> list[str]:
    """`a,b` or `all` (every registered method, in registration order)."""
    from ichbench.plugins import get_registry
    known = get_registry().methods()
    names = list(known) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not names:   # '' and ',' ran nothing and exited 0 with an empty table
        raise IchbenchError(f"--method {spec!r} names no method: give a name, a comma list "
                            "or 'all'")
    for n in names:
        get_method(n)  # one-line error listing the known ones
    return names


def fold_task(method: str, dataset: str, fold: int, home: Path, *, profile: str = "smoke",
              overrides=(), k: int | None = None, work_dir: Path | None = None,
              device: str = "cpu") -> Fold:
    """The `Fold` that fold `fold` of `ichbench run --method METHOD --dataset DATASET --profile
    PROFILE [--k K] [--set ...]` hands to the method (same split, config and volumes), for
    testing a `finetune_fold` without Ray. `work_dir` defaults to the run's fold folder;
    `pretrained` is None (pretrain first to test a pretext method's fold)."""
    import torch

    from ichbench.train.own_loop import build_fold
    plan = plan_method(method, dataset, profile, Path(home), folds=[fold], k=k,
                       overrides=list(overrides))
    work = Path(work_dir) if work_dir else plan.fold_dir(fold)
    return build_fold(plan.method, plan.store.path, plan.split, fold, plan.cfg, work, None,
                      torch.device(device))
