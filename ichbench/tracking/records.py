"""What goes into each MLflow run: tags, params, curves, metrics and artifacts."""

from __future__ import annotations

import csv
import io
import platform

from ichbench import __version__
from ichbench.plugins.provenance import code_commit, source_commit
from ichbench.tracking.mlflow_store import TAG, Tracker

from ichbench.evaluate.summary import SURFACE_KEYS, SURFACE_SUMMARY

# infinite values are written `inf` (Python's csv writes floats with repr); older rows lack the
# surface columns and leave them empty
FOLD_COLUMNS = ("volume_id", "fold", "tp", "fp", "fn", "dice", "precision", "recall", "has_ich",
                "subtypes", "pred_ml", "true_ml", *SURFACE_KEYS)
# the volume agreement's MLflow names (docs/architecture.md)
AGREEMENT_METRICS = {"ccc": "volume_ccc", "icc_2_1": "volume_icc_2_1", "bias_ml": "volume_bias_ml",
                     "loa_low_ml": "volume_loa_low_ml", "loa_high_ml": "volume_loa_high_ml"}
INFINITE_COUNTED = ("hd_mm", "abs_rvd")   # HD95 is infinite exactly where HD is


def git_commit() -> str:
    """ichbench's own commit (of the checkout it runs from), "unknown" outside one."""
    import ichbench
    return source_commit(ichbench.__file__) or "unknown"


def hardware(resources: dict) -> str:
    gpus = resources.get("GPU", 0)
    gpu = ""
    if gpus:
        try:
            import torch
            gpu = f", {int(gpus)}x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f", {gpus:g} GPU"
        except Exception:  # noqa: BLE001
            gpu = f", {gpus:g} GPU"
    return f"{platform.machine()} {int(resources.get('CPU', 0))} CPU{gpu}"


def base_tags(plan, owner, resources: dict) -> dict[str, str]:
    return {
        f"{TAG}method": plan.method.name, f"{TAG}dataset": plan.cfg.dataset, f"{TAG}profile": plan.cfg.profile,
        f"{TAG}run_key": plan.run_key, f"{TAG}dataset_fingerprint": plan.store.fingerprint,
        f"{TAG}split_hash": plan.split["hash"], f"{TAG}k": str(plan.split["k"]),
        f"{TAG}version": __version__, f"{TAG}plugin": owner.name,
        f"{TAG}plugin_dist": owner.distribution or "", f"{TAG}plugin_version": owner.version or "",
        # git_commit is ichbench's; plugin_commit the method's own code (ichbench's for a built-in)
        f"{TAG}git_commit": git_commit(), f"{TAG}plugin_commit": code_commit(plan.method, owner.distribution) or "",
        f"{TAG}hardware": hardware(resources),
        f"{TAG}pretrain_dataset": plan.cfg.pretrain_dataset, f"{TAG}pretrain_role": plan.cfg.pretrain_role,
        **({f"{TAG}icm_source": plan.cfg.icm.source} if plan.cfg.icm is not None else {}),
        **({f"{TAG}icm_model": plan.icm.key} if plan.icm is not None else {}),
        # plugin API 2: the method trained its own model, which `ichbench predict` cannot apply
        **({f"{TAG}own_finetuning": "true"} if plan.method.owns_finetuning else {}),
    }


def curves(tracker: Tracker, run_id: str, history: list[dict]) -> None:
    for rec in history:
        values = {"loss": rec.get("loss"), "lr": rec.get("lr")}
        if rec.get("val_loss") is not None:
            values["val_loss"] = rec["val_loss"]
        tracker.metrics(run_id, values, step=int(rec["epoch"]))


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flatten a `summarize()` result into MLflow metric names: dice_all_mean, recall_ich_std, ...;
    the surface metrics' means over finite values (hd95_mm_all_mean, nsd_ich_mean, ...), the counts
    of infinite HDs and |RVD|s (hd_mm_all_n_infinite), capped means when a cap was set, and the
    volume agreement (volume_ccc, ...). Statistics a summary lacks (older results) are not logged."""
    out: dict[str, float] = {}
    groups = {"all": summary["all"], "ich": summary["ich"], **{f"sub_{k}": v for k, v in summary["subtypes"].items()}}
    for gname, g in groups.items():
        out[f"n_{gname}"] = g["n"]
        for metric in ("dice", "precision", "recall"):
            for stat in ("mean", "std"):
                val = (g.get(metric) or {}).get(stat)
                if val is not None:
                    out[f"{metric}_{gname}_{stat}"] = val
        for metric in SURFACE_SUMMARY:
            stats = g.get(metric) or {}
            for stat in ("mean", "mean_capped") + (("n_infinite",) if metric in INFINITE_COUNTED else ()):
                if stats.get(stat) is not None:
                    out[f"{metric}_{gname}_{stat}"] = stats[stat]
    out.update(class_metrics(summary))
    agreement = summary.get("volume_agreement") or {}
    out.update({name: agreement[k] for k, name in AGREEMENT_METRICS.items() if agreement.get(k) is not None})
    if summary.get("nsd_mm") is not None:
        out["nsd_tolerance_mm"] = summary["nsd_mm"]
    if summary.get("hd_cap_mm") is not None:
        out["hd_cap_mm"] = summary["hd_cap_mm"]
    return out


def class_metrics(summary: dict) -> dict[str, float]:
    """The subtypes task's per-class means (`evaluate.classes.summarize_classes`): for each class
    and group (all volumes, volumes whose truth holds the class) dice_class_<name>_<group>_mean,
    and the same for the other metrics; the macro means as dice_macro_<group>_mean. None for a
    binary run's summary, which has no `classes`."""
    out: dict[str, float] = {}
    for name, groups in (summary.get("classes") or {}).items():
        for group, metrics in groups.items():
            for metric, stats in metrics.items():
                if stats.get("mean") is not None:
                    out[f"{metric}_class_{name}_{group}_mean"] = stats["mean"]
    for group, metrics in (summary.get("macro") or {}).items():
        for metric, stats in metrics.items():
            if stats.get("mean") is not None:
                out[f"{metric}_macro_{group}_mean"] = stats["mean"]
    return out


def classes_from_metrics(metrics: dict) -> dict | None:
    """What `class_metrics` logged, read back for `ichbench runs --json`: {name: {"<metric>_<group>":
    mean}} per class and "macro" likewise (Dice, precision, recall as fractions, HD95/HD in mm,
    NSD as a fraction); None for a run without classes."""
    from ichbench.evaluate.summary import CLASS_KEYS
    out: dict[str, dict] = {}
    for name, value in metrics.items():
        for key in CLASS_KEYS:
            for kind in ("class_", "macro_"):
                head = f"{key}_{kind}"
                if not (name.startswith(head) and name.endswith("_mean")):
                    continue
                rest = name[len(head):-len("_mean")]
                who, _, group = rest.rpartition("_") if kind == "class_" else ("macro", "", rest)
                if group in ("all", "present") and who:
                    out.setdefault(who, {})[f"{key}_{group}"] = value
    return out or None


def agreement_plot(tracker: Tracker, run_id: str, rows: list[dict]) -> None:
    """The volume agreement figure (`evaluate.agreement_plot`) as the run's volume_agreement.png."""
    from ichbench.evaluate.agreement_plot import agreement_png
    png = agreement_png([r["pred_ml"] for r in rows], [r["true_ml"] for r in rows],
                        f"hemorrhage volume, {len(rows)} volumes")
    if png is not None:
        tracker.bytes_artifact(run_id, png, "volume_agreement.png")


def per_volume_csv(rows: list[dict], first: tuple[str, ...] = ()) -> str:
    """The rows as CSV; `first`: columns before the usual ones (the seed of a seeds run's rows)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*first, *FOLD_COLUMNS], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "subtypes": "|".join(r["subtypes"]) if r.get("subtypes") else ""})
    return buf.getvalue()
