"""Repeated seeds (`ichbench run --seeds N|LIST`): every fold fine-tuned once per seed.

A seed is a run of its own: the run's config with `finetune.seed` set to it (and, with
`--seeds-pretrain per_seed`, `pretrain.seed` moved by as much), so it has its own run key, run
folder and MLflow parent run, and resume and caching work per seed exactly as per run (a killed
fold of seed 2 reruns alone; the other seeds' folds are reused). The config's own seed is the run
without `--seeds`, unchanged: same run key, its finished folds reused.

Pretraining is "shared" by default (every seed fine-tunes from the one pretrained checkpoint:
N fine-tunings, one pretraining) or "per_seed" (N pretrainings too: the seeds then also measure the
pretext's variance). Seeds run one after another; within a seed the folds run in parallel as ever.

What is reported over seeds: each seed's means over volumes, and the mean ± std (n - 1) of those
means over seeds; the per-volume rows keep their seed. MLflow holds one parent run per seed (tagged
with its seed, folds as its children) and one run of kind "seeds" holding the means over seeds and
every seed's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ichbench.config.fields import MAX_SEED
from ichbench.errors import IchbenchError
from ichbench.files import sha256_json

SEEDS_PRETRAIN = ("shared", "per_seed")
MAX_SEEDS = 100     # a typo (--seeds 1000) would queue a thousand fine-tunings of every fold
# the summary metrics (`tracking.records.summary_metrics`) reported per seed and over seeds
OVER_SEEDS = ("dice_all_mean", "dice_ich_mean", "precision_all_mean", "recall_all_mean",
              "hd95_mm_all_mean", "nsd_all_mean", "volume_ccc")
KIND = "seeds"


def parse_seeds(text: str | None, base: int) -> list[int] | None:
    """`--seeds N` (N seeds from the config's own `base` seed on) or `--seeds a,b,c`; None without."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise IchbenchError(f"--seeds expects a count or a comma list of seeds, got {text!r}") from None
    if len(values) == 1 and "," not in text:
        n = values[0]
        if not 1 <= n <= MAX_SEEDS:
            raise IchbenchError(f"--seeds {n}: give 1 to {MAX_SEEDS} seeds")
        values = list(range(base, base + n))
    if not values:
        raise IchbenchError(f"--seeds {text!r} names no seed")
    if len(values) > MAX_SEEDS:
        raise IchbenchError(f"--seeds names {len(values)} seeds: at most {MAX_SEEDS}")
    bad = [v for v in values if not 0 <= v <= MAX_SEED]
    if bad:
        raise IchbenchError(f"--seeds {bad[0]}: a seed is 0..{MAX_SEED}")
    if len(set(values)) != len(values):
        raise IchbenchError(f"--seeds {text!r} names a seed twice")
    return values


def seed_overrides(cfg, seed: int, pretrain: str) -> list[str]:
    """The `--set` overrides that make `cfg`'s run the run of `seed` (none for its own seed)."""
    if seed == cfg.finetune.seed:
        return []
    out = [f"finetune.seed={seed}"]
    if pretrain == "per_seed":
        # moved by as much as the fine-tuning seed, so the config's own seed keeps its pretraining
        p = cfg.pretrain.seed + seed - cfg.finetune.seed
        if not 0 <= p <= MAX_SEED:
            raise IchbenchError(f"--seeds {seed} with --seeds-pretrain per_seed: pretrain.seed would be {p} "
                                f"(0..{MAX_SEED})")
        out.append(f"pretrain.seed={p}")
    return out


def seed_plans(make_plan, seeds: str | None, pretrain: str = "shared") -> list[tuple[int | None, object]]:
    """(seed, plan) for each of `--seeds`; `make_plan(extra_overrides)` plans the run. Without
    seeds: the one plan, seed None (the run as before)."""
    if pretrain not in SEEDS_PRETRAIN:
        raise IchbenchError(f"--seeds-pretrain {pretrain!r}: one of {', '.join(SEEDS_PRETRAIN)}")
    base = make_plan([])
    values = parse_seeds(seeds, base.cfg.finetune.seed)
    if values is None:
        return [(None, base)]
    return [(s, base if not (extra := seed_overrides(base.cfg, s, pretrain)) else make_plan(extra)) for s in values]


def by_seed(seeded: list[tuple[int | None, object]], outcomes: list, pretrain: str, tracker, resources):
    """After the runs: (the outcomes of each method's first seed, one `SeedsOutcome` per method,
    logged to MLflow); without seeds (all outcomes, [])."""
    if all(s is None for s, _ in seeded):
        return outcomes, []
    groups: dict[str, list] = {}
    for (s, plan), o in zip(seeded, outcomes):
        groups.setdefault(plan.method.name, []).append((s, o))
    results = [combine([s for s, _ in g], [o for _, o in g], pretrain) for g in groups.values()]
    for out in results:
        log_seeds(tracker, resources, out)
    return [r.outcomes[0] for r in results], results


@dataclass
class SeedsOutcome:
    """One method's runs over seeds: a `MethodOutcome` per seed and what they give together."""
    method: str
    dataset: str
    seeds: list[int]
    pretrain: str
    outcomes: list
    per_seed: list[dict]      # {"seed", "parent_run_id", "run_key", OVER_SEEDS metric: value}
    over_seeds: dict          # OVER_SEEDS metric -> {"mean", "std", "n"}
    rows: list[dict]          # per-volume rows of every seed, each with its "seed"
    run_id: str | None = None

    def as_dict(self) -> dict:
        return {"method": self.method, "dataset": self.dataset, "seeds": self.seeds,
                "seeds_pretrain": self.pretrain, "per_seed": self.per_seed, "over_seeds": self.over_seeds}


def combine(seeds: list[int], outcomes: list, pretrain: str) -> SeedsOutcome:
    """Per-seed means and their mean ± std over seeds, from one finished outcome per seed."""
    from ichbench.evaluate.summary import _mean_std
    from ichbench.tracking.records import summary_metrics
    per_seed = []
    for s, o in zip(seeds, outcomes):
        m = summary_metrics(o.summary)
        per_seed.append({"seed": s, "parent_run_id": o.parent_run_id, "run_key": o.plan.run_key,
                         **{k: m.get(k) for k in OVER_SEEDS}})
    over = {}
    for k in OVER_SEEDS:
        vals = [p[k] for p in per_seed if p[k] is not None]
        over[k] = {**_mean_std(vals), "n": len(vals)}
    rows = [dict(r, seed=s) for s, o in zip(seeds, outcomes) for r in o.rows]
    o0 = outcomes[0]
    return SeedsOutcome(o0.plan.method.name, o0.plan.cfg.dataset, seeds, pretrain, outcomes, per_seed, over, rows)


def group_key(out: SeedsOutcome) -> str:
    """The identity of a seeds run: its seeds' run keys (the same command finds it again)."""
    return sha256_json({"runs": [p["run_key"] for p in out.per_seed], "seeds": out.seeds,
                        "seeds_pretrain": out.pretrain})


def log_seeds(tracker, resources, out: SeedsOutcome) -> str:
    """Tag each seed's parent run with its seed and log (or find again) the run of kind "seeds"."""
    from ichbench.plugins import get_registry
    from ichbench.tracking import records
    from ichbench.tracking.mlflow_store import TAG
    plan = out.outcomes[0].plan
    exp = tracker.experiment(plan.cfg.dataset)
    key = {f"{TAG}run_key": group_key(out), f"{TAG}kind": KIND}
    found = tracker.find_run(exp, key, statuses=("FINISHED",))
    run_id = found.info.run_id if found is not None else None
    if run_id is None:
        tags = {**records.base_tags(plan, get_registry().owner("methods", plan.method.name), resources), **key,
                f"{TAG}seeds": ",".join(map(str, out.seeds)), f"{TAG}seeds_pretrain": out.pretrain,
                f"{TAG}folds": ",".join(map(str, plan.folds)),
                f"{TAG}seed_runs": ",".join(p["parent_run_id"] for p in out.per_seed),
                f"{TAG}gpu_hours": f"{sum(o.gpu_hours for o in out.outcomes):.6f}"}
        run_id = tracker.start_run(exp, f"{plan.method.name}/{plan.cfg.dataset}/{plan.cfg.profile} "
                                        f"seeds {tags[f'{TAG}seeds']}", tags).info.run_id
        metrics = {}
        for k, st in out.over_seeds.items():
            metrics.update({f"{k}_over_seeds_{s}": st[s] for s in ("mean", "std") if st[s] is not None})
        for p in out.per_seed:
            metrics.update({f"{k}_seed{p['seed']}": p[k] for k in OVER_SEEDS if p[k] is not None})
        tracker.metrics(run_id, metrics)
        tracker.json_artifact(run_id, out.rows, "per_volume.json")
        tracker.text_artifact(run_id, records.per_volume_csv(out.rows, ("seed",)), "per_volume.csv")
        tracker.json_artifact(run_id, out.as_dict(), "seeds.json")
        tracker.end(run_id, "FINISHED")
    for p in out.per_seed:
        tracker.tags(p["parent_run_id"], {f"{TAG}seed": str(p["seed"]), f"{TAG}seeds_run": run_id})
    out.run_id = run_id
    return run_id


def seeds_rows(tracker, experiment_ids: list[str], parent_rows: list[dict]) -> list[dict]:
    """`ichbench runs`: a row per finished seeds run (means and std over seeds, each seed's run
    and Dice); each parent row gets its "seed" (None for a run made without --seeds)."""
    from ichbench.tracking.mlflow_store import TAG
    found = tracker.client.search_runs(
        experiment_ids, filter_string=f"tags.`{TAG}kind` = '{KIND}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"]) if experiment_ids else []
    seed_of: dict[str, int] = {}
    out = []
    for r in found:
        t, m = r.data.tags, r.data.metrics
        seeds = [int(s) for s in t.get(f"{TAG}seeds", "").split(",") if s]
        runs = [s for s in t.get(f"{TAG}seed_runs", "").split(",") if s]
        for s, rid in zip(seeds, runs):
            seed_of.setdefault(rid, s)
        over = {k: {st: m.get(f"{k}_over_seeds_{st}") for st in ("mean", "std")} for k in OVER_SEEDS}
        out.append({"run_id": r.info.run_id, "kind": KIND, "method": t.get(f"{TAG}method"),
                    "dataset": t.get(f"{TAG}dataset"), "profile": t.get(f"{TAG}profile"),
                    "folds": t.get(f"{TAG}folds"), "seeds": seeds, "seeds_pretrain": t.get(f"{TAG}seeds_pretrain"),
                    "dice_all": over["dice_all_mean"]["mean"], "dice_ich": over["dice_ich_mean"]["mean"],
                    "hd95_mm_all": over["hd95_mm_all_mean"]["mean"], "nsd_all": over["nsd_all_mean"]["mean"],
                    "volume_ccc": over["volume_ccc"]["mean"],
                    "over_seeds": over,
                    "per_seed": [{"seed": s, "run_id": rid, **{k: m.get(f"{k}_seed{s}") for k in OVER_SEEDS}}
                                 for s, rid in zip(seeds, runs)],
                    "gpu_hours": t.get(f"{TAG}gpu_hours")})
    for row in parent_rows:
        row.setdefault("kind", "parent")
        row["seed"] = seed_of.get(row["run_id"])
    return out
