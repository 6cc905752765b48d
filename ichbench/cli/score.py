"""`ichbench score`: score any tool's masks with the metrics ichbench reports (docs/score.md)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from ichbench.cli.common import fail, interrupted


def _check_options(nsd_mm: float, workers: int, hd_cap_mm: Optional[float], out: Optional[Path]) -> None:
    if not (math.isfinite(nsd_mm) and nsd_mm >= 0):
        fail(f"--nsd-mm {nsd_mm}: the tolerance must be a finite number of mm >= 0")
    if workers < 1:
        fail(f"--workers {workers}: need at least 1")
    if hd_cap_mm is not None and not (math.isfinite(hd_cap_mm) and hd_cap_mm > 0):
        fail(f"--hd-cap-mm {hd_cap_mm}: the cap must be a finite number of mm > 0")
    if out is not None:
        if out.is_dir():
            fail(f"--out {out}: is a folder; name the JSON file to write")
        if not out.parent.is_dir():
            fail(f"--out {out}: the folder {out.parent} does not exist")


def score(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted masks: CASE.nii.gz, or CASE/mask.nii.gz "
                                                  "as `ichbench predict --output CASE` writes."),
    truth: Path = typer.Option(..., "--truth", help="Folder of true masks CASE.nii.gz (their headers give spacing)."),
    nsd_mm: float = typer.Option(1.0, "--nsd-mm", help="NSD tolerance in mm (INSTANCE 2022 uses 0.42)."),
    as_json: bool = typer.Option(False, "--json", help="Print the cases and the summary as JSON."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON to this file."),
    workers: int = typer.Option(1, "--workers", help="Processes scoring cases in parallel."),
    hd_cap_mm: Optional[float] = typer.Option(None, "--hd-cap-mm",
                                              help="Also give HD/HD95 means with each value capped here "
                                                   "(an infinite HD counts as the cap)."),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty",
                                          help="Score a truth without a prediction as an empty prediction "
                                               "(default: refuse the case)."),
    labels: Optional[str] = typer.Option(None, "--labels",
                                         help="The masks are label images: score each class and their union, "
                                              "e.g. EDH=1,IPH=2,IVH=3,SAH=4,SDH=5 (BHSD) or 1,2."),
) -> None:
    """Score predicted masks against true masks: Dice, precision, recall (eps = 1), HD, HD95, NSD,
    |RVD|, mL and volume agreement. Exit 0 when every case scored, 1 when some were refused."""
    from ichbench.cli import scoring
    from ichbench.evaluate.infjson import encode
    _check_options(nsd_mm, workers, hd_cap_mm, out)
    classes = None
    if labels is not None:
        from ichbench.evaluate.classes import parse_labels
        try:
            classes = parse_labels(labels)
        except ValueError as exc:
            fail(f"--labels {exc}")
    pairs, refused = scoring.match(pred, truth, missing_as_empty)
    refused = [{"case": c, "file": str(f), "problem": p} for c, f, p in refused]
    for r in refused:
        _refuse(r)

    def report(result):
        if result[0] == "refused":
            _, case, file, problem = result
            refused.append({"case": case, "file": file, "problem": problem})
            _refuse(refused[-1])

    try:
        results = scoring.score_pairs(pairs, nsd_mm, workers, on_result=report, labels=classes)
    except KeyboardInterrupt:
        interrupted("interrupted; nothing written")
    cases = [r[1] for r in results if r[0] == "ok"]
    refused.sort(key=lambda r: r["case"])
    doc = encode({"cases": cases, "refused": refused,
                  "summary": scoring.summarize(cases, len(refused), nsd_mm, hd_cap_mm)})
    text = json.dumps(doc, indent=2)
    if out is not None:
        scoring.write_atomic(out, text + "\n")
    if as_json:
        print(text)
    else:
        _table(doc)
    raise typer.Exit(1 if refused else 0)


def _refuse(r: dict) -> None:
    print(f"ichbench: refused {r['case']}: {r['file']}: {r['problem']}", file=sys.stderr, flush=True)


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}"


def _digits(key: str) -> int:
    return 2 if key.endswith(("_mm", "_ml")) else 3


def _table(doc: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    s = doc["summary"]
    t = Table(title=f"ichbench score: {s['n_scored']} case(s) scored, {s['n_refused']} refused "
                    f"(NSD at {s['nsd_mm']:g} mm; HD, HD95 in mm)", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True, padding=(0, 1))
    cols = [("case", None), ("Dice", "dice"), ("prec", "precision"), ("recall", "recall"), ("HD", "hd_mm"),
            ("HD95", "hd95_mm"), ("NSD", "nsd"), ("|RVD|", "abs_rvd"), ("pred mL", "pred_ml"), ("true mL", "true_ml")]
    for name, _ in cols:
        t.add_column(name, justify="left" if name == "case" else "right", no_wrap=True,
                     min_width=8 if name == "case" else None)
    for c in doc["cases"]:
        t.add_row(c["case"], *(_fmt(c[k], _digits(k)) for _, k in cols[1:]))
    for group, label in (("all", ""), ("ich", " ICH")):
        stats = s[group]
        t.add_row(f"mean{label}", *(_fmt(stats[k]["mean"], _digits(k)) for _, k in cols[1:]), style="bold")
        t.add_row(f"inf{label}", *(str(stats[k]["n_infinite"]) if k in ("hd_mm", "hd95_mm", "abs_rvd") else ""
                                   for _, k in cols[1:]), style="dim")
    t.caption = (f"mean: over the finite values of all {s['all']['dice']['n']} cases; ICH: the "
                 f"{s['ich']['dice']['n']} whose truth is not empty; inf: how many are infinite")
    Console().print(t)
    a = s["volume_agreement"]
    print(f"volume agreement over {a['n']} case(s): Lin's CCC {_fmt(a['ccc'])}, ICC(2,1) {_fmt(a['icc_2_1'])}, "
          f"Bland-Altman bias {_fmt(a['bias_ml'], 2)} mL, 95% limits [{_fmt(a['loa_low_ml'], 2)}, "
          f"{_fmt(a['loa_high_ml'], 2)}] mL")
    if "classes" in s:
        _class_table(s)
    if s["hd_cap_mm"] is not None:
        print(f"HD / HD95 means with each value capped at {s['hd_cap_mm']:g} mm: "
              f"{_fmt(s['all']['hd_mm']['mean_capped'], 2)} / {_fmt(s['all']['hd95_mm']['mean_capped'], 2)}")


def _class_table(s: dict) -> None:
    """Per class (--labels): means over all cases and over the cases whose truth holds the class."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    keys = [("Dice", "dice"), ("HD95", "hd95_mm"), ("NSD", "nsd"), ("|RVD|", "abs_rvd")]
    t = Table(title="per class: mean over all cases | over the cases holding the class (n)", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True, padding=(0, 1))
    t.add_column("class", no_wrap=True)
    for name, _ in keys:
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("n", justify="right")
    rows = [(n, c["all"], c["present"]) for n, c in s["classes"].items()]
    rows.append(("macro", s["macro"]["all"], s["macro"]["present"]))
    for name, every, present in rows:
        t.add_row(name, *(f"{_fmt(every[k]['mean'], _digits(k))} | {_fmt(present[k]['mean'], _digits(k))}"
                          for _, k in keys),
                  "" if name == "macro" else str(present["dice"]["n"]), style="bold" if name == "macro" else None)
    Console().print(t)
