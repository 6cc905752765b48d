"""`ichbench leaderboard ...`: submit runs, validate the folder, render the page, record canonical data."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer

from ichbench.cli.common import fail, interrupted, workspace
from ichbench.errors import IchbenchError

app = typer.Typer(help="The leaderboard folder: submit runs, validate entries, render the page.",
                  no_args_is_help=True)
canonical_app = typer.Typer(help="The canonical record each entry is checked against (canonical.json).",
                            no_args_is_help=True)
app.add_typer(canonical_app, name="canonical")

ROOT_HELP = "The leaderboard folder (default: the checkout's leaderboard/, or $ICHBENCH_LEADERBOARD)."


def _folder(root: Optional[Path]):
    from ichbench.leaderboard.paths import Folder, default_root
    return Folder(Path(root).resolve() if root else default_root())


def _errors_as_lines(fn):
    """IchbenchError -> one line on stderr and exit 2, also when the sub-app is run on its own
    (control characters a file name or value brought in written as escapes)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ichbench.leaderboard.schema import printable
        try:
            return fn(*args, **kwargs)
        except IchbenchError as exc:
            fail(printable(str(exc)))
    return wrapper


@app.command()
@_errors_as_lines
def submit(run_id: Optional[str] = typer.Option(None, "--run-id", help="The MLflow parent run to submit."),
           method: Optional[str] = typer.Option(None, help="With --dataset: the latest finished run of METHOD."),
           dataset: Optional[str] = typer.Option(None, help="With --method."),
           tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri",
                                                      help="MLflow tracking URI (default sqlite:///$ICHBENCH_HOME/mlflow.db)."),
           code_url: Optional[str] = typer.Option(None, "--code-url", help="Where the method's code is published."),
           predictions: Optional[Path] = typer.Option(
               None, "--predictions", help="Another tool's masks, one NIfTI per volume named by its id "
               "(fold_<i>/ folders or flat): an external tool's entry (docs/leaderboard.md)."),
           split: Optional[Path] = typer.Option(
               None, "--split", help="With --predictions: the folds.json or splits_final.json the tool trained from."),
           k: Optional[int] = typer.Option(None, "--k", help="With --predictions: the canonical split's k "
                                           "(default: --split's, else the dataset's)."),
           tool: Optional[str] = typer.Option(None, "--tool", help="With --predictions: the tool, e.g. nnunetv2."),
           tool_version: Optional[str] = typer.Option(None, "--tool-version", help="With --tool: its version."),
           task: Optional[str] = typer.Option(
               None, "--task", help="With --predictions: binary (default: 0/1 masks) or subtypes (label maps of "
               "the store's classes, the ids `data export-folds --task subtypes` wrote)."),
           root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """Write a leaderboard entry from a finished `ichbench run`, or from another tool's predictions
    (--predictions); validated before it is written."""
    from ichbench.leaderboard.submit import SubmitRejected
    from ichbench.tracking.mlflow_store import default_tracking_uri
    from ichbench.leaderboard.submit import submit as do_submit

    folder = _folder(root)
    if predictions is not None:
        path = _submit_predictions(folder, predictions, run_id, method, dataset, code_url, split, k, tool,
                                   tool_version, task or "binary")
        typer.echo(f"wrote {folder.rel(path)} (self-reported, external tool)")
        return
    if split or k or tool or tool_version or task:
        fail("--split, --k, --tool, --tool-version and --task go with --predictions")
    if not run_id and not (method and dataset):
        fail("give --run-id RUN, or --method M --dataset D")
    uri = tracking_uri or default_tracking_uri(workspace())
    try:
        path = do_submit(folder, uri, run_id, method, dataset, code_url)
    except SubmitRejected as exc:
        for p in exc.problems:
            typer.echo(f"REJECT {str(exc).split(':')[0]}: {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {folder.rel(path)}")


def _submit_predictions(folder, predictions, run_id, method, dataset, code_url, split, k, tool, tool_version, task):
    from ichbench.console import progress_bar
    from ichbench.leaderboard.external import submit_predictions
    from ichbench.leaderboard.submit import SubmitRejected

    if run_id:
        fail("--predictions writes an external tool's entry, which has no MLflow run: leave out --run-id")
    if not (method and dataset and code_url):
        fail("--predictions needs --method NAME, --dataset D and --code-url URL (where the tool's code is)")
    try:
        with progress_bar() as bar:
            job = bar.add_task(f"score {method}", total=None, info="volumes")
            return submit_predictions(folder, workspace(), predictions, dataset, method, code_url, k=k,
                                      split_file=split, tool=tool, tool_version=tool_version,
                                      on_volume=lambda _v: bar.advance(job), task=task)
    except SubmitRejected as exc:
        for p in exc.problems:
            typer.echo(f"REJECT predictions {predictions}: {p}", err=True)
        raise typer.Exit(1)


@app.command()
@_errors_as_lines
def validate(paths: Optional[List[Path]] = typer.Argument(None, help="Entry files (default: the whole folder)."),
             root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """Check entries, published rows and canonical.json; exits 1 on any rejection."""
    from ichbench.leaderboard.validate import validate as run

    only = None
    if paths:
        files = [p for p in paths if not p.is_dir()]
        dirs = [p for p in paths if p.is_dir()]
        if dirs and not files and len(dirs) == 1 and (dirs[0] / "canonical.json").exists() and root is None:
            root = dirs[0]  # `validate leaderboard/`: the whole folder
        else:
            only = files + [f for d in dirs for f in sorted(d.rglob("*.json"))]
    folder = _folder(root)
    report = run(folder, only)
    for line in report.lines():
        typer.echo(line, err=line.startswith("REJECT"))
    n = len(report.accepted) + len({r.path for r in report.rejections})
    typer.echo(f"{n} file(s) checked, {len({r.path for r in report.rejections})} rejected")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_errors_as_lines
def render(root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
           skip_invalid: bool = typer.Option(False, "--skip-invalid",
                                             help="Render the valid entries even if others are rejected.")) -> None:
    """Write README.md and index.html (and the schema copy) from the validated folder."""
    from ichbench.leaderboard.render import InvalidFolder
    from ichbench.leaderboard.render import render as run

    folder = _folder(root)
    try:
        out = run(folder, skip_invalid)
    except InvalidFolder as exc:
        for r in exc.report.rejections:
            typer.echo(str(r), err=True)
        fail(str(exc), 1)
    for r in out.report.rejections:
        typer.echo(f"skipped: {r}", err=True)
    for n in out.report.notes:
        typer.echo(f"note: {n}")
    shown = ", ".join(f"{v.name}: {sum(r.published for r in v.rows)} published + {len(v.entries)} re-scored"
                      for v in out.views)
    typer.echo(f"wrote {folder.rel(folder.readme)} and {folder.rel(folder.index)} ({shown})")


@app.command()
@_errors_as_lines
def reproduce(entry: Path = typer.Argument(..., help="The entry file to re-run."),
              folds: Optional[str] = typer.Option(
                  None, "--folds", help="Comma list of folds to re-run (default: all); a sample "
                  "says less than all."),
              address: Optional[str] = typer.Option(
                  None, envvar="RAY_ADDRESS",
                  help="Join this Ray cluster instead of starting a local one."),
              root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """Re-run an entry's recorded config on the same store and split; compare per-volume Dice and
    record the outcome beside the entry (exit 1 when it does not reproduce)."""
    from ichbench.orchestrate.reproduce import reproduce as run

    chosen = None
    if folds:
        try:
            chosen = [int(x) for x in folds.split(",") if x.strip()]
        except ValueError:
            fail(f"--folds expects a comma list of integers, got {folds!r}")
        if not chosen:
            fail(f"--folds names no fold: {folds!r}")
    folder = _folder(root)
    try:
        out = run(entry, folder, workspace(), chosen, address)
    except KeyboardInterrupt:
        interrupted("interrupted: workers stopped, nothing recorded (rerun to resume)")
    rec = out.record
    worst = max(abs(v["delta"]) for v in rec["volumes"])
    same = [f["fold"] for f in rec["folds"] if f["predictions_identical"]]
    tol = rec["tolerance"]
    typer.echo(f"{len(rec['volumes'])} volumes re-scored: max |ΔDice| {100 * worst:.2f} points "
               f"(tolerance {100 * tol['volume']:.3g}), mean Δ {100 * rec['mean_delta']:+.2f} "
               f"(tolerance {100 * tol['mean']:.3g}); predictions bit-identical in "
               f"{'folds ' + ', '.join(map(str, same)) if same else 'no fold'}")
    for line in rec["failures"]:
        typer.echo(f"FAIL {line}", err=True)
    verdict = "reproduced" if out.passed else "NOT reproduced"
    typer.echo(f"{verdict}: recorded in {folder.rel(out.path)}")
    if not out.passed:
        raise typer.Exit(1)


@canonical_app.command("record")
@_errors_as_lines
def canonical_record(dataset: str = typer.Option(..., "--dataset", help="Dataset whose segmentation store to record."),
                     k: Optional[List[int]] = typer.Option(None, "--k", help="Also record the split hash for K folds."),
                     force: bool = typer.Option(False, "--force", help="Replace a record the store disagrees with."),
                     root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """Record volume ids, ICH flags, fingerprint and split hashes from an ingested store."""
    from ichbench.leaderboard.canonical import record_from_store

    folder = _folder(root)
    d = record_from_store(folder, workspace(), dataset, list(k or []), force)
    typer.echo(f"recorded {dataset} in {folder.rel(folder.canonical)}: {d['n_volumes']} volumes "
               f"({d['n_ich_volumes']} with ICH), fingerprint {d['fingerprints'][-1][:12]}…")
    for kk, h in d["split_hashes"].items():
        typer.echo(f"  k = {kk}: split {h}")


@canonical_app.command("show")
@_errors_as_lines
def canonical_show(root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """Say per dataset what is recorded and which checks are left out."""
    from ichbench.leaderboard import canonical as canon

    folder = _folder(root)
    data = canon.load(folder)
    for name in sorted(data["datasets"]):
        exp = canon.expectation(data, name)
        n = exp.n_volumes if exp.n_volumes is not None else "?"
        typer.echo(f"{name}: {n} volumes, ids {'recorded' if exp.volume_ids else 'unknown'}, "
                   f"ICH flags {'recorded' if exp.has_ich else 'unknown'}, {len(exp.fingerprints)} fingerprint(s), "
                   f"split hashes for k = {', '.join(sorted(exp.split_hashes)) or 'none'}")
        for item in exp.left_out():
            typer.echo(f"  not checked: {item}")
