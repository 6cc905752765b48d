"""`ichbench plugin ...`: start a third-party method or dataset package."""

from __future__ import annotations

from pathlib import Path

import typer

from ichbench.cli.common import fail
from ichbench.errors import IchbenchError

app = typer.Typer(help="Write your own method or dataset as a separate, pip-installable plugin package.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Plugin packages (see docs/plugins.md)."""  # keeps `new` a subcommand, not the group itself


@app.command()
def new(name: str = typer.Argument(..., help="Plugin name, e.g. my-method (the package is ichbench-my-method)."),
        kind: str = typer.Option("method", "--kind", help="method (a pretext) or dataset (a reader)."),
        directory: Path = typer.Option(Path("."), "--dir", help="Folder to create the package in."),
        ) -> None:
    """Scaffold a plugin package that installs and whose generated tests pass as they are."""
    from ichbench.plugins.scaffold import names_for, scaffold

    try:
        root, files = scaffold(name, kind, directory)
    except IchbenchError as exc:
        fail(str(exc))
    for f in files:
        typer.echo(f"created {f}")
    registered = names_for(name)["registered"]
    listing = "ichbench methods" if kind == "method" else "ichbench datasets"
    typer.echo(f"\nnext:\n  pip install -e {root}\n  pytest {root / 'tests'}\n  {listing}    # lists {registered}")
