"""Shared CLI state: the workspace root and the one-line error convention."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ichbench.home import ENV, home

STATE: dict = {"home": None}


def workspace() -> Path:
    root = home(STATE["home"])
    os.environ[ENV] = str(root)  # so worker processes resolve the same home
    return root


def fail(message: str, code: int = 2) -> None:
    print(f"ichbench: error: {message}", file=sys.stderr)
    raise typer.Exit(code)
