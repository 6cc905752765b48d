"""The table `ichbench run --seeds` prints after the usual results table (which shows the config's
own seed): each seed's means over volumes, then their mean ± std over seeds."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit

TITLE = "Over seeds: each seed's mean over volumes (percent; HD95 in mm), then mean ± std over seeds"
# (column, metric of `seeds.OVER_SEEDS`, scale)
COLUMNS = (("Dice all", "dice_all_mean", 100.0), ("Dice ICH", "dice_ich_mean", 100.0),
           ("Prec. all", "precision_all_mean", 100.0), ("Recall all", "recall_all_mean", 100.0),
           ("HD95", "hd95_mm_all_mean", 1.0), ("NSD", "nsd_all_mean", 100.0))


def _one(value, scale: float) -> str:
    return "—" if value is None else f"{value * scale:.2f}"


def _spread(stats: dict, scale: float) -> str:
    if stats.get("mean") is None:
        return "—"
    std = stats.get("std")
    return f"{stats['mean'] * scale:.2f}" + ("" if std is None else f"±{std * scale:.2f}")


def _rows(out) -> list[tuple[str, list[str]]]:
    rows = [(f"seed {p['seed']}", [_one(p[m], s) for _, m, s in COLUMNS]) for p in out.per_seed]
    rows.append((f"mean ± std ({len(out.seeds)} seeds)", [_spread(out.over_seeds[m], s) for _, m, s in COLUMNS]))
    return rows


def seeds_table(results) -> Table:
    t = Table(title=TITLE)
    t.add_column("method", no_wrap=True)
    t.add_column("seed", no_wrap=True)
    for col, _, _ in COLUMNS:
        t.add_column(col, justify="right", no_wrap=True)
    for out in results:
        for i, (label, values) in enumerate(_rows(out)):
            t.add_row(out.method if i == 0 else "", label, *values)
    return t


def seeds_lines(results) -> Group:
    lines = [Text(TITLE, style="bold")]
    for out in results:
        lines.append(Text(f"{out.method} on {out.dataset} (pretraining {out.pretrain})"))
        for label, values in _rows(out):
            lines.append(Text(f"  {label}: " + ", ".join(f"{c} {v}" for (c, _, _), v in zip(COLUMNS, values))))
    return Group(*lines)


def seeds_view(results) -> Fit:
    return Fit(seeds_table(results), seeds_lines(results))
