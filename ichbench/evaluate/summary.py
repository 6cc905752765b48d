"""Per-volume rows and their summaries: mean ± std over all volumes, ICH volumes and per subtype.

The paper reports mean ± std of the per-volume Dice, precision and recall (§2.4, Table 3) over
all volumes and over the volumes containing a hemorrhage. It does not say which std; we use the
sample standard deviation (ddof = 1, `STD_DDOF`): the volumes are a sample of patients and the
std describes the spread one should expect on others. It is `None` when fewer than 2 volumes
enter a group, and the mean is `None` for an empty group, so the summary is valid JSON.

Beside them (issue 22), each group has the surface and volume metrics of `evaluate.surface`
(`SURFACE_SUMMARY`) summarised as `ichbench score` summarises them (`metric_stats`: mean, std and
median over the finite values, `n_infinite`), and the summary the volume agreement of predicted
and true mL over all volumes. Rows from before those metrics (older fold results, old entries)
summarise too: a metric some row lacks has `None` stats in that group.
"""

from __future__ import annotations

import math

import numpy as np

from ichbench import SUBTYPES
from ichbench.evaluate.agreement import volume_agreement
from ichbench.evaluate.classes import summarize_classes
from ichbench.evaluate.metrics import METRIC_EPS
from ichbench.evaluate.surface import case_metrics

STD_DDOF = 1
METRICS = ("dice", "precision", "recall")
REQUIRED = ("volume_id", "tp", "fp", "fn", "dice", "precision", "recall", "has_ich", "subtypes",
            "pred_ml", "true_ml")
# the per-volume keys `per_volume_row` adds from `evaluate.surface.case_metrics`, named as
# `ichbench score` names them (docs/score.md); hd_mm, hd95_mm, rvd and abs_rvd can be inf
SURFACE_KEYS = ("hd_mm", "hd95_mm", "nsd", "rvd", "abs_rvd", "vol_err_ml", "abs_vol_err_ml", "empty")
# what each group summarises of them (`metric_stats`); HD and HD95 also capped when a cap is set
SURFACE_SUMMARY = ("hd_mm", "hd95_mm", "nsd", "abs_rvd", "abs_vol_err_ml")
CAPPED = ("hd_mm", "hd95_mm")
CLASS_KEYS = (*METRICS, *SURFACE_SUMMARY)   # what each class's groups summarise (subtypes task)
NSD_MM = 1.0   # the default NSD tolerance (`eval.nsd_mm`, `ichbench score --nsd-mm`)


def per_volume_row(volume_id: str, pred, truth, spacing, subtypes, eps: float = METRIC_EPS,
                   has_ich: bool | None = None, nsd_mm: float = NSD_MM) -> dict:
    """One row of per-volume results: eqs. 1–3 with TP/FP/FN over the volume, volumes in mL, and
    the surface metrics of `ichbench score` (`SURFACE_KEYS`: HD, HD95, NSD at `nsd_mm`, RVD, mL
    errors, which mask was empty), all on the grid of `pred` and `truth` with `spacing`.

    pred, truth: boolean (slices, H, W); spacing: (z, y, x) mm of those voxels; subtypes: the
    volume's subtype names, or None when unknown (Seg-CQ500 masks carry no subtype). `has_ich`
    is the volume's flag from its native-resolution mask (the store records it at ingest): a
    bleed too small to survive resampling to the scoring grid still makes an "ICH volume". When
    not given, the scored truth decides (TP + FN > 0).
    """
    m = case_metrics(pred, truth, spacing, nsd_mm, eps)
    scored = m["tp"] + m["fn"] > 0
    if has_ich is not None and scored and not has_ich:
        raise ValueError(f"volume {volume_id!r}: flagged without hemorrhage but its mask has "
                         f"{m['tp'] + m['fn']} voxels")
    return {
        "volume_id": str(volume_id),
        **{k: m[k] for k in (*METRICS, "tp", "fp", "fn")},
        "has_ich": bool(scored if has_ich is None else has_ich),
        "subtypes": None if subtypes is None else sorted(subtypes),
        "pred_ml": m["pred_ml"],
        "true_ml": m["true_ml"],
        **{k: m[k] for k in SURFACE_KEYS},
    }


def _mean_std(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None}
    a = np.asarray(values, dtype=float)
    std = float(a.std(ddof=STD_DDOF)) if a.size > STD_DDOF else None
    return {"mean": float(a.mean()), "std": std}


def metric_stats(values, cap: float | None = None) -> dict:
    """{"n", "n_infinite", "mean", "std", "median"} of one metric over volumes: mean, std (n - 1)
    and median over the finite values (None where undefined), the count of infinite ones, and
    with a `cap` also "mean_capped", the mean of every value capped there (inf counts as the cap).
    The one summary of `ichbench score`, runs and entries for metrics that can be infinite."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    out = {"n": int(len(v)), "n_infinite": int(np.isinf(v).sum()),
           "mean": float(finite.mean()) if len(finite) else None,
           "std": float(finite.std(ddof=STD_DDOF)) if len(finite) > STD_DDOF else None,
           "median": float(np.median(finite)) if len(finite) else None}
    if cap is not None:
        out["mean_capped"] = float(np.minimum(v, cap).mean()) if len(v) else None
    return out


def _group(rows: list[dict], hd_cap_mm: float | None = None) -> dict:
    out = {"n": len(rows)}
    for name in METRICS:
        out[name] = _mean_std([r[name] for r in rows])
    # Summed counts give the pooled (voxel-level) Dice too, which some papers report instead.
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    out.update(tp=tp, fp=fp, fn=fn)
    out["ml_abs_error"] = _mean_std([abs(float(r["pred_ml"]) - float(r["true_ml"])) for r in rows])
    for name in SURFACE_SUMMARY:
        # rows scored before the surface metrics existed have none: no number rather than one
        # over the rows that happen to have it
        out[name] = (metric_stats([r[name] for r in rows], hd_cap_mm if name in CAPPED else None)
                     if all(name in r for r in rows) else None)
    return out


def _validate(rows: list[dict]) -> None:
    seen = set()
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"per-volume row {i} ({r.get('volume_id', '?')}): missing {', '.join(missing)}")
        vid = r["volume_id"]
        if vid in seen:
            raise ValueError(f"per-volume rows: volume {vid!r} appears twice")
        seen.add(vid)
        for k in METRICS:
            v = float(r[k])
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"volume {vid!r}: {k} = {r[k]!r} is not in [0, 1]")
        # "ICH volume" means hemorrhage in the native ground truth. A volume with hemorrhage in the
        # scored truth (TP + FN > 0) must be one; the converse need not hold (a bleed lost when
        # the mask was resampled to the scoring grid), so only that direction is checked.
        if not bool(r["has_ich"]) and int(r["tp"]) + int(r["fn"]) > 0:
            raise ValueError(f"volume {vid!r}: has_ich={r['has_ich']} but tp + fn = {int(r['tp']) + int(r['fn'])}")
        if r["subtypes"] is not None and not isinstance(r["subtypes"], (list, tuple)):
            raise ValueError(f"volume {vid!r}: subtypes must be a list or None, got {r['subtypes']!r}")


def group_definitions(rows: list[dict]) -> list[tuple[tuple[str, ...], object]]:
    """(where in the summary, which rows) of every group: all volumes, ICH volumes, each subtype
    (the five always, in the store's label order, then any other names). Per-class groups are one
    more loop here."""
    names = list(SUBTYPES) + sorted({s for r in rows for s in (r["subtypes"] or ()) if s not in SUBTYPES})
    defs = [(("all",), lambda r: True), (("ich",), lambda r: bool(r["has_ich"]))]
    defs += [(("subtypes", s), lambda r, s=s: bool(r["subtypes"]) and s in r["subtypes"]) for s in names]
    return defs


def _class_stats(values, key: str, hd_cap_mm: float | None) -> dict:
    """One metric of one class group, summarised as the binary groups summarise it."""
    if key in METRICS:
        return {**_mean_std(values), "n": len(values)}
    return metric_stats(values, hd_cap_mm if key in CAPPED else None)


def summarize(per_volume: list[dict], nsd_mm: float | None = None, hd_cap_mm: float | None = None) -> dict:
    """Mean ± std of Dice/precision/recall over all volumes, ICH volumes and each subtype, with
    the surface metrics' `metric_stats` and the volume agreement.

    Returns {"std_ddof", "all", "ich", "subtypes": {name: group}, "subtypes_unknown", "nsd_mm",
    "hd_cap_mm", "volume_agreement"}, each group {"n", "dice": {"mean", "std"}, "precision": ...,
    "recall": ..., "tp", "fp", "fn", "ml_abs_error", "hd_mm": metric_stats or None, "hd95_mm",
    "nsd", "abs_rvd", "abs_vol_err_ml"}. A subtype group holds the volumes whose `subtypes` list
    names it (n = 0 when none does). `subtypes_unknown` counts volumes whose subtypes are not known
    (None). `nsd_mm` is the tolerance the rows' NSD was computed at (as the caller says), and
    `hd_cap_mm` the cap of "mean_capped" (None: no capped means). `volume_agreement` is
    `evaluate.agreement.volume_agreement` of predicted vs true mL over all volumes.

    Rows of the subtypes task (each with `classes`, `evaluate.classes`) add "classes" ({name:
    {"all"|"present": {metric: stats}}}, present = the volumes whose truth holds the class) and
    "macro" (the unweighted mean over classes of each metric's mean, per group):
    `evaluate.classes.summarize_classes` over `CLASS_KEYS`.
    """
    rows = list(per_volume)
    _validate(rows)
    out: dict = {"std_ddof": STD_DDOF}
    for where, member in group_definitions(rows):
        node = out
        for key in where[:-1]:
            node = node.setdefault(key, {})
        node[where[-1]] = _group([r for r in rows if member(r)], hd_cap_mm)
    out["subtypes_unknown"] = sum(1 for r in rows if r["subtypes"] is None)
    if rows and all("classes" in r for r in rows):   # the subtypes task (`train.task`)
        out.update(summarize_classes(rows, CLASS_KEYS, lambda values, key: _class_stats(values, key, hd_cap_mm)))
    out.update(nsd_mm=nsd_mm, hd_cap_mm=hd_cap_mm,
               volume_agreement=volume_agreement([float(r["pred_ml"]) for r in rows],
                                                 [float(r["true_ml"]) for r in rows]))
    return out
