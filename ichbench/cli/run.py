"""`ichbench run`, `runs`, `ui` and `tune`: the distributed benchmark and its tracking."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ichbench.cli.common import fail, interrupted, workspace
from ichbench.console import make_console, pct, print_fit

console = make_console()
err_console = Console(stderr=True, soft_wrap=True)


def _folds(text: Optional[str]) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"--folds expects a comma list of integers, got {text!r}")


def print_notes(plans) -> None:
    """Defaults a plan chose that change what runs (e.g. pretraining on the dataset's own slices),
    each once, on stderr (stdout stays the --dry-run JSON)."""
    for note in dict.fromkeys(n for p in plans for n in p.notes):
        err_console.print(f"ichbench: {note}", highlight=False)


def tracker_for(uri: Optional[str], home):
    from ichbench.tracking import Tracker, default_tracking_uri
    return Tracker(uri or default_tracking_uri(home), home)


def run(
    method: str = typer.Option(..., "--method", "-m", help="Method name, a comma list, or 'all'."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Segmentation dataset to fine-tune and evaluate on."),
    profile: str = typer.Option("paper", help="Hyperparameter profile: paper or smoke."),
    folds: Optional[str] = typer.Option(None, help="Comma list of folds to run (default: all)."),
    k: Optional[int] = typer.Option(None, help="Number of folds (default: the paper's for the dataset, else 5)."),
    pretrain_dataset: Optional[str] = typer.Option(
        None, help="Dataset to pretrain on (default: the dataset's own pretraining store if it has one, else "
                   "rsna; without an rsna store, the dataset's own slices)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS",
                                          help="Join this Ray cluster instead of starting a local one."),
    gpus_per_fold: Optional[float] = typer.Option(
        None, help="GPUs per fold worker (default: share the GPUs so all folds fit)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default sqlite:///$ICHBENCH_HOME/mlflow.db)."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved plan and exit."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="Repeat the fine-tuning of every fold: N seeds from the config's own "
                              "(finetune.seed) on, or a comma list; prints each seed's means and mean ± std."),
    seeds_pretrain: str = typer.Option(
        "shared", "--seeds-pretrain", help="With --seeds: 'shared' (one pretraining for all seeds) or "
                                           "'per_seed' (one per seed: N times the pretraining cost)."),
    test_on: Optional[str] = typer.Option(
        None, "--test-on", help="External test datasets (comma list): every fold model and the fold ensemble "
                                "also score all their volumes (docs/distributed.md, External test sets)."),
) -> None:
    """Pretrain (or reuse a cached pretraining), fine-tune k folds in parallel on Ray, evaluate per
    volume, log everything to MLflow and print the result beside the paper's."""
    try:
        _run(method, dataset, profile, folds, k, pretrain_dataset, address, gpus_per_fold,
             tracking_uri, set_, dry_run, seeds, seeds_pretrain, test_on)
    except KeyboardInterrupt:   # before any run started: planning, or Ray starting (cluster.py)
        interrupted("interrupted before any training started; nothing was left running")


def _lock_runs(plans, held) -> None:
    """One `ichbench run` per run folder at a time (`orchestrate.lock`); a second one of the same
    config waits, then reuses what the first finished. Folders in sorted order, so two commands
    naming the same methods in another order cannot each hold what the other waits for."""
    from ichbench.orchestrate.lock import run_lock
    from ichbench.orchestrate.plan import check_reuse
    for plan in sorted(plans, key=lambda p: str(p.run_dir)):
        if held.enter_context(run_lock(plan.run_dir)):
            check_reuse(plan)   # the folds the other run finished are reused: not on a damaged store


def _run(method, dataset, profile, folds, k, pretrain_dataset, address, gpus_per_fold, tracking_uri,
         set_, dry_run, seeds=None, seeds_pretrain="shared", test_on=None) -> None:
    import json

    from ichbench.orchestrate.plan import expand_methods, plan_method
    from ichbench.orchestrate.seeds import seed_plans

    home = workspace()
    names = expand_methods(method)
    # every refusal of the plan (a missing store, a bad setting) comes before MLflow is even imported
    seeded = [sp for n in names for sp in seed_plans(  # (seed, plan); seed None without --seeds
        lambda extra, n=n: plan_method(n, dataset, profile, home, folds=_folds(folds), k=k,
                                       pretrain_dataset=pretrain_dataset, overrides=[*set_, *extra]),
        seeds, seeds_pretrain)]
    plans = [p for _, p in seeded]
    from ichbench.orchestrate.external import parse_test_on, plan_tests
    tests = parse_test_on(test_on)
    for p in plans:   # --test-on: refused here in one line, before anything trains
        p.tests = plan_tests(home, p.method, p.cfg, p.store, tests)
    tracker = None if dry_run else tracker_for(tracking_uri, home)   # unreachable store: fail before training
    print_notes(plans)
    if dry_run:
        print(json.dumps([{"method": p.method.name, "run_key": p.run_key, "run_dir": str(p.run_dir),
                           "folds": p.folds, "split_hash": p.split["hash"], "config": p.cfg.to_dict(),
                           **({} if s is None else {"seed": s})}
                          for s, p in seeded], indent=2))
        return
    from contextlib import ExitStack

    from ichbench.orchestrate.driver import Driver
    from ichbench.orchestrate.report import result_table

    with ExitStack() as held:
        _lock_runs(plans, held)   # before Ray starts: a run that has to wait holds no cluster meanwhile
        driver = Driver(tracker, address=address, gpus_per_fold=gpus_per_fold)
        outcomes = []
        try:
            for plan in plans:
                outcomes.append(driver.run(plan))
        except KeyboardInterrupt:
            interrupted("interrupted: workers stopped, unfinished runs marked KILLED in MLflow")
    from ichbench.orchestrate.seeds import by_seed
    shown, over_seeds = by_seed(seeded, outcomes, seeds_pretrain, tracker, driver.resources)
    print_fit(console, result_table(shown))   # with --seeds: each method's first seed
    if over_seeds:
        from ichbench.orchestrate.seeds_report import seeds_view
        print_fit(console, seeds_view(over_seeds))
    for o in outcomes:
        console.print(f"[dim]{o.plan.method.name}: MLflow parent run {o.parent_run_id} "
                      f"({tracker.uri}); results in {o.plan.run_dir}[/dim]", soft_wrap=True)  # paths stay whole


def runs(dataset: Optional[str] = typer.Option(None, help="Only this dataset."),
         tracking_uri: Optional[str] = typer.Option(None),
         as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON; Dice as fractions (0-1), "
                                      "as MLflow stores them, where the table shows percent."),
         matrix: bool = typer.Option(False, "--matrix", help="With --json: the train × test matrix per method "
                                     "(diagonal: cross-validation; other cells: --test-on ensembles).")) -> None:
    """List finished benchmark runs (MLflow parent runs): mean volume Dice in percent, HD95 in mm,
    NSD in percent and the agreement of predicted and true hemorrhage volume."""
    import json

    from ichbench.cli.runs_view import surface_columns
    from ichbench.orchestrate.external import from_metrics
    from ichbench.tracking.mlflow_store import TAG
    from ichbench.tracking.records import classes_from_metrics

    tr = tracker_for(tracking_uri, workspace())
    exps = [e for e in tr.client.search_experiments() if e.name.startswith("ichbench/")
            and (dataset is None or e.name == f"ichbench/{dataset}")]
    found = tr.client.search_runs([e.experiment_id for e in exps],
                                  filter_string=f"tags.`{TAG}kind` = 'parent' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"]) if exps else []
    rows = []
    for r in found:
        t, m = r.data.tags, r.data.metrics
        rows.append({"run_id": r.info.run_id, "method": t.get(f"{TAG}method"), "dataset": t.get(f"{TAG}dataset"),
                     "profile": t.get(f"{TAG}profile"), "folds": t.get(f"{TAG}folds"),
                     "dice_all": m.get("dice_all_mean"), "dice_ich": m.get("dice_ich_mean"),
                     **surface_columns(m), "gpu_hours": t.get(f"{TAG}gpu_hours")})
        external = from_metrics(m)   # --test-on results, only on runs that have them
        if external:
            rows[-1]["external"] = external
        classes = classes_from_metrics(m)   # finetune.task=subtypes: per-class and macro means
        if classes:
            rows[-1]["classes"] = classes
    from ichbench.orchestrate.seeds import seeds_rows   # --seeds: each seed's row names its seed
    rows += seeds_rows(tr, [e.experiment_id for e in exps], rows)
    if as_json:
        if matrix:
            from ichbench.evaluate.matrix import from_runs
            print(json.dumps(from_runs(rows), indent=2))
            return
        print(json.dumps(rows, indent=2))
        return
    from ichbench.cli.runs_view import runs_view
    print_fit(console, runs_view(rows, f"finished runs ({tr.uri})"))


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ui(port: int = typer.Option(5000, help="Port on 127.0.0.1."),
       tracking_uri: Optional[str] = typer.Option(None)) -> None:
    """Start the MLflow UI on the tracking store, bound to 127.0.0.1; Ctrl-C or `kill` stops all of it."""
    import signal

    from ichbench.cli.supervise import run_group
    from ichbench.tracking import default_tracking_uri
    home = workspace()
    uri = tracking_uri or default_tracking_uri(home)
    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535, got {port}")
    if not _port_free(port):
        fail(f"port {port} on 127.0.0.1 is in use; choose another with --port")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port)]
    if uri.startswith("sqlite:"):
        cmd += ["--default-artifact-root", (home / "mlartifacts").as_uri()]
    console.print(f"MLflow UI on http://127.0.0.1:{port} ({uri}); Ctrl-C stops it")
    code, sig = run_group(cmd)
    if sig is not None:
        try:
            print(f"ichbench ui: stopped the MLflow UI ({signal.Signals(sig).name})", file=sys.stderr, flush=True)
        except OSError:  # the terminal went away (SIGHUP): nothing to tell
            pass
    raise typer.Exit(code)


def tune(
    method: str = typer.Option(..., "--method", "-m"),
    dataset: str = typer.Option(..., "--dataset", "-d"),
    num_samples: int = typer.Option(8, help="Hyperparameter samples (Tune trials); each is scored on every fold."),
    space: list[str] = typer.Option([], "--space", help="key=dist, e.g. finetune.lr=loguniform(1e-4,1e-2); "
                                    "dists: uniform, loguniform, randint, choice. Default: lr, α, batch size."),
    profile: str = typer.Option("paper"),
    folds: Optional[str] = typer.Option(None, help="Folds to score on (default: all)."),
    k: Optional[int] = typer.Option(None),
    seed: int = typer.Option(0, help="Seed of the hyperparameter sampling."),
    search: str = typer.Option("random", help="Searcher: random (Tune's random sampling) or optuna (TPE)."),
    scheduler: str = typer.Option("fifo", help="Scheduler: fifo (every sample on every fold) or asha "
                                  "(stops poor samples after their first folds)."),
    pretrain_dataset: Optional[str] = typer.Option(None),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS"),
    gpus_per_fold: Optional[float] = typer.Option(None),
    tracking_uri: Optional[str] = typer.Option(None),
    set_: list[str] = typer.Option([], "--set", help="Fixed config override key=value (repeatable)."),
) -> None:
    """Search fine-tuning hyperparameters with Ray Tune (mean volume Dice over folds); prints the best."""
    import json

    from ichbench.orchestrate.driver import Driver
    from ichbench.orchestrate.plan import plan_method
    from ichbench.orchestrate.search import parse_space, run_search

    if num_samples < 1:
        fail("--num-samples must be at least 1")
    home = workspace()
    parsed = parse_space(space)
    tracker = tracker_for(tracking_uri, home)
    plan = plan_method(method, dataset, profile, home, folds=_folds(folds), k=k,
                       pretrain_dataset=pretrain_dataset, overrides=set_)
    print_notes([plan])
    try:
        driver = Driver(tracker, address=address, gpus_per_fold=gpus_per_fold)
        out = run_search(plan, tracker, driver, num_samples=num_samples, space=parsed, seed=seed, search=search,
                         scheduler=scheduler)
    except KeyboardInterrupt:   # Ray start-up included (cluster.py): nothing is left running
        interrupted()
    table = Table(title=f"tune {method} on {dataset}: mean volume Dice over folds {plan.folds}")
    keys = sorted(out["best"])
    for col in ["sample", *keys, "mean Dice [%]", "folds"]:
        table.add_column(col)
    for row in sorted(out["samples"], key=lambda r: -r["mean_dice"]):
        table.add_row(str(row["sample"]), *[f"{row['params'][k]:.4g}" for k in keys], pct(row["mean_dice"]),
                      f"{len(row['fold_dice'])}" + (" (stopped)" if row["stopped_early"] else ""))
    console.print(table)
    print(json.dumps({"best": out["best"], "mean_dice": out["best_dice"], "mlflow_run_id": out["run_id"]}))
