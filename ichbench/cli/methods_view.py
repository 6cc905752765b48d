"""`ichbench methods` on the console: a table where there is room, one block per method where not."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit, natural_width, print_fit

# The wide table is used only when the description column gets at least this many characters;
# below that it wraps into fragments and the stacked blocks read better.
MIN_DESCRIPTION = 40
TRANSFERS_WIDTH = 26


def _cells(r: dict) -> tuple[str, str, str, str, str]:
    transfers = ", ".join(r["transfers"]) or "-"
    if r.get("init_from"):
        transfers += f" (from {r['init_from']})"
    dist = f"{r['distribution']} {r['version']}" if r["distribution"] else r["plugin"]
    return r["name"], ", ".join(r["label_needs"]), transfers, dist, r["description"]


def methods_table(rows: list[dict], description_width: int | None = None) -> Table:
    t = Table(title="methods")
    t.add_column("name", no_wrap=True)
    t.add_column("label needs", no_wrap=True)
    t.add_column("transfers", max_width=TRANSFERS_WIDTH)
    t.add_column("plugin", no_wrap=True)
    t.add_column("description", max_width=description_width)
    for r in rows:
        t.add_row(*_cells(r))
    return t


def methods_blocks(rows: list[dict]) -> Group:
    parts = [Text("methods", style="bold")]
    for r in rows:
        name, needs, transfers, dist, description = _cells(r)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        grid.add_row("label needs", needs)
        grid.add_row("transfers", transfers)
        grid.add_row("plugin", dist)
        grid.add_row("", description)
        parts += [Text(""), Text(name, style="bold cyan"), grid]
    return Group(*parts)


def methods_view(console: Console, rows: list[dict]) -> Fit:
    need = natural_width(console, methods_table(rows, MIN_DESCRIPTION))
    return Fit(methods_table(rows), methods_blocks(rows), need)


def print_methods(console: Console, rows: list[dict]) -> None:
    print_fit(console, methods_view(console, rows))
