"""The table printed at the end of `ichbench run`: this run's numbers beside the paper's Table 3.

Wide consoles get one table with a row per source; narrow ones (80 columns) one small table per
method, with the method as its title, so every mean keeps its ± std. The paper's Dice stays the
headline; under it, this run's surface distances (mm), NSD (percent) and the agreement of predicted
and true hemorrhage volume (issue 22), which the paper does not report.
"""

from __future__ import annotations


from rich.console import Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit

TITLE = "Volume-level results: percent, mean ± std over volumes"
METRIC_COLUMNS = ("n", "Dice all", "Dice ICH", "Prec. all", "Recall all")
# inf: volumes with exactly one mask empty (HD infinite, left out of the means)
SURFACE_TITLE = "This run, all volumes: HD in mm, NSD in percent (finite values); predicted vs true mL"
SURFACE_COLUMNS = ("HD95", "HD", "inf", "NSD", "CCC", "ICC(2,1)", "bias", "95% limits")


def published_rows(method: str) -> dict[str, dict]:
    """The paper's rows for a method, by dataset (empty if the method is not in the paper), from the
    tables shipped in the package."""
    from ichbench.leaderboard.published import packaged_rows
    return {r.dataset: r.groups for r in packaged_rows() if r.method == method}


def _fmt(group: dict | None, metric: str, scale: float = 100.0) -> str:
    if not group or not group.get(metric) or group[metric].get("mean") is None:
        return "—"
    m, s = group[metric]["mean"] * scale, group[metric].get("std")
    return f"{m:.1f}±{s * scale:.1f}" if s is not None else f"{m:.1f}"


def _stat(stats: dict | None, scale: float = 1.0) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    m, s = stats["mean"] * scale, stats.get("std")
    return f"{m:.1f}±{s * scale:.1f}" if s is not None else f"{m:.1f}"


def _num(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def surface_numbers(summary: dict) -> list[str]:
    """SURFACE_COLUMNS of a run's summary ("—" for what an older summary lacks)."""
    a, va = summary.get("all") or {}, summary.get("volume_agreement") or {}
    hd = a.get("hd_mm") or {}
    limits = ("—" if va.get("loa_low_ml") is None
              else f"[{va['loa_low_ml']:.2f}, {va['loa_high_ml']:.2f}]")
    return [_stat(a.get("hd95_mm")), _stat(hd), "—" if not hd else str(hd["n_infinite"]),
            _stat(a.get("nsd"), 100.0), _num(va.get("ccc"), 3), _num(va.get("icc_2_1"), 3),
            _num(va.get("bias_ml"), 2), limits]


def surface_lines(summary: dict) -> list[str]:
    """The same numbers as two lines of at most 80 columns (the stacked layout)."""
    hd95, hd, inf, nsd, ccc, icc, bias, limits = surface_numbers(summary)
    lines = [f"  HD95 {hd95} mm, HD {hd} mm ({inf} inf), NSD {nsd} %",
             f"  mL: CCC {ccc}, ICC(2,1) {icc}, bias {bias} mL, 95% limits {limits}"]
    a, cap = summary.get("all") or {}, summary.get("hd_cap_mm")
    if cap is not None and a.get("hd_mm"):   # eval.hd_cap_mm: an infinite HD counts as the cap
        lines.append(f"  HD95 / HD with each capped at {cap:g} mm: {_num(a['hd95_mm'].get('mean_capped'), 1)}"
                     f" / {_num(a['hd_mm'].get('mean_capped'), 1)} mm")
    return lines


def _numbers(summary: dict, scale: float) -> list[str]:
    return [str(summary["all"]["n"]), _fmt(summary["all"], "dice", scale), _fmt(summary["ich"], "dice", scale),
            _fmt(summary["all"], "precision", scale), _fmt(summary["all"], "recall", scale)]


def _sources(o) -> list[tuple[str, str, list[str]]]:
    """(dataset, source, numbers) rows of one outcome: this run, then the paper's rows (percent already)."""
    rows = [(o.plan.cfg.dataset, f"this run, {o.plan.cfg.profile}", _numbers(o.summary, 100.0))]
    rows += [(pds, "paper", _numbers(row, 1.0)) for pds, row in sorted(published_rows(o.plan.method.name).items())]
    from ichbench.orchestrate.references import reference_rows   # e.g. INSTANCE's challenge test set
    rows += reference_rows(o.plan.cfg.dataset)
    if getattr(o, "rows", None):   # the reference: what predicting nothing scores on these volumes
        from ichbench.leaderboard.floor import empty_prediction
        rows.append((o.plan.cfg.dataset, "predicts nothing", _numbers(empty_prediction(o.rows), 100.0)))
    for ds, s in (getattr(o, "external", None) or {}).items():   # --test-on (`orchestrate.external`)
        rows += [(ds, f"external, mean of {len(o.plan.folds)} fold models", _numbers(s["folds"], 100.0)),
                 (ds, "external, ensemble", _numbers(s["ensemble"], 100.0))]
    return rows


def _metric_columns(t: Table) -> None:
    for col in METRIC_COLUMNS:
        t.add_column(col, justify="right", no_wrap=True)


def surface_table(outcomes) -> Table:
    t = Table(title=SURFACE_TITLE)
    t.add_column("method", no_wrap=True)
    t.add_column("dataset", no_wrap=True)
    for col in SURFACE_COLUMNS:
        t.add_column(col, justify="right", no_wrap=True)
    for o in outcomes:
        t.add_row(o.plan.method.name, o.plan.cfg.dataset, *surface_numbers(o.summary))
    return t


def wide_table(outcomes) -> Table:
    t = Table(title=TITLE)
    t.add_column("method", no_wrap=True)
    t.add_column("dataset (source)", no_wrap=True)
    _metric_columns(t)
    for o in outcomes:
        for i, (ds, source, numbers) in enumerate(_sources(o)):
            t.add_row(o.plan.method.name if i == 0 else "", f"{ds} ({source})", *numbers)
    return t


def stacked(outcomes) -> Group:
    blocks = [Text(TITLE, style="bold")]
    for o in outcomes:
        t = Table(title=f"{o.plan.method.name} on {o.plan.cfg.dataset}", title_justify="left")
        t.add_column("source")
        _metric_columns(t)
        for ds, source, numbers in _sources(o):
            t.add_row(source if source != "paper" else f"paper, {ds}", *numbers)
        blocks.append(t)
        blocks += [Text(line) for line in surface_lines(o.summary)]
    return Group(*blocks)


def result_table(outcomes) -> Fit:
    """The results as a rich renderable that fits the console it is printed on; a subtypes run
    adds its per-class table (`orchestrate.class_report`) under either layout."""
    from ichbench.orchestrate.class_report import class_table
    classes = class_table(outcomes)
    extra = [classes] if classes is not None else []
    return Fit(Group(wide_table(outcomes), surface_table(outcomes), *extra), Group(stacked(outcomes), *extra))
