"""The per-class table of a subtypes run (`finetune.task=subtypes`), printed under the results
table of `ichbench run`: for each class its Dice over all test volumes and over the volumes whose
truth holds the class, with that group's HD95 (mm) and NSD (percent), then the macro means
(`evaluate.classes.summarize_classes`); then the same for the fold ensemble on each external test
set of the run (`--test-on`). The rows above it stay the binary union's (any class), which is
what the paper's Dice measures. One table per method and test set, under 80 columns, so one
layout serves every console."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

TITLE = "{method}, per class: percent, mean ± std over volumes (pres.: the volumes holding the class)"
EXTERNAL_TITLE = "{method} on {dataset} (external test set, fold ensemble), per class: percent, as above"
COLUMNS = ("n pres.", "Dice all", "Dice pres.", "HD95 pres.", "NSD pres.")


def _pct(stats: dict | None, scale: float = 100.0) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    m, s = stats["mean"] * scale, stats.get("std")
    return f"{m:.1f}±{s * scale:.1f}" if s is not None else f"{m:.1f}"


def class_rows(summary: dict) -> list[tuple[str, ...]]:
    """(class, *COLUMNS) of a summary with `classes`, then the macro row; [] for a binary one."""
    rows = []
    for name, g in (summary.get("classes") or {}).items():
        present = g["present"]
        rows.append((name, str(present["dice"].get("n", "—")), _pct(g["all"]["dice"]), _pct(present["dice"]),
                     _pct(present.get("hd95_mm"), 1.0), _pct(present.get("nsd"))))
    macro = summary.get("macro")
    if rows and macro:
        def mean(group: str, key: str, scale: float = 100.0) -> str:
            m = macro[group].get(key, {}).get("mean")
            return "—" if m is None else f"{m * scale:.1f}"
        rows.append(("macro", "", mean("all", "dice"), mean("present", "dice"), mean("present", "hd95_mm", 1.0),
                     mean("present", "nsd")))
    return rows


def _table(title: str, summary: dict | None) -> Table | None:
    rows = class_rows(summary or {})
    if not rows:
        return None
    t = Table(title=title)
    t.add_column("class", no_wrap=True)
    for col in COLUMNS:
        t.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def class_table(outcomes) -> Group | None:
    """A table per subtypes outcome (its method in the title), then one per external test set
    (`--test-on`: the fold ensemble's per-class results on it), or None when no outcome has classes."""
    tables = []
    for o in outcomes:
        tables.append(_table(TITLE.format(method=o.plan.method.name), o.summary))
        for ds, s in (getattr(o, "external", None) or {}).items():
            tables.append(_table(EXTERNAL_TITLE.format(method=o.plan.method.name, dataset=ds), s["ensemble"]))
    tables = [t for t in tables if t is not None]
    return Group(*tables) if tables else None
