"""Console output fits 80 columns without losing numbers, keeps the full tables when wide or piped,
and shows every metric in percent."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace as NS

import pytest
from rich.console import Console

from ichbench.console import Fit, print_fit
from ichbench.orchestrate.report import result_table

RUN_ID = "0123456789abcdef0123456789abcdef"


def console_of(width: int, terminal: bool = True) -> Console:
    return Console(width=width, record=True, force_terminal=terminal, color_system=None, file=io.StringIO())


def render(renderable, width: int, terminal: bool = True) -> list[str]:
    """Lines as printed on a terminal of `width` columns, or piped when `terminal` is false."""
    console = console_of(width, terminal)
    if isinstance(renderable, Fit):
        print_fit(console, renderable)
    else:
        console.print(renderable)
    return console.export_text().splitlines()


def group(n, dice, prec, rec):
    return {"n": n, "dice": {"mean": dice[0], "std": dice[1]}, "precision": {"mean": prec[0], "std": prec[1]},
            "recall": {"mean": rec[0], "std": rec[1]}}


def outcome(method: str, dataset: str = "phantom"):
    summary = {"all": group(15, (0.6745, 0.2012), (0.7, 0.25), (0.8, 0.1)),
               "ich": group(9, (0.5511, 0.3034), (0.6, 0.2), (0.7, 0.15))}
    return NS(plan=NS(method=NS(name=method), cfg=NS(dataset=dataset, profile="smoke")), summary=summary)


# this run, then the paper's Table 3 rows of multilabel_dl (hssayeni, segcq500), in percent
RUN_NUMBERS = ["67.5±20.1", "55.1±30.3", "70.0±25.0", "80.0±10.0"]
PAPER_NUMBERS = ["63.9±40.0", "49.5±31.9", "69.3±38.8", "76.5±33.2"]


def test_result_table_fits_80_columns_with_every_std():
    lines = render(result_table([outcome("multilabel_dl"), outcome("unet_mixed")]), 80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    for number in RUN_NUMBERS + PAPER_NUMBERS:
        assert number in text
    assert "…" not in text
    # both methods named, each with its own block of this run and the paper's rows
    assert "multilabel_dl on phantom" in text and "unet_mixed on phantom" in text
    assert text.count("this run, smoke") == 2 and text.count("paper, hssayeni") == 2


def test_result_table_ends_with_what_predicting_nothing_scores():
    """The "predicts nothing" reference (issue 22): ε = 1 gives a healthy volume 1 and a volume with
    n hemorrhage voxels 1/(n + 1) Dice and recall, precision 1; here from the run's own counts."""
    import statistics
    o = outcome("multilabel_dl")
    o.rows = [{"volume_id": v, "tp": tp, "fp": 3, "fn": fn, "has_ich": tp + fn > 0, "subtypes": None,
               "pred_ml": 1.0, "true_ml": 0.1 * (tp + fn)}
              for v, tp, fn in (("a", 0, 0), ("b", 0, 0), ("c", 5, 4), ("d", 90, 9))]
    dice = [1.0, 1.0, 1 / 10, 1 / 100]
    want = [f"{100 * statistics.fmean(dice):.1f}±{100 * statistics.stdev(dice):.1f}",
            f"{100 * statistics.fmean(dice[2:]):.1f}±{100 * statistics.stdev(dice[2:]):.1f}", "100.0±0.0"]
    for width, terminal in ((160, True), (80, True)):
        lines = render(result_table([o]), width, terminal)
        row = next(line for line in lines if "predicts nothing" in line)
        assert all(n in row for n in want), row
        assert max(map(len, lines)) <= width


@pytest.mark.parametrize("terminal, width", [(True, 160), (False, 120), (False, 80)])
def test_result_table_is_the_full_table_when_wide_or_piped(terminal, width):
    lines = render(result_table([outcome("multilabel_dl")]), width, terminal)
    text = "\n".join(lines)
    assert "dataset (source)" in text and "Recall all" in text
    row = next(line for line in lines if "multilabel_dl" in line)
    assert "phantom (this run, smoke)" in row and all(n in row for n in RUN_NUMBERS)
    assert any("hssayeni (paper)" in line and all(n in line for n in PAPER_NUMBERS) for line in lines)
    if not terminal:  # piped: at least the width the table needs, never the terminal's 80
        assert max(map(len, lines)) >= 98


def _method_rows():
    from ichbench.plugins import get_registry
    reg = get_registry()
    rows = []
    for n, m in sorted(reg.methods().items()):
        owner = reg.owner("methods", n)
        rows.append({**m.describe(), "plugin": owner.name, "distribution": owner.distribution,
                     "version": owner.version})
    return rows


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_methods_fit_80_columns_with_whole_descriptions(registry):
    from ichbench.cli.methods_view import methods_view
    rows = _method_rows()
    console = console_of(80)
    lines = render(methods_view(console, rows), 80)
    assert max(map(len, lines)) <= 80
    flat = _squash("\n".join(lines))
    assert "…" not in flat
    for r in rows:
        # wrapped only between words: the description reads whole once line breaks are spaces
        assert _squash(r["description"]) in flat, r["name"]
    # the longest description takes at most three lines, not a column of 10-character fragments
    longest = max(rows, key=lambda r: len(r["description"]))
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(longest["description"][:20]))
    assert len(_squash(" ".join(lines[first:first + 3]))) >= len(longest["description"])
    assert all(len(line.strip()) > 30 for line in lines[first:first + 2])


def test_methods_piped_is_one_table(monkeypatch, registry, home):
    from typer.testing import CliRunner

    from ichbench.cli.main import app
    res = CliRunner().invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header = next(line for line in lines if "description" in line)
    assert "name" in header and "label needs" in header and "transfers" in header
    rows = _method_rows()
    for r in rows:  # one table row starts with each method's name
        assert any(line.startswith(f"│ {r['name']} ") for line in lines), r["name"]
    # the description column keeps at least 40 characters
    assert len(header.split("┃")[-2]) >= 40


def test_runs_show_dice_in_percent_and_fit_80_columns():
    from ichbench.cli.runs_view import runs_view
    rows = [{"run_id": RUN_ID, "method": "local_contrastive", "dataset": "segcq500", "profile": "paper",
             "folds": "0,1,2,3,4", "dice_all": 0.6745, "dice_ich": 0.5123, "gpu_hours": "12.345678",
             "hd95_mm_all": 4.321, "nsd_all": 0.8234, "volume_ccc": 0.9123, "volume_bias_ml": -0.52}]
    narrow = render(runs_view(rows, "finished runs (sqlite:///x/mlflow.db)"), 80)
    wide = render(runs_view(rows, "finished runs (sqlite:///x/mlflow.db)"), 160)
    assert max(map(len, narrow)) <= 80
    for lines in (narrow, wide):
        text = "\n".join(lines)
        assert RUN_ID in text  # whole: `leaderboard submit --run-id` takes it
        assert "67.45" in text and "51.23" in text and "12.35" in text
        assert "4.32" in text and "82.34" in text and "0.912" in text   # HD95 mm, NSD %, mL CCC
        assert "0.6745" not in text and "0.67" not in text.replace("67.45", "")
    assert any("Dice all [%]" in line for line in wide)


def test_finetune_summary_is_in_percent():
    from ichbench.cli.train import _summary_table
    result = {"method": "unet_mixed", "dataset": "phantom", "fold": 0, "k": 5,
              "summary": {"all": group(3, (0.6745, 0.2012), (0.7, None), (None, None)),
                          "ich": group(2, (0.5, 0.1), (0.6, 0.2), (0.7, 0.15))}}
    lines = render(_summary_table(result), 80)
    text = "\n".join(lines)
    assert "67.5 ± 20.1" in text and "70.0" in text and "50.0 ± 10.0" in text and "—" in text
    assert "0.675" not in text and "percent" in text


def test_runs_json_keeps_fractions_where_the_table_shows_percent(home, mlflow_template):
    """A finished parent run logged as the driver logs it (Tracker, summary_metrics), listed by
    `ichbench runs`: the JSON keeps MLflow's fractions, the table shows the same numbers in percent."""
    import json

    from typer.testing import CliRunner

    from ichbench.cli.main import app
    from ichbench.tracking import Tracker, default_tracking_uri
    from ichbench.tracking.mlflow_store import TAG
    from ichbench.tracking.records import summary_metrics

    import shutil
    shutil.copy(mlflow_template, home / "mlflow.db")   # migrated once a session
    tr = Tracker(default_tracking_uri(home), home)
    exp = tr.experiment("phantom")
    tags = {f"{TAG}method": "unet_mixed", f"{TAG}dataset": "phantom", f"{TAG}profile": "smoke"}
    parent = tr.start_run(exp, "unet_mixed/phantom/smoke", {**tags, f"{TAG}kind": "parent"}).info.run_id
    summary = {"all": group(15, (0.6745, 0.2012), (0.7, 0.25), (0.8, 0.1)),
               "ich": group(9, (0.5123, 0.3034), (0.6, 0.2), (0.7, 0.15)), "subtypes": {},
               "volume_agreement": {"ccc": 0.9123, "icc_2_1": 0.9011, "bias_ml": -0.52, "loa_low_ml": -3.1,
                                    "loa_high_ml": 2.06}}
    # surface metrics as summarize gives them (issue 22): HD95 in mm, NSD a fraction, HD with 2 inf
    summary["all"].update(hd95_mm={"mean": 4.321, "n_infinite": 2}, hd_mm={"mean": 6.5, "n_infinite": 2},
                          nsd={"mean": 0.8234, "n_infinite": 0}, abs_rvd={"mean": 0.25, "n_infinite": 1})
    summary["ich"].update(hd95_mm={"mean": 5.0, "n_infinite": 2}, nsd={"mean": 0.75, "n_infinite": 0})
    tr.metrics(parent, summary_metrics(summary))
    tr.tags(parent, {f"{TAG}gpu_hours": "12.345678", f"{TAG}folds": "0,1,2"})
    tr.end(parent, "FINISHED")
    # a fold child with other numbers is not a benchmark run: not listed
    fold = tr.start_run(exp, "unet_mixed fold 0", {**tags, f"{TAG}kind": "fold"}, parent).info.run_id
    tr.metrics(fold, {"dice_all_mean": 0.1111, "dice_ich_mean": 0.2222})
    tr.end(fold, "FINISHED")

    res = CliRunner().invoke(app, ["runs", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"run_id": parent, "method": "unet_mixed", "dataset": "phantom",
                                       "profile": "smoke", "folds": "0,1,2", "dice_all": 0.6745,
                                       "dice_ich": 0.5123, "hd95_mm_all": 4.321, "hd95_mm_ich": 5.0,
                                       "hd_mm_all": 6.5, "hd_mm_all_n_infinite": 2, "nsd_all": 0.8234,
                                       "nsd_ich": 0.75, "abs_rvd_all": 0.25, "volume_ccc": 0.9123,
                                       "volume_icc_2_1": 0.9011, "volume_bias_ml": -0.52,
                                       "volume_loa_low_ml": -3.1, "volume_loa_high_ml": 2.06,
                                       "gpu_hours": "12.345678", "kind": "parent", "seed": None}]
    res = CliRunner().invoke(app, ["runs"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if parent in line)   # piped: one row per run
    assert "unet_mixed" in row and "67.45" in row and "51.23" in row and "12.35" in row
    assert "4.32" in row and "82.34" in row and "0.912" in row   # HD95 mm, NSD percent, mL CCC
    assert "0.6745" not in res.stdout and "0.5123" not in res.stdout and "11.11" not in res.stdout
