"""Per-class scoring of label images: one binary mask per class, their union, and macro means.

A label image holds 0 for background and one integer id per class (BHSD: 1 EDH, 2 IPH, 3 IVH, 4 SAH,
5 SDH). Each listed class is scored as its own binary mask (prediction == id against truth == id)
with every metric of `surface.case_metrics`, under the same empty-case rule: a class absent from
both scores Dice 1, HD 0, NSD 1, exactly as a healthy volume does in the binary task. The union of
the listed classes (any listed id) is the binary hemorrhage mask the paper scores; its metrics stay
the case's top-level ones, so a per-class result is the binary result plus a `classes` table.

Summaries per class are taken over all cases and over the cases whose truth holds the class
("present"); the macro mean of a metric is the unweighted mean of the per-class means (classes
with no finite value, e.g. absent from every truth in "present", are left out and counted).
Adding a class is one more entry of the label list, nothing else.
"""

from __future__ import annotations

import re

import numpy as np

from ichbench.evaluate.surface import case_metrics

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def parse_labels(spec: str) -> dict[str, int]:
    """`--labels` text: "1,2,3" (classes named by their ids) or "EDH=1,IPH=2,..." -> {name: id}
    in the order given. ValueError (one line) for an empty, repeated, non-integer or zero id."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            raise ValueError(f"{spec!r}: an empty label in the list")
        name, _, value = part.rpartition("=")
        name = name.strip() or value.strip()
        try:
            ident = int(value.strip())
        except ValueError:
            raise ValueError(f"{part!r}: a label id must be an integer (e.g. 1 or EDH=1)") from None
        if ident <= 0:
            raise ValueError(f"{part!r}: label id {ident} is not a class (0 is background; ids are >= 1)")
        if "=" in part and not _NAME.match(name):
            raise ValueError(f"{part!r}: a class name is a letter then up to 31 letters, digits, '_' or '-'")
        if name in out or ident in out.values():
            raise ValueError(f"{part!r}: class {name} / id {ident} is listed twice")
        out[name] = ident
    return out


def label_problem(raw: np.ndarray, labels: dict[str, int]) -> str | None:
    """Why `raw` is not a label image of these classes (values other than 0 and the ids), or None."""
    allowed = np.asarray([0, *labels.values()])
    bad = ~np.isin(raw, allowed)
    if not bad.any():
        return None
    values = np.unique(raw[bad])
    shown = ", ".join(f"{v:g}" for v in values[:5].astype(float)) + (", ..." if len(values) > 5 else "")
    ids = ", ".join(str(i) for i in labels.values())
    return f"{int(bad.sum())} voxels hold values other than 0 and the labels {ids} ({shown})"


def class_case_metrics(pred_map, truth_map, labels: dict[str, int], spacing, nsd_mm: float = 1.0) -> dict:
    """The union's metrics (`case_metrics` keys) plus {"classes": {name: that class's metrics}}."""
    pred_map, truth_map = np.asarray(pred_map), np.asarray(truth_map)
    ids = list(labels.values())
    out = case_metrics(np.isin(pred_map, ids), np.isin(truth_map, ids), spacing, nsd_mm)
    out["classes"] = per_class_metrics(pred_map, truth_map, labels, spacing, nsd_mm)
    return out


def per_class_metrics(pred_map, truth_map, labels: dict[str, int], spacing, nsd_mm: float = 1.0) -> dict:
    """{name: `case_metrics` of prediction == id against truth == id} for each listed class."""
    pred_map, truth_map = np.asarray(pred_map), np.asarray(truth_map)
    return {name: case_metrics(pred_map == i, truth_map == i, spacing, nsd_mm) for name, i in labels.items()}


def class_row_fields(pred_map, truth_map, class_names, spacing, nsd_mm: float = 1.0) -> dict:
    """What a per-volume row of the subtypes task adds to its union's metrics: `classes` (each
    class's `case_metrics`, class k being id k of `class_names`) and `pred_labels_sha256`, the
    digest of the predicted label map. Runs (`train.predict.scored_row`) and another tool's label
    maps (`leaderboard.external`) are scored with it."""
    from ichbench.evaluate.digest import label_map_digest
    labels = {name: k for k, name in enumerate(class_names, start=1)}
    return {"classes": per_class_metrics(pred_map, truth_map, labels, spacing, nsd_mm),
            "pred_labels_sha256": label_map_digest(pred_map)}


def summarize_classes(cases: list[dict], keys, stats) -> dict:
    """{"classes": {name: {"all": {key: stats}, "present": {...}}}, "macro": {"all"|"present":
    {key: {"mean", "n_classes"}}}} of cases carrying `classes`; `stats(values, key)` gives one
    metric's summary dict with a "mean" (the same statistics as the binary summary)."""
    names = list(cases[0]["classes"]) if cases else []
    per_class = {}
    for name in names:
        rows = [c["classes"][name] for c in cases]
        groups = {"all": rows, "present": [r for r in rows if r["true_ml"] > 0]}
        per_class[name] = {g: {k: stats([r[k] for r in rs], k) for k in keys} for g, rs in groups.items()}
    macro = {}
    for g in ("all", "present"):
        macro[g] = {}
        for k in keys:
            means = [per_class[n][g][k]["mean"] for n in names if per_class[n][g][k]["mean"] is not None]
            macro[g][k] = {"mean": float(np.mean(means)) if means else None, "n_classes": len(means)}
    return {"classes": per_class, "macro": macro}
