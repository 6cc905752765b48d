"""`ichbench data ...`: ingest, inspect, verify and split the slice stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ichbench.cli.common import fail, workspace
from ichbench.datasets.base import IngestOptions, get_dataset, require_role
from ichbench.splits import PAPER_K, save_split, split_for_store
from ichbench.store import open_store, store_path

app = typer.Typer(help="Ingest raw datasets into slice stores and inspect them.", no_args_is_help=True)
console = Console()


def _parse_extra(items: list[str]) -> dict:
    extra = {}
    for item in items:
        if "=" not in item:
            fail(f"--option expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            extra[k] = json.loads(v)
        except json.JSONDecodeError:
            extra[k] = v
    return extra


@app.command()
def ingest(
    name: str = typer.Argument(..., help="Dataset name (see `ichbench datasets`)."),
    source: Optional[Path] = typer.Option(None, help="Folder with the raw files (default: $ICHBENCH_HOME/raw/NAME)."),
    role: Optional[str] = typer.Option(None, help="Ingest only this role's store (segmentation or pretraining)."),
    size: int = typer.Option(256, help="Slices are resampled to SIZE x SIZE."),
    workers: int = typer.Option(1, help="Parallel decoding processes (DICOM datasets)."),
    selection: str = typer.Option("paper", help="Pretraining slices: 'paper' (ICH + equal non-ICH) or 'all'."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad input instead of skipping it."),
    force: bool = typer.Option(False, "--force", help="Re-ingest even if the sources are unchanged."),
    option: list[str] = typer.Option([], "--option", "-o", help="Dataset option key=value (e.g. volumes=12)."),
) -> None:
    """Read a dataset's raw files into its slice store(s), atomically."""
    from ichbench.store.ingest import ingest as run_ingest

    ds = get_dataset(name)
    roles = [require_role(ds, role)] if role else None
    opts = IngestOptions(size=size, strict=strict, workers=workers, selection=selection,
                         extra=_parse_extra(option))
    for res in run_ingest(ds, workspace(), source, roles, opts, force):
        res.report.summarise()
        if res.skipped_as_unchanged:
            console.print(f"[dim]{name}/{res.role}: sources unchanged, store kept (use --force to rebuild)[/dim]")
        _print_info(open_store(res.path).info(), len(res.report.skipped))


def _print_info(info: dict, skipped: int | None = None) -> None:
    t = Table(title=f"{info['dataset']} / {info['role']}", show_header=False)
    for key in ("path", "fingerprint", "n_volumes", "n_ich_volumes", "n_slices", "n_ich_slices", "image_size"):
        t.add_row(key, str(info[key]))
    t.add_row("subtype volumes", ", ".join(f"{k}={v}" for k, v in info["subtype_volumes"].items()))
    if skipped is not None:
        t.add_row("skipped inputs", str(skipped))
    console.print(t)


@app.command()
def info(name: str, role: Optional[str] = typer.Option(None), as_json: bool = typer.Option(False, "--json")) -> None:
    """Summarise a dataset's store: size, ICH slices, subtypes, fingerprint."""
    ds = get_dataset(name)
    from ichbench.store.info import store_info  # metadata only: no zarr, no pass over the arrays
    data = store_info(store_path(workspace(), name, require_role(ds, role)))
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        _print_info(data)


@app.command()
def verify(name: str, role: Optional[str] = typer.Option(None)) -> None:
    """Re-hash a store and check its structure; exits non-zero on any mismatch."""
    ds = get_dataset(name)
    path = store_path(workspace(), name, require_role(ds, role))
    problems = open_store(path).verify()
    if problems:
        for p in problems:
            print(f"{path}: {p}")
        raise typer.Exit(1)
    console.print(f"{path}: OK")


@app.command()
def splits(name: str, k: Optional[int] = typer.Option(None, help="Number of folds (paper: 10 hssayeni, 5 segcq500)."),
           role: Optional[str] = typer.Option(None)) -> None:
    """Write the canonical k-fold split of a dataset's volumes (JSON with a sha256 hash)."""
    ds = get_dataset(name)
    root = workspace()
    k = k or PAPER_K.get(name, 5)
    split = split_for_store(open_store(store_path(root, name, require_role(ds, role))), k)
    path = save_split(split, root / "splits" / f"{name}-k{k}.json")
    console.print(f"{path}  hash={split['hash']}")
    for f in split["folds"]:
        console.print(f"  fold {f['fold']}: {len(f['test'])} volumes ({f['n_ich']} with ICH)")
