"""Where the leaderboard's files live inside its folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import ichbench

ENV = "ICHBENCH_LEADERBOARD"
RECORDS_SUFFIX = ".reproductions.json"   # reproduction records beside an entry (reproductions.py)


def default_root() -> Path:
    """ICHBENCH_LEADERBOARD, else the source checkout's `leaderboard/`, else ./leaderboard."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser().resolve()
    checkout = Path(ichbench.__file__).resolve().parents[1] / "leaderboard"
    if (checkout / "canonical.json").exists():
        return checkout
    return (Path.cwd() / "leaderboard").resolve()


@dataclass(frozen=True)
class Folder:
    root: Path

    @property
    def canonical(self) -> Path:
        return self.root / "canonical.json"

    @property
    def published_dir(self) -> Path:
        return self.root / "published"

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def schema(self) -> Path:
        return self.root / "schema" / "entry.schema.json"

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    def entry_files(self) -> list[Path]:
        """Entries: every file entries/<dataset>/* but the reproduction records beside them."""
        if not self.entries_dir.is_dir():
            return []
        return sorted(p for p in self.entries_dir.glob("*/*")
                      if p.is_file() and not p.name.startswith(".")
                      and not p.name.endswith(RECORDS_SUFFIX))

    def published_files(self) -> list[Path]:
        if not self.published_dir.is_dir():
            return []
        return sorted(p for p in self.published_dir.iterdir() if p.is_file() and not p.name.startswith("."))

    def rel(self, path: Path) -> str:
        """A path as shown in messages: relative to the folder's parent when inside it."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve().parent))
        except ValueError:
            return str(path)
