"""Console output that fits: one number convention and tables that pick a layout by width.

Every metric on the console is a percent, as in the paper's Table 3; JSON outputs keep the raw
fractions MLflow and the result files store. A `Fit` renders a wide table when the console has
room for it and a stacked layout (one block per row) when it does not, so 80 columns never drop
the ± std or wrap text into ten-character fragments.
"""

from __future__ import annotations

import sys

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement

# Piped output (CI logs, `| tee`) is not limited by a terminal: give tables room instead of
# rich's default 80 columns.
PIPED_WIDTH = 120


def make_console(**kwargs) -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH, **kwargs)


def progress_bar(enabled: bool = True, *, transient: bool = False):
    """The one progress-bar layout (description, bar, n/total, an `info` field, elapsed), on
    stderr and only on a terminal: piped output and CI logs get the summary lines, not redraws.
    Tasks are added with `info=` (e.g. "slices", "loss 0.31")."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True),
                    transient=transient, disable=not (enabled and sys.stderr.isatty()))


def pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percent without the sign ('67.45'); '—' when missing."""
    return "—" if fraction is None else f"{100.0 * fraction:.{digits}f}"


def natural_width(console: Console, renderable) -> int:
    """The width a renderable takes when nothing limits it."""
    return Measurement.get(console, console.options.update_width(10_000), renderable).maximum


class Fit:
    """`wide` when the console is at least `need` columns wide (default: `wide`'s natural width),
    else `narrow`. Decided at print time, so one object serves any console."""

    def __init__(self, wide, narrow, need: int | None = None):
        self.wide, self.narrow, self.need = wide, narrow, need

    def needed(self, console: Console) -> int:
        return self.need if self.need is not None else natural_width(console, self.wide)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if self.needed(console) <= options.max_width else self.narrow


def print_fit(console: Console, fit: Fit) -> None:
    """On a terminal, the layout its width allows; piped, the wide layout at the width it needs
    (at least the console's), so logs and `grep` get one row per item."""
    if console.is_terminal:
        console.print(fit)
        return
    saved = console.width
    console.width = max(saved, fit.needed(console))
    try:
        console.print(fit)
    finally:
        console.width = saved
