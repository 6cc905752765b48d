"""The table printed at the end of `ichbench run`: this run's numbers beside the paper's Table 3."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

PUBLISHED = Path(__file__).resolve().parents[2] / "leaderboard" / "published" / "spahr2023.json"


def published_rows(method: str) -> dict[str, dict]:
    """The paper's rows for a method, by dataset (empty if the method is not in the paper)."""
    try:
        data = json.loads(PUBLISHED.read_text())
    except (OSError, ValueError):
        return {}
    return {r["dataset"]: r for r in data.get("rows", []) if r.get("method") == method}


def _fmt(group: dict | None, metric: str, scale: float = 100.0) -> str:
    if not group or not group.get(metric) or group[metric].get("mean") is None:
        return "—"
    m, s = group[metric]["mean"] * scale, group[metric].get("std")
    return f"{m:.1f}±{s * scale:.1f}" if s is not None else f"{m:.1f}"


def result_table(outcomes) -> Table:
    t = Table(title="Volume-level results: percent, mean ± std over volumes")
    t.add_column("method", no_wrap=True)
    t.add_column("dataset (source)", no_wrap=True)
    for col in ("n", "Dice all", "Dice ICH", "Prec. all", "Recall all"):
        t.add_column(col, justify="right")
    for o in outcomes:
        s = o.summary
        name, ds = o.plan.method.name, o.plan.cfg.dataset
        t.add_row(name, f"{ds} (this run, {o.plan.cfg.profile})", str(s["all"]["n"]), _fmt(s["all"], "dice"),
                  _fmt(s["ich"], "dice"), _fmt(s["all"], "precision"), _fmt(s["all"], "recall"))
        for pds, row in sorted(published_rows(name).items()):
            t.add_row("", f"{pds} (paper)", str(row["all"]["n"]), _fmt(row["all"], "dice", 1.0),
                      _fmt(row["ich"], "dice", 1.0), _fmt(row["all"], "precision", 1.0), _fmt(row["all"], "recall", 1.0))
    return t
