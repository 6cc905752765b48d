"""Per-volume rows and their summaries: mean ± std over all volumes, ICH volumes and per subtype.

The paper reports mean ± std of the per-volume Dice, precision and recall (§2.4, Table 3) over
all volumes and over the volumes containing a hemorrhage. It does not say which std; we use the
sample standard deviation (ddof = 1, `STD_DDOF`): the volumes are a sample of patients and the
std describes the spread one should expect on others. It is `None` when fewer than 2 volumes
enter a group, and the mean is `None` for an empty group, so the summary is valid JSON.
"""

from __future__ import annotations

import math

import numpy as np

from ichbench import SUBTYPES
from ichbench.evaluate.metrics import METRIC_EPS, volume_metrics, volume_ml

STD_DDOF = 1
METRICS = ("dice", "precision", "recall")
REQUIRED = ("volume_id", "tp", "fp", "fn", "dice", "precision", "recall", "has_ich", "subtypes",
            "pred_ml", "true_ml")


def per_volume_row(volume_id: str, pred, truth, spacing, subtypes, eps: float = METRIC_EPS,
                   has_ich: bool | None = None) -> dict:
    """One row of per-volume results: eqs. 1–3 with TP/FP/FN over the volume, plus volumes in mL.

    pred, truth: boolean (slices, H, W); spacing: (z, y, x) mm of those voxels; subtypes: the
    volume's subtype names, or None when unknown (Seg-CQ500 masks carry no subtype). `has_ich`
    is the volume's flag from its native-resolution mask (the store records it at ingest): a
    bleed too small to survive resampling to the scoring grid still makes an "ICH volume". When
    not given, the scored truth decides (TP + FN > 0).
    """
    m = volume_metrics(pred, truth, eps)
    scored = m["tp"] + m["fn"] > 0
    if has_ich is not None and scored and not has_ich:
        raise ValueError(f"volume {volume_id!r}: flagged without hemorrhage but its mask has "
                         f"{m['tp'] + m['fn']} voxels")
    return {
        "volume_id": str(volume_id),
        **m,
        "has_ich": bool(scored if has_ich is None else has_ich),
        "subtypes": None if subtypes is None else sorted(subtypes),
        "pred_ml": volume_ml(pred, spacing),
        "true_ml": volume_ml(truth, spacing),
    }


def _mean_std(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None}
    a = np.asarray(values, dtype=float)
    std = float(a.std(ddof=STD_DDOF)) if a.size > STD_DDOF else None
    return {"mean": float(a.mean()), "std": std}


def _group(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for name in METRICS:
        out[name] = _mean_std([r[name] for r in rows])
    # Summed counts give the pooled (voxel-level) Dice too, which some papers report instead.
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    out.update(tp=tp, fp=fp, fn=fn)
    out["ml_abs_error"] = _mean_std([abs(float(r["pred_ml"]) - float(r["true_ml"])) for r in rows])
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


def summarize(per_volume: list[dict]) -> dict:
    """Mean ± std of Dice/precision/recall over all volumes, ICH volumes and each subtype.

    Returns {"std_ddof", "all", "ich", "subtypes": {name: group}, "subtypes_unknown"}, each group
    {"n", "dice": {"mean", "std"}, "precision": ..., "recall": ..., "tp", "fp", "fn",
    "ml_abs_error"}. A subtype group holds the volumes whose `subtypes` list names it; the five
    subtypes always appear (n = 0 when absent), in the store's label order, then any other names.
    `subtypes_unknown` counts volumes whose subtypes are not known (None).
    """
    rows = list(per_volume)
    _validate(rows)
    names = list(SUBTYPES) + sorted({s for r in rows for s in (r["subtypes"] or ()) if s not in SUBTYPES})
    return {
        "std_ddof": STD_DDOF,
        "all": _group(rows),
        "ich": _group([r for r in rows if r["has_ich"]]),
        "subtypes": {s: _group([r for r in rows if r["subtypes"] and s in r["subtypes"]]) for s in names},
        "subtypes_unknown": sum(1 for r in rows if r["subtypes"] is None),
    }
