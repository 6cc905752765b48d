"""The table printed at the end of `ichbench run`: this run's numbers beside the paper's Table 3.

Wide consoles get one table with a row per source; narrow ones (80 columns) one small table per
method, with the method as its title, so every mean keeps its ± std.
"""

from __future__ import annotations


from rich.console import Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit

TITLE = "Volume-level results: percent, mean ± std over volumes"
METRIC_COLUMNS = ("n", "Dice all", "Dice ICH", "Prec. all", "Recall all")


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


def _numbers(summary: dict, scale: float) -> list[str]:
    return [str(summary["all"]["n"]), _fmt(summary["all"], "dice", scale), _fmt(summary["ich"], "dice", scale),
            _fmt(summary["all"], "precision", scale), _fmt(summary["all"], "recall", scale)]


def _sources(o) -> list[tuple[str, str, list[str]]]:
    """(dataset, source, numbers) rows of one outcome: this run, then the paper's rows (percent already)."""
    rows = [(o.plan.cfg.dataset, f"this run, {o.plan.cfg.profile}", _numbers(o.summary, 100.0))]
    rows += [(pds, "paper", _numbers(row, 1.0)) for pds, row in sorted(published_rows(o.plan.method.name).items())]
    return rows


def _metric_columns(t: Table) -> None:
    for col in METRIC_COLUMNS:
        t.add_column(col, justify="right", no_wrap=True)


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
    return Group(*blocks)


def result_table(outcomes) -> Fit:
    """The results as a rich renderable that fits the console it is printed on."""
    return Fit(wide_table(outcomes), stacked(outcomes))
