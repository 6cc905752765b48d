"""`ichbench data ...`: ingest, inspect, verify and split the slice stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ichbench.cli.common import fail, workspace
from ichbench.config import split_assignment
from ichbench.console import make_console
from ichbench.datasets.base import IngestOptions, get_dataset, require_role
from ichbench.errors import IchbenchError
from ichbench.names import inside
from ichbench.splits import fold_count, save_split, split_for_store
from ichbench.store import open_store, store_path
from ichbench.store.location import is_remote, store_root

app = typer.Typer(help="Ingest raw datasets into slice stores and inspect them.", no_args_is_help=True)
console = make_console()


def _workspace() -> Path:
    """The workspace, its store root checked before any work: a local root that is a file fails in
    `workspace()`; a remote one is asked once here, so an unreachable endpoint or refused keys is
    one line naming the root, not "no store yet" (nor, for ingest, an error after the decoding)."""
    root = workspace()
    stores = store_root(root)
    if is_remote(stores):
        stores.exists()   # IchbenchError naming the root when the object store fails the request
    return root


def _parse_extra(items: list[str]) -> dict:
    extra = {}
    for item in items:
        k, v = split_assignment(item, "--option")
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
    unlabelled: Optional[Path] = typer.Option(
        None, help="bhsd: folder of unlabelled volumes, ingested as the pretraining store (= -o unlabelled=DIR)."),
) -> None:
    """Read a dataset's raw files into its slice store(s), atomically."""
    from ichbench.ingest import ingest as run_ingest

    ds = get_dataset(name)
    roles = [require_role(ds, role)] if role else None
    extra = _parse_extra(option)
    if unlabelled is not None:
        if not hasattr(ds, "unlabelled_dir"):
            raise IchbenchError(f"--unlabelled: dataset {name!r} takes no unlabelled volumes (bhsd does)")
        extra["unlabelled"] = str(unlabelled)
    opts = IngestOptions(size=size, strict=strict, workers=workers, selection=selection, extra=extra)
    for res in run_ingest(ds, _workspace(), source, roles, opts, force):
        res.report.summarise()
        if res.skipped_as_unchanged:
            console.print(f"[dim]{name}/{res.role}: sources unchanged, store kept (use --force to rebuild)[/dim]")
        _print_info(open_store(res.path).info(), len(res.report.skipped))


def _print_info(info: dict, skipped: int | None = None) -> None:
    t = Table(title=f"{info['dataset']} / {info['role']}", show_header=False)
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")  # at 80 columns a fingerprint folds onto a second line, never cut with "…"
    for key in ("path", "fingerprint", "n_volumes", "n_ich_volumes", "n_slices", "n_ich_slices", "image_size"):
        t.add_row(key, str(info[key]))
    t.add_row("subtype volumes", ", ".join(f"{k}={v}" for k, v in info["subtype_volumes"].items()))
    if info.get("class_names"):
        t.add_row("classes", ", ".join(f"{k} {n}" for k, n in enumerate(info["class_names"], start=1)) + " (0 none)")
    if skipped is not None:
        t.add_row("skipped inputs", str(skipped))
    console.print(t)


def _roles(name: str, role: str | None) -> list[tuple[str, Path]]:
    """(role, store path) for `--role`, else for every role the dataset has."""
    ds = get_dataset(name)
    roles = [require_role(ds, role)] if role else list(ds.roles)
    root = _workspace()
    return [(r, store_path(root, name, r)) for r in roles]


def _no_store(name: str, role: str, path: Path) -> str:
    return f"{name}/{role}: no store yet at {path} (`ichbench data ingest {name} --role {role}`)"


def _existing(name: str, role: str | None) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """The requested stores split into those on disk and those not ingested yet; a one-line error
    when none of them exists (or the one asked for with --role does not)."""
    stores = _roles(name, role)
    present = [(r, p) for r, p in stores if p.exists()]
    missing = [(r, p) for r, p in stores if not p.exists()]
    if not present:
        if role:
            fail(_no_store(name, role, missing[0][1]))
        fail(f"dataset {name!r} has no store yet (roles: {', '.join(r for r, _ in stores)}); "
             f"run `ichbench data ingest {name}`")
    return present, missing


@app.command()
def info(name: str, role: Optional[str] = typer.Option(None, help="Only this role's store (default: every role)."),
         as_json: bool = typer.Option(False, "--json",
                                      help='Print {"dataset", "roles": {role: summary or null}} as JSON.')) -> None:
    """Summarise each of a dataset's stores: size, ICH slices, subtypes, fingerprint."""
    from ichbench.store.info import store_info
    present, missing = _existing(name, role)
    infos, broken = {}, []
    for r, path in present:
        try:
            infos[r] = store_info(path)   # metadata only: no zarr, no pass over the arrays
        except IchbenchError as exc:  # a damaged store must not hide the others
            broken.append(str(exc))
    if as_json:
        roles = {r: infos.get(r) for r, _ in _roles(name, role)}
        print(json.dumps({"dataset": name, "roles": roles}, indent=2))
    else:
        for data in infos.values():
            _print_info(data)
        for r, path in missing:
            console.print(f"[dim]{_no_store(name, r, path)}[/dim]", highlight=False, soft_wrap=True)
    for message in broken:
        print(f"ichbench: error: {message}", file=sys.stderr)
    if broken:
        raise typer.Exit(1)


@app.command()
def verify(name: str,
           role: Optional[str] = typer.Option(None, help="Only this role's store (default: every role)."),
           workers: int = typer.Option(1, min=1, help="Processes checking shards in parallel.")) -> None:
    """Re-hash each of a dataset's stores and check its structure; exits non-zero if any store fails."""
    present, missing = _existing(name, role)
    failed = False
    for r, path in present:
        try:
            problems = [f"{path}: {p}" for p in open_store(path).verify(workers)]
        except IchbenchError as exc:  # unreadable: a failure of this store, the others are still checked
            problems = [str(exc)]
        for p in problems:
            print(p)
        if problems:
            failed = True
        else:
            console.print(f"{path}: OK", highlight=False, soft_wrap=True)
    for r, path in missing:
        console.print(_no_store(name, r, path), highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def splits(name: str, k: Optional[int] = typer.Option(None, help="Number of folds (paper: 10 hssayeni, 5 segcq500)."),
           role: Optional[str] = typer.Option(None)) -> None:
    """Write the canonical k-fold split of a dataset's volumes (JSON with a sha256 hash)."""
    ds = get_dataset(name)
    root = _workspace()
    k = fold_count(k, name)
    split = split_for_store(open_store(store_path(root, name, require_role(ds, role))), k)
    path = save_split(split, inside(root, "splits", f"{name}-k{k}.json"))
    console.print(f"{path}  hash={split['hash']}")
    for f in split["folds"]:
        console.print(f"  fold {f['fold']}: {len(f['test'])} volumes ({f['n_ich']} with ICH)")


@app.command("export-folds")
def export_folds(name: str = typer.Argument(..., help="Dataset whose segmentation store to export."),
                 out: Path = typer.Option(..., "--out", help="New folder to write (must not exist or be empty)."),
                 k: Optional[int] = typer.Option(None, help="Number of folds (default: the dataset's canonical k)."),
                 images: bool = typer.Option(True, "--images/--no-images",
                                             help="Also write every volume in nnU-Net's raw layout."),
                 nnunet_id: int = typer.Option(502, "--nnunet-id", min=1, max=999,
                                               help="nnU-Net dataset id (Dataset<ID>_<name>)."),
                 task: str = typer.Option("binary", "--task",
                                          help="Labels: binary (hemorrhage 0/1) or subtypes (the store's class ids, "
                                               "named in dataset.json).")) -> None:
    """Write the canonical folds as files a foreign tool trains from (docs/datasets.md, "Exporting folds")."""
    from ichbench.console import progress_bar
    from ichbench.datasets.base import SEGMENTATION
    from ichbench.export.folds import export_folds as run

    ds = get_dataset(name)
    path = store_path(_workspace(), name, require_role(ds, SEGMENTATION))
    if not path.exists():
        fail(_no_store(name, SEGMENTATION, path))
    try:
        store = open_store(path)
        with progress_bar() as bar:
            bar_task = bar.add_task(f"export {name}", total=len(store.volumes) if images else 0, info="volumes")
            doc = run(store, name, out, k, images, nnunet_id, on_volume=lambda _v: bar.advance(bar_task), task=task)
    except IchbenchError as exc:
        fail(str(exc))
    console.print(f"{out}: {len(doc['volumes'])} volumes, k = {doc['k']} (split {doc['hash'][:12]}…)"
                  + ("" if images else ", lists only") + (", subtype labels" if doc.get("task") else ""),
                  highlight=False, soft_wrap=True)
    for f in doc["folds"]:
        console.print(f"  fold {f['fold']}: train {len(f['train'])}, test {len(f['test'])}", highlight=False)
