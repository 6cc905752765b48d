"""`ichbench icm train` and `ichbench icm apply`: the learned intracranial cavity mask (§2.3.3)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ichbench.cli.common import fail, interrupted, workspace
from ichbench.console import pct

app = typer.Typer(help="The intracranial cavity mask (ICM) U-Nets of §2.3.3: train them, write their masks.",
                  no_args_is_help=True)
console = Console()

PROFILE_OPT = typer.Option("paper", "--profile", "-p", help="Settings profile: paper or smoke.")
SET_OPT = typer.Option([], "--set", "-s", help="Override an ICM setting, e.g. icm.epochs=10 (repeatable).")


@app.command()
def train(dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset whose shipped brain masks teach the ICM."),
          profile: str = PROFILE_OPT, set_: list[str] = SET_OPT,
          address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join this Ray cluster."),
          tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default sqlite:///$ICHBENCH_HOME/mlflow.db)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved ICM settings and exit."),
          as_json: bool = typer.Option(False, "--json",
                                       help="Print the held-out Dice as JSON (fractions, 0-1).")) -> None:
    """Train the tissue- and bone-window U-Nets on Ray (or reuse a cached pair); log to MLflow."""
    from ichbench.config import resolve_icm
    from ichbench.datasets.base import SEGMENTATION, get_dataset, require_role

    # what the training run refuses first (it learns from a segmentation store), a dry run refuses too
    require_role(get_dataset(dataset), SEGMENTATION)
    cfg = resolve_icm(dataset, profile, set_)
    if dry_run:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return
    try:
        path, key, metrics = _train(dataset, profile, cfg, address, tracking_uri)
    except KeyboardInterrupt:
        interrupted("interrupted before the ICM training started; nothing was left running")
    if as_json:
        print(json.dumps({"checkpoint": str(path), "model": key, **metrics}, indent=2))
        return
    t = Table(title=f"ICM U-Nets ({dataset}, {profile})")
    t.add_column("mask")
    t.add_column("held-out Dice [%]", justify="right")
    for name in ("tissue", "bone", "union"):
        t.add_row(name, pct(metrics[f"icm_dice_{name}"], 1))
    console.print(t)
    console.print(_dice_note(dataset, path))
    console.print(f"[dim]{path}[/dim]")


def _dice_note(dataset: str, path) -> str:
    """What the held-out Dice above is measured against (docs/fidelity.md, "the ICM's training scans")."""
    from ichbench.train import checkpoint as ckpt
    payload = ckpt.load(path)
    n_train, n_hold = len(payload.get("train_volumes") or ()), len(payload.get("holdout_volumes") or ())
    return (f"Dice against {dataset}'s shipped cavity masks on {n_hold} held-out volumes (the ICM learned from "
            f"{n_train}); the paper's ICM learned from 10 hand-labelled CQ500 scans, 5 of them healthy, and "
            "Seg-CQ500's shipped masks are most likely that ICM's output (docs/fidelity.md)")


def _train(dataset: str, profile: str, cfg, address, tracking_uri):
    """(checkpoint, model key, held-out metrics). Ctrl-C while training: the MLflow run is marked
    KILLED (as `ichbench run` marks its runs) and the per-epoch state is kept, so a rerun resumes."""
    from ichbench import __version__
    from ichbench.cli.run import tracker_for
    from ichbench.orchestrate.driver import Driver
    from ichbench.orchestrate.plan import plan_icm
    from ichbench.tracking.mlflow_store import TAG

    home = workspace()
    tracker = tracker_for(tracking_uri, home)
    plan = plan_icm(home, cfg)
    driver = Driver(tracker, address=address)
    tags = {f"{TAG}dataset": dataset, f"{TAG}profile": profile, f"{TAG}version": __version__}
    try:
        path, metrics = driver.icm(plan, tracker.experiment(dataset), tags)
    except KeyboardInterrupt:
        if not driver.abort("KILLED"):   # the run driver.icm left open, as `Driver.run` does on Ctrl-C
            raise                         # none open yet (or any more)
        interrupted(f"interrupted: the ICM training stopped and its MLflow run is marked KILLED; the same "
                    f"command resumes it from its last finished epoch ({plan.dir})")
    except BaseException:
        driver.abort("FAILED")
        raise
    return path, plan.key, metrics


@app.command()
def apply(dataset: str = typer.Option(..., "--dataset", "-d", help="Segmentation store to write the masks into."),
          icm_dataset: Optional[str] = typer.Option(None, "--icm-dataset",
                                                    help="Where the ICM learned (default: the dataset itself if it "
                                                         "ships brain masks, else segcq500)."),
          profile: str = PROFILE_OPT, set_: list[str] = SET_OPT) -> None:
    """Write a trained ICM's masks into a store as its `icm` array (atomic; no re-ingest)."""
    from ichbench.config import resolve_icm
    from ichbench.resolve import default_icm_dataset
    from ichbench.datasets.base import SEGMENTATION
    from ichbench.icm.apply import apply_icm, taught_warning
    from ichbench.icm.masker import load_icm
    from ichbench.orchestrate.plan import open_role, plan_icm
    from ichbench.console import progress_bar

    home = workspace()
    source = icm_dataset or default_icm_dataset(dataset)
    cfg = resolve_icm(source, profile, set_)
    plan = plan_icm(home, cfg)
    if not plan.checkpoint.exists():
        fail(f"no ICM U-Nets trained on {source} with these settings ({plan.dir}): run "
             f"`ichbench icm train --dataset {source} --profile {profile}` first")
    store = open_role(home, dataset, SEGMENTATION)
    unets = load_icm(plan.checkpoint)
    with progress_bar(True) as bar:
        task = bar.add_task(f"icm masks → {dataset}", total=store.n_slices, info="")
        record = apply_icm(store.path, unets, cfg.threshold, progress=lambda n: bar.advance(task, n))
    warning = taught_warning(store, unets.payload)
    if warning:
        console.print(f"[yellow]{warning}[/yellow]")
    console.print(f"{dataset}: `icm` array written ({store.n_slices} slices) by ICM {record['model'][:12]} "
                  f"trained on {record['trained_on']} (held-out union Dice {pct(record['icm_dice_union'], 1)} % "
                  "against its shipped masks)")
