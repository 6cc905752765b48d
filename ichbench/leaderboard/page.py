"""The self-contained `index.html`, rendered from the jinja2 templates in `templates/`.

Python prepares what the page shows (a view model of plain dicts: labels, formatted numbers,
the details line, the p-value cells); the templates hold all markup, the CSS and the sorting JS.
The environment escapes every value (autoescape) and fails on a name the view model lacks
(StrictUndefined). Nothing is marked safe: the only non-text values, the figures, are base64 PNGs,
which escaping leaves as they are. Everything reads with JavaScript off; no external URL appears.
"""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from ichbench.leaderboard import class_table, plots
from ichbench.leaderboard.model import GROUP_TITLES, METRIC_TITLES, SURFACE_SHOWN, DatasetView, PMatrix, Row
from ichbench.leaderboard.schema import EXTERNAL_MARK, METRICS
from ichbench.leaderboard.stats import N_BOOT

GROUP_HEADINGS = {"all": "All volumes", "ich": "ICH volumes"}
# (title, unit, factor) of each surface column: distances in mm, NSD and |RVD| in percent
SURFACE_TITLES = {"hd95_mm": ("HD95", "mm", 1.0), "hd_mm": ("HD", "mm", 1.0), "nsd": ("NSD", "%", 100.0),
                  "abs_rvd": ("|RVD|", "%", 100.0)}


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_p(p) -> str:
    if p is None:
        return "·"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_class(p) -> str:
    if p is None:
        return "na"
    return "p0" if p < 0.001 else "p1" if p < 0.01 else "p2" if p < 0.05 else "p3"


@cache
def _environment() -> Environment:
    # trim_blocks/lstrip_blocks: a line holding only a block tag leaves no blank line behind
    return Environment(loader=PackageLoader("ichbench.leaderboard", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def _ci(ci) -> tuple[str, str] | None:
    return None if ci is None else (fmt(ci[0]), fmt(ci[1]))


def _metric_cell(row: Row, group: str, metric: str) -> dict:
    s = row.groups[group][metric]
    return {"value": "" if s["mean"] is None else f"{s['mean']:.6f}", "mean": fmt(s["mean"]),
            "best": f"{group}.{metric}" in row.bold, "std": fmt(s["std"]), "ci": _ci(s["ci"]),
            "seeds": _over_seeds(s.get("seeds"))}


def _over_seeds(s: dict | None) -> str | None:
    """An entry over several seeds (leaderboard.seeds): the mean ± std over seeds of its per-seed means."""
    if not s or s["mean"] is None:
        return None
    return f"{s['n']} seeds: {fmt(s['mean'])}" + ("" if s["std"] is None else f" ± {fmt(s['std'])}")


def _reproduction(rep: dict) -> str:
    folds = rep["folds"]
    which = "all folds" if rep.get("k") and folds == list(range(rep["k"])) else \
        f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}"
    same = "; identical predictions" if rep.get("identical") else ""
    return (f"{rep['mark']} by {rep['who']} on {rep['date'][:10]} ({which}; {rep['hardware']}; "
            f"max |ΔDice| {100 * rep['max_delta']:.2f} points{same})")


def _details(row: Row) -> str:
    if row.published:
        return "Spahr et al. 2023, Table 3"
    if row.kind == "reference":
        return "an empty prediction on every volume; from canonical.json's volume counts; not a method"
    bits = [f"profile {row.profile or '?'}", f"k = {row.k}"]
    if row.external:
        bits.insert(0, f"{EXTERNAL_MARK}: ichbench scored its predictions, not its training")
    if row.icm_source:
        bits.append(f"ICM: {row.icm_source}")
    if row.seeds:
        bits.append(f"seeds {', '.join(map(str, row.seeds['seeds']))} (pretraining {row.seeds['pretrain']})")
    if row.labeled and row.labeled["declared"]:
        bits.append(f"{row.labeled['n_volumes']:.1f} labeled vol./fold")
    if row.plugin and row.plugin.get("distribution"):
        bits.append(f"{row.plugin['distribution']} {row.plugin.get('version') or ''}".strip())
    if (row.reproduction or {}).get("who"):
        bits.append(_reproduction(row.reproduction))
    if row.code and row.code.get("commit"):
        bits.append(f"commit {str(row.code['commit'])[:10]}")
    if row.code and row.code.get("url"):
        bits.append(f"code: {row.code['url']}")  # printed, not linked: the page holds no external URL
    if row.date:
        bits.append(row.date[:10])
    return " · ".join(bits)


def surface_cell(stats: dict | None, factor: float, nsd_mm: float | None = None) -> dict:
    """A surface metric over a group: mean ± std over the finite values, the count of infinite ones
    where nonzero ("–" where unknown: a published row, an entry before schema version 3)."""
    if stats is None:
        return {"value": "", "mean": "–", "std": None, "inf": 0, "tau": None}
    mean = None if stats["mean"] is None else factor * stats["mean"]
    std = None if stats["std"] is None else factor * stats["std"]
    return {"value": "" if mean is None else f"{mean:.6f}", "mean": fmt(mean),
            "std": None if std is None else fmt(std), "inf": stats["n_infinite"],
            "tau": None if nsd_mm is None else f"{nsd_mm:g}"}


def _agreement(a: dict | None) -> list[dict]:
    a = a or {}
    loa = (a.get("loa_low_ml"), a.get("loa_high_ml"))
    return [{"value": "" if a.get(k) is None else f"{a[k]:.6f}", "text": fmt(a.get(k), d),
             "loa": f"{fmt(loa[0])} to {fmt(loa[1])}" if k == "bias_ml" and None not in loa else None}
            for k, d in (("ccc", 3), ("icc_2_1", 3), ("bias_ml", 2))]


def _surface_row(row: Row, groups: list) -> dict:
    cells = [surface_cell(row.surface[g][k], SURFACE_TITLES[k][2], row.nsd_mm if k == "nsd" else None)
             for g in groups for k in SURFACE_SHOWN]
    return {"kind": row.kind, "label": row.label, "cells": cells, "agreement": _agreement(row.agreement)}


def _floor(view: DatasetView) -> dict | None:
    if view.floor is None:
        return None
    out = _row(view.floor, view.groups)
    out["surface"] = _surface_row(view.floor, view.groups)
    gap = view.floor_gap
    out["gap"] = None if gap is None else \
        f"{100 * gap['all']:.2f} points over all volumes, {100 * gap['ich']:.2f} over ICH volumes"
    return out


def _row(row: Row, groups: list) -> dict:
    mark = (row.reproduction or {}).get("mark", "self-reported")
    return {"kind": row.kind, "published": row.published, "label": row.label,
            "mark": mark, "mark_class": mark.replace(" ", "-"),
            "cells": [_metric_cell(row, g, m) for g in groups for m in METRICS],
            "gpu_value": "" if row.gpu_hours is None else f"{row.gpu_hours:.6f}",
            "gpu_text": fmt(row.gpu_hours), "details": _details(row)}


def _p_cell(mat: PMatrix, i: int, j: int) -> dict | None:
    """Welch below the diagonal, the paired test above; None on the diagonal."""
    if i == j:
        return None
    if i > j:
        p, tip = mat.welch[i][j], "Welch t-test (unpaired, unadjusted)"
    else:
        p = mat.paired[i][j]
        tip = (f"paired Wilcoxon over {mat.n_shared[i][j]} shared volumes, Holm-adjusted"
               if p is not None else "no paired test: a published row has no per-volume values")
    return {"cls": p_class(p), "tip": tip, "text": fmt_p(p)}


def _matrix(mat: PMatrix) -> dict:
    n = len(mat.labels)
    rows = [{"label": label, "cells": [_p_cell(mat, i, j) for j in range(n)]} for i, label in enumerate(mat.labels)]
    return {"id": f"{mat.group}-{mat.metric}", "labels": mat.labels, "rows": rows,
            "title": f"{METRIC_TITLES[mat.metric]}, {GROUP_TITLES[mat.group]}"}


def _pvalues(view: DatasetView) -> list:
    if len(view.rows) < 2:
        return []
    return [{"heading": GROUP_HEADINGS[g], "matrices": [_matrix(m) for m in view.matrices if m.group == g]}
            for g in view.groups]


def _efficiency(view: DatasetView) -> dict | None:
    if not view.label_efficiency:
        return None
    points = [{"label": p["label"], "n_volumes": f"{p['n_volumes']:.1f}",
               "percent": fmt(None if p["fraction"] is None else 100 * p["fraction"], 1),
               "value": f"{p['dice']:.6f}", "dice": fmt(p["dice"]), "ci": _ci(p["ci"])}
              for p in view.label_efficiency]
    return {"plot": plots.label_efficiency(view), "points": points}


def _protocol(view: DatasetView) -> str:
    scored = "every volume is scored once, in its test fold."
    if view.paper_k is not None:
        text = f"Paper protocol: {view.paper_k}-fold cross-validation; {scored}"
    elif view.protocol_k is not None:
        text = (f"Protocol: {view.protocol_k}-fold cross-validation (from canonical.json; the paper does not "
                f"cover this dataset); {scored}")
    else:
        text = f"Protocol: k-fold cross-validation; {scored}"
    others = [k for k in view.entry_ks if k != (view.paper_k or view.protocol_k)]
    if others:
        text += f" Entries scored with k = {', '.join(map(str, others))} are shown too."
    return text


def _dataset(view: DatasetView) -> dict:
    return {"name": view.name, "title": view.title, "protocol": _protocol(view),
            "n_published": sum(r.published for r in view.rows), "n_entries": len(view.entries),
            "left_out": "; ".join(view.left_out), "one_group": view.groups == ["all"],
            "head": [{"metric": METRIC_TITLES[m], "group": GROUP_TITLES[g]} for g in view.groups for m in METRICS],
            "rows": [_row(r, view.groups) for r in view.rows], "floor": _floor(view),
            "surface_head": [{"metric": SURFACE_TITLES[k][0], "unit": SURFACE_TITLES[k][1], "group": GROUP_TITLES[g]}
                             for g in view.groups for k in SURFACE_SHOWN],
            "surface_rows": [_surface_row(r, view.groups) for r in view.rows],
            "classes": class_table.table(view),   # entries of task subtypes: Dice per class
            "agreement_plots": plots.volume_agreement(view),
            "boxplot": plots.dice_boxplots(view), "efficiency": _efficiency(view), "pvalues": _pvalues(view)}


def train_test(matrix: dict) -> list[dict]:
    """The page's train × test tables of `evaluate.matrix.train_test_matrix` (Dice in percent)."""
    out = []
    for method, rows in sorted(matrix.items()):
        columns = sorted({t for cells in rows.values() for t in cells})
        out.append({"method": method, "columns": columns, "rows": [
            {"train": train, "cells": [_traintest_cell(cells.get(t)) for t in columns]}
            for train, cells in sorted(rows.items())]})
    return out


def _traintest_cell(c: dict | None) -> dict:
    if c is None or c.get("dice_all") is None:
        return {"kind": "none", "text": "–"}
    text = fmt(100 * c["dice_all"], 1)
    if c.get("fold_mean") is not None:
        text += f" (folds {fmt(100 * c['fold_mean'], 1)})"
    if c.get("macro_dice_pct") is not None:   # an entry of task subtypes: the mean of its class Dice [%]
        text += f"; macro {fmt(c['macro_dice_pct'], 1)}"
    return {"kind": "diagonal" if c["kind"] == "cross-validation" else "external", "text": text}


def render_page(views: list[DatasetView], matrix: dict | None = None) -> str:
    return _environment().get_template("page.html").render(
        datasets=[_dataset(v) for v in views], n_boot=N_BOOT, train_test=train_test(matrix or {}))
