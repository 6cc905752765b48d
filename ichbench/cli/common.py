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
        # checked once here (an unknown protocol is one line); `store_path` reads it from there.
        # Ray tasks get each store's location in their arguments, never from this variable.
        value = STATE["store_root"]
        try:
            stores = location.parse(value)
        except IchbenchError as exc:
            where = location.ENV if os.environ.get(location.ENV) == value else "--store-root"
            raise IchbenchError(f"{where} {exc}") from None
        stores = stores if location.is_remote(stores) else stores.expanduser().resolve()
        os.environ[location.ENV] = str(stores)
    return root


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
