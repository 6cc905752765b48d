"""`ichbench runs` on the console: a table where there is room, two lines per run where not
(the full run id stays whole: `ichbench leaderboard submit --run-id` takes it)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit, pct

COLUMNS = ("run_id", "method", "dataset", "profile", "folds", "Dice all [%]", "Dice ICH [%]", "GPU-hours")


def _hours(text) -> str:
    try:
        return f"{float(text):.2f}"
    except (TypeError, ValueError):
        return "—"


def _values(r: dict) -> list[str]:
    return [str(r["run_id"]), str(r["method"]), str(r["dataset"]), str(r["profile"]), str(r["folds"]),
            pct(r["dice_all"]), pct(r["dice_ich"]), _hours(r.get("gpu_hours"))]


def runs_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in COLUMNS:
        t.add_column(col, no_wrap=True, justify="right" if col.startswith(("Dice", "GPU")) else "left")
    for r in rows:
        t.add_row(*_values(r))
    return t


def runs_blocks(rows: list[dict], title: str) -> Group:
    lines = [Text(title, style="bold")]
    for r in rows:
        run_id, method, dataset, profile, folds, dice_all, dice_ich, gh = _values(r)
        lines.append(Text.assemble((run_id, "cyan"), f"  {method} on {dataset} ({profile})"))
        lines.append(Text(f"    folds {folds}   Dice all {dice_all} %   Dice ICH {dice_ich} %   GPU-hours {gh}"))
    return Group(*lines)


def runs_view(rows: list[dict], title: str) -> Fit:
    return Fit(runs_table(rows, title), runs_blocks(rows, title))
