"""The one workspace root for stores, raw data, caches and tracking."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ICHBENCH_HOME"


def home(explicit: str | Path | None = None) -> Path:
    """`--home` wins over ICHBENCH_HOME, which wins over ~/.ichbench."""
    root = Path(explicit or os.environ.get(ENV) or Path.home() / ".ichbench").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()
