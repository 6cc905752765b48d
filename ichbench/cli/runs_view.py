"""`ichbench runs` on the console: a table where there is room, two lines per run where not
(the full run id stays whole: `ichbench leaderboard submit --run-id` takes it)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ichbench.console import Fit, pct

COLUMNS = ("run_id", "method", "dataset", "profile", "folds", "Dice all [%]", "Dice ICH [%]", "HD95 [mm]",
           "NSD [%]", "mL CCC", "GPU-hours")
# the parent run's MLflow metrics (`tracking.records.summary_metrics`) each `runs --json` row
# carries beside Dice: means over the finite values, fractions as stored; None for older runs
SURFACE = {"hd95_mm_all": "hd95_mm_all_mean", "hd95_mm_ich": "hd95_mm_ich_mean", "hd_mm_all": "hd_mm_all_mean",
           "hd_mm_all_n_infinite": "hd_mm_all_n_infinite", "nsd_all": "nsd_all_mean", "nsd_ich": "nsd_ich_mean",
           "abs_rvd_all": "abs_rvd_all_mean", "volume_ccc": "volume_ccc", "volume_icc_2_1": "volume_icc_2_1",
           "volume_bias_ml": "volume_bias_ml", "volume_loa_low_ml": "volume_loa_low_ml",
           "volume_loa_high_ml": "volume_loa_high_ml"}


def surface_columns(metrics: dict) -> dict:
    """The SURFACE keys of one run's row from its parent run's metrics."""
    out = {key: metrics.get(name) for key, name in SURFACE.items()}
    if out["hd_mm_all_n_infinite"] is not None:
        out["hd_mm_all_n_infinite"] = int(out["hd_mm_all_n_infinite"])
    return out


def _hours(text) -> str:
    try:
        return f"{float(text):.2f}"
    except (TypeError, ValueError):
        return "—"


def _num(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _values(r: dict) -> list[str]:
    # a seeds run (`run --seeds`): its means over seeds, marked so in the folds column
    folds = f"{r['folds']} × seeds {','.join(map(str, r['seeds']))}" if r.get("kind") == "seeds" else str(r["folds"])
    return [str(r["run_id"]), str(r["method"]), str(r["dataset"]), str(r["profile"]), folds,
            pct(r["dice_all"]), pct(r["dice_ich"]), _num(r.get("hd95_mm_all"), 2), pct(r.get("nsd_all")),
            _num(r.get("volume_ccc"), 3), _hours(r.get("gpu_hours"))]


def runs_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in COLUMNS:
        t.add_column(col, no_wrap=True, justify="left" if col in COLUMNS[:5] else "right")
    for r in rows:
        t.add_row(*_values(r))
    return t


def runs_blocks(rows: list[dict], title: str) -> Group:
    lines = [Text(title, style="bold")]
    for r in rows:
        run_id, method, dataset, profile, folds, dice_all, dice_ich, hd95, nsd, ccc, gh = _values(r)
        lines.append(Text.assemble((run_id, "cyan"), f"  {method} on {dataset} ({profile})"))
        lines.append(Text(f"    folds {folds}   Dice all {dice_all} %   Dice ICH {dice_ich} %   GPU-hours {gh}"))
        bias = _num(r.get("volume_bias_ml"), 2)
        lines.append(Text(f"    HD95 {hd95} mm   NSD {nsd} %   mL CCC {ccc}   bias {bias} mL"))
    return Group(*lines)


def runs_view(rows: list[dict], title: str) -> Fit:
    return Fit(runs_table(rows, title), runs_blocks(rows, title))
