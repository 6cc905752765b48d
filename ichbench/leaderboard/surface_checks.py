"""How an entry's surface metrics are checked, since they cannot be recomputed from its counts.

HD, HD95 and NSD need the masks, which an entry does not hold. What the counts and volumes do fix
is checked here (schema version 3; each rule names the volumes that break it):
- which mask was empty (`empty`) follows from the counts: the prediction is empty where
  TP + FP = 0, the truth where TP + FN = 0, and the empty-case rule then fixes the metrics
  (docs/score.md): HD = HD95 = inf and NSD = 0 where exactly one is empty, HD = HD95 = 0 and
  NSD = 1 where both are, and finite HD and HD95 everywhere else; the same masks (FP = FN = 0)
  have HD = HD95 = 0 and NSD = 1;
- HD95 <= HD, and NSD = 1 exactly where HD <= the entry's `nsd_mm` (HD is the largest surface
  distance; NSD is the share of surface within nsd_mm of the other);
- the volumes: pred_ml is 0 exactly where TP + FP = 0 and true_ml where TP + FN = 0, both
  with the same voxel volume (pred_ml / (TP + FP) = true_ml / (TP + FN)), and rvd, abs_rvd,
  vol_err_ml and abs_vol_err_ml are what pred_ml and true_ml give (`evaluate.surface.case_metrics`).
- `nsd_mm` is the config's `eval.nsd_mm` (the default, 1 mm, where the config records none).
Beyond this, the values are the submitter's: `leaderboard reproduce` compares them with the
re-run's where the fold's predictions are bit-identical (`reproductions.surface_failures`).
"""

from __future__ import annotations

import math

from ichbench.leaderboard.entries import surface_values

REL = 1e-9   # floats written by Python's json round-trip exactly; this leaves room for other writers


def _close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def expected_empty(r: dict) -> str:
    pred, truth = r["tp"] + r["fp"] == 0, r["tp"] + r["fn"] == 0
    return {(False, False): "none", (True, False): "pred", (False, True): "truth", (True, True): "both"}[(pred, truth)]


def rvd_of(pred_ml: float, true_ml: float) -> float:
    """RVD as `evaluate.surface.case_metrics` computes it: inf for a prediction where no truth is."""
    if true_ml > 0:
        return (pred_ml - true_ml) / true_ml
    return 0.0 if pred_ml == 0 else math.inf


def _row_breaks(r: dict, s: dict, nsd_mm: float) -> list[str]:
    """The rules (by name, as the messages below) this row breaks."""
    out = []
    empty = expected_empty(r)
    hd, hd95, nsd = s["hd_mm"], s["hd95_mm"], s["nsd"]
    if s["empty"] != empty:
        out.append("empty")
    elif empty in ("pred", "truth"):
        if not (math.isinf(hd) and math.isinf(hd95) and nsd == 0):
            out.append("one_empty")
    elif empty == "both" or r["fp"] + r["fn"] == 0:
        if not (hd == 0 and hd95 == 0 and nsd == 1):
            out.append("same")
    elif math.isinf(hd) or math.isinf(hd95):
        out.append("finite")
    if not out and math.isfinite(hd) and hd95 > hd * (1 + REL):
        out.append("hd95")
    if not out and math.isfinite(hd) and abs(hd - nsd_mm) > REL * max(1.0, nsd_mm):
        if (hd < nsd_mm) != (nsd == 1):
            out.append("nsd")
    pred_ml, true_ml = r["pred_ml"], r["true_ml"]
    if (pred_ml == 0) != (r["tp"] + r["fp"] == 0) or (true_ml == 0) != (r["tp"] + r["fn"] == 0) or \
            not _close(pred_ml * (r["tp"] + r["fn"]), true_ml * (r["tp"] + r["fp"])):
        out.append("ml")
    rvd = rvd_of(pred_ml, true_ml)
    if not (_close(s["rvd"], rvd) and _close(s["abs_rvd"], abs(rvd)) and _close(s["vol_err_ml"], pred_ml - true_ml)
            and _close(s["abs_vol_err_ml"], abs(pred_ml - true_ml))):
        out.append("volume")
    return out


RULES = {
    "empty": "`empty` disagrees with the counts (the prediction is empty where TP + FP = 0, the truth "
             "where TP + FN = 0)",
    "one_empty": "exactly one mask is empty but HD and HD95 are not \"inf\" with NSD 0 (the empty-case rule)",
    "same": "prediction and truth are the same (FP = FN = 0, or both empty) but HD, HD95 are not 0 with NSD 1",
    "finite": "both masks hold voxels but HD or HD95 is infinite",
    "hd95": "HD95 is larger than HD",
    "nsd": "NSD disagrees with HD and nsd_mm (NSD = 1 exactly where HD <= nsd_mm)",
    "ml": "pred_ml and true_ml disagree with the counts (zero exactly where TP + FP or TP + FN is, "
          "and one voxel volume for both)",
    "volume": "rvd, abs_rvd, vol_err_ml or abs_vol_err_ml is not what pred_ml and true_ml give",
}


def surface_problems(entry: dict) -> list[str]:
    """Reasons to reject an entry's surface metrics (empty for entries before schema version 3,
    which have none); one line per broken rule, naming its volumes."""
    from ichbench.leaderboard.checks import few   # checks.py runs these checks

    if entry.get("schema_version", 0) < 3:
        return []
    out = []
    configured = configured_nsd_mm(entry["config"])
    if configured != entry["nsd_mm"]:
        out.append(f"nsd_mm = {entry['nsd_mm']} but its config scores NSD at eval.nsd_mm = {configured}")
    broken: dict[str, list[str]] = {}
    for r in entry["per_volume"]:
        for rule in _row_breaks(r, surface_values(r), float(entry["nsd_mm"])):
            broken.setdefault(rule, []).append(r["volume_id"])
    return out + [f"surface metrics: {RULES[rule]}: {few(sorted(ids))}" for rule, ids in broken.items()]


def configured_nsd_mm(config: dict):
    """The NSD tolerance a recorded config scores at: its eval.nsd_mm, else the default (a config
    records eval only where it is not the default)."""
    from ichbench.config.models import EvalConfig
    section = config.get("eval")
    value = section.get("nsd_mm") if isinstance(section, dict) else None
    return EvalConfig().nsd_mm if value is None else value
