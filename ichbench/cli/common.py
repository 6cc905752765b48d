"""Shared CLI state: the workspace root and the one-line error convention."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ichbench.errors import IchbenchError
from ichbench.home import ENV, home
from ichbench.store import location

STATE: dict = {"home": None, "store_root": None}


def workspace() -> Path:
    root = home(STATE["home"])
    os.environ[ENV] = str(root)  # so worker processes resolve the same home
    if STATE.get("store_root"):
        # checked once here (an unknown protocol, a file, is one line); `store_path` reads it from
        # there. Ray tasks get each store's location in their arguments, never from this variable.
        value = STATE["store_root"]
        where = location.ENV if os.environ.get(location.ENV) == value else "--store-root"
        try:
            stores = location.parse(value)
        except IchbenchError as exc:
            raise IchbenchError(f"{where} {exc}") from None
        if not location.is_remote(stores):
            stores = stores.expanduser()
            _check_local_root(stores, f"{where} {value}")
            stores = stores.resolve()
        os.environ[location.ENV] = str(stores)
    else:
        _check_local_root(root / "stores", f"the store root {root / 'stores'}")
    return root


def _check_local_root(stores: Path, named: str) -> None:
    """A local store root must be a folder or able to become one: otherwise every store under it
    reads as "not ingested yet" and only ingest, much later, would say why."""
    if stores.exists() and not stores.is_dir():
        raise IchbenchError(f"{named}: is a file, not a folder")
    for parent in stores.parents:
        if parent.exists() and not parent.is_dir():
            raise IchbenchError(f"{named}: {parent} is a file, not a folder")


def fail(message: str, code: int = 2) -> None:
    print(f"ichbench: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def interrupted(message: str = "interrupted") -> None:
    """Ctrl-C, once everything it stopped is stopped: one line and exit 130 (click would print
    "Aborted!" and exit 1)."""
    try:
        print(f"ichbench: {message}", file=sys.stderr, flush=True)
    except OSError:  # the terminal went away
        pass
    raise typer.Exit(INTERRUPTED)
