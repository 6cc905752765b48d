"""`ichbench methods`, `ichbench pretrain`, `ichbench finetune`: one process, one fold at a time.

Outputs live under the workspace:
  pretrained/<pretrain_dataset>/<method>-<hash12>/pretrained.pt   (cached by config hash)
  results/<dataset>/<method>/<profile>-<hash12>/k<K>-fold<F>/result.json
Every result.json holds the resolved config, so a number can always be traced to its settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ichbench.cli.common import fail, workspace
from ichbench.console import make_console, pct

console = make_console()

METHOD_OPT = typer.Option(..., "--method", "-m", help="Method name (see `ichbench methods`).")
DATASET_OPT = typer.Option(..., "--dataset", "-d", help="Dataset name (see `ichbench datasets`).")
PROFILE_OPT = typer.Option("paper", "--profile", "-p", help="Settings profile: paper or smoke.")
SET_OPT = typer.Option([], "--set", "-s", help="Override a setting, e.g. finetune.epochs=3 (repeatable).")
PRE_DS_OPT = typer.Option(None, "--pretrain-dataset",
                          help="Dataset whose pretraining store the pretext uses (default: the dataset "
                               "itself if it has one, else rsna; without an rsna store, the "
                               "dataset's own segmentation slices).")
DRY_OPT = typer.Option(False, "--dry-run", help="Print the resolved config as JSON and exit.")
DEVICE_OPT = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu).")


def methods(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the methods: label needs, transferred U-Net parts, plugin."""
    from ichbench.plugins import get_registry
    reg = get_registry()
    rows = []
    for name, m in sorted(reg.methods().items()):
        owner = reg.owner("methods", name)
        rows.append({**m.describe(), "plugin": owner.name, "distribution": owner.distribution,
                     "version": owner.version})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from ichbench.cli.methods_view import print_methods
    print_methods(console, rows)


def _resolve(method: str, dataset: str, profile: str, overrides: list[str], pretrain_dataset: str | None):
    import sys

    from ichbench.resolve import own_slices_note, resolve
    from ichbench.datasets.base import SEGMENTATION, get_dataset
    from ichbench.methods.base import get_method
    m = get_method(method)
    get_dataset(dataset)
    if pretrain_dataset is not None:
        get_dataset(pretrain_dataset)
    cfg = resolve(m, dataset, profile, overrides, pretrain_dataset, home=workspace())
    own = cfg.pretrain_dataset == dataset and cfg.pretrain_role == SEGMENTATION
    if m.has_pretext and pretrain_dataset is None and own:
        print(f"ichbench: {own_slices_note(dataset)}", file=sys.stderr)
    return m, cfg


def _plan(method: str, dataset: str, profile: str, overrides: list[str], pretrain_dataset: str | None,
          folds=None, k=None):
    """The same plan as `ichbench run` (stores, split, caches, output folders), for one step."""
    from ichbench.orchestrate.plan import plan_method
    plan = plan_method(method, dataset, profile, workspace(), folds=folds, k=k,
                       pretrain_dataset=pretrain_dataset, overrides=overrides)
    for note in plan.notes:
        console.print(f"ichbench: {note}", style="dim", soft_wrap=True)
    return plan


def _pretrained(plan, device) -> Path:
    from ichbench.train.engine import pretrain as run_pretrain
    return run_pretrain(plan.method, plan.pretrain_store.path, plan.cfg, plan.pretrain_dir, device=device)


def pretrain(method: str = METHOD_OPT, dataset: str = DATASET_OPT, profile: str = PROFILE_OPT,
             set_: list[str] = SET_OPT, pretrain_dataset: Optional[str] = PRE_DS_OPT,
             dry_run: bool = DRY_OPT, device: Optional[str] = DEVICE_OPT) -> None:
    """Pretrain a method's pretext; prints the checkpoint path (shared with `ichbench run`'s cache)."""
    m, cfg = _resolve(method, dataset, profile, set_, pretrain_dataset)
    if dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return
    if not m.has_pretext:
        fail(f"{m.name} has no pretext to pretrain (a baseline); run `ichbench finetune` directly")
    print(_pretrained(_plan(method, dataset, profile, set_, pretrain_dataset), device))


def _cavity(plan, device):
    """The +ICM methods' mask source; for icm.source=unet the ICM U-Nets are trained (here, in
    this process) unless cached, exactly as `ichbench run` does."""
    from ichbench.icm import CavitySource, train_icm
    checkpoint = None
    if plan.icm is not None:
        checkpoint = train_icm(plan.icm.store.path, plan.cfg.icm, plan.icm.dir, device=device)
    return CavitySource(plan.cfg.icm, checkpoint, device or "cpu")


def _summary_table(result: dict) -> Table:
    s = result["summary"]
    t = Table(title=f"{result['method']} on {result['dataset']}, fold {result['fold']} of {result['k']}: "
                    "percent, mean ± std over volumes")
    t.add_column("volumes")
    for col in ("n", "Dice", "Precision", "Recall"):
        t.add_column(col, justify="right", no_wrap=True)

    def cell(group: dict, name: str) -> str:
        v = group[name]
        if v["mean"] is None:
            return "—"
        return pct(v["mean"], 1) + (f" ± {pct(v['std'], 1)}" if v["std"] is not None else "")
    for label, key in (("all", "all"), ("with ICH", "ich")):
        g = s[key]
        t.add_row(label, str(g["n"]), cell(g, "dice"), cell(g, "precision"), cell(g, "recall"))
    return t


def finetune(method: str = METHOD_OPT, dataset: str = DATASET_OPT,
             fold: int = typer.Option(..., "--fold", "-f", help="Test fold (0-based)."),
             profile: str = PROFILE_OPT,
             k: Optional[int] = typer.Option(None, "--k", help="Number of folds (paper: hssayeni 10, segcq500 5)."),
             pretrained: Optional[Path] = typer.Option(None, "--pretrained",
                                                       help="Pretrained checkpoint (default: pretrain or reuse "
                                                            "the cached one)."),
             set_: list[str] = SET_OPT, pretrain_dataset: Optional[str] = PRE_DS_OPT,
             dry_run: bool = DRY_OPT, device: Optional[str] = DEVICE_OPT,
             as_json: bool = typer.Option(False, "--json",
                                          help="Print the summary as JSON (metrics as fractions, 0-1).")) -> None:
    """Fine-tune on one fold's training volumes and score its test volumes (per-volume JSON).

    The fold of `ichbench run` with the same settings: same split, pretraining cache and folder
    (`runs/...`), so a fold done here is not redone by `run`, and the other way round."""
    from ichbench.orchestrate.lock import run_lock
    from ichbench.splits import fold_count
    from ichbench.train.engine import finetune as run_finetune

    m, cfg = _resolve(method, dataset, profile, set_, pretrain_dataset)
    k = fold_count(k, dataset)
    if not 0 <= fold < k:   # before --dry-run too: a plan for fold 99 is no plan
        fail(f"--fold must be in 0..{k - 1} for k={k}, got {fold}")
    if dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return
    if pretrained is not None and not m.has_pretext:
        fail(f"{m.name} transfers no pretrained parts (a baseline); drop --pretrained")
    plan = _plan(method, dataset, profile, set_, pretrain_dataset, folds=[fold], k=k)
    out = plan.fold_dir(fold)
    # the folder of `ichbench run`'s fold: never trained by both at once (orchestrate/lock.py)
    with run_lock(plan.run_dir):
        if m.has_pretext and pretrained is None:
            pretrained = _pretrained(plan, device)
        cavity = _cavity(plan, device) if m.icm else None
        result = run_finetune(m, plan.store.path, plan.split, fold, plan.cfg, out, pretrained=pretrained,
                              device=device, cavity=cavity)
    if as_json:
        print(json.dumps({"result": str(out / "result.json"), "summary": result["summary"]}, indent=2))
        return
    console.print(_summary_table(result))
    from ichbench.orchestrate.report import surface_lines
    for line in surface_lines(result["summary"]):   # HD in mm, NSD in percent, mL agreement
        console.print(line, highlight=False)
    console.print(f"per-volume metrics and config: {out / 'result.json'}")
