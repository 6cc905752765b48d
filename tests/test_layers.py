"""The flow is one way: every module imports only from its own stage or from stages below it.

The order is declared once, here and in docs/architecture.md ("Layers"); a new package must be
placed in it. Imports inside functions count too: a lazy import is still a dependency, and hiding
a cycle in a function is how the old store <-> datasets and methods <-> train cycles lived.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ichbench

ROOT = Path(ichbench.__file__).parent

# Lowest first. A module may import its own package and any package of a lower layer, nothing else.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors"),
    ("files", "names", "parallel"),
    ("console", "home", "plugins", "splits", "config"),
    ("preprocess", "models", "evaluate", "losses", "transforms"),
    ("store",),
    ("datasets",),
    ("export",),    # files exchanged with tools outside ichbench: exported folds, their masks read back
    ("ingest",),
    ("methods",),
    ("resolve",),
    ("train",),
    ("icm",),
    ("tracking",),
    ("leaderboard",),
    ("orchestrate",),
    ("predict",),
    ("api",),
    ("cli",),
    ("testing",),   # helpers for tests and benchmarks: nothing in ichbench imports them
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def stage_of(module: str) -> str:
    """`ichbench.store.reader` -> `store`; `ichbench` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool, root: Path = ROOT):
    """(line, imported module) for every ichbench import in a module, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "ichbench" or alias.name.startswith("ichbench."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "ichbench":   # `from ichbench import transforms`: a stage, or the root's names
                for alias in node.names:
                    sub = root / alias.name
                    yield node.lineno, (f"ichbench.{alias.name}" if sub.is_dir() or sub.with_suffix(".py").exists()
                                        else "ichbench")
            elif target.startswith("ichbench."):
                yield node.lineno, target


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        stage = stage_of(module)
        if stage not in LAYER_OF:
            bad.append(f"{path.relative_to(root.parent)}: stage {stage!r} is not placed in LAYERS")
            continue
        for line, target in imported(ast.parse(path.read_text()), module, path.name == "__init__.py", root):
            dst = stage_of(target)
            if dst == stage:
                continue
            if dst not in LAYER_OF:
                bad.append(f"{path.relative_to(root.parent)}:{line}: imports {target}, a stage not in LAYERS")
            elif LAYER_OF[dst] >= LAYER_OF[stage]:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {stage} (layer {LAYER_OF[stage]}) imports "
                           f"{target} (layer {LAYER_OF[dst]}): not below it")
    return bad


def test_every_import_goes_down_the_layers():
    assert violations() == []


def test_every_stage_on_disk_is_placed():
    stages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    stages |= {p.stem for p in ROOT.glob("*.py")}
    assert stages == set(LAYER_OF)


def test_an_upward_import_is_reported_with_its_line(tmp_path):
    """The check itself can fail: a copy of two stages where the lower one imports the higher."""
    pkg = tmp_path / "ichbench"
    (pkg / "store").mkdir(parents=True)
    (pkg / "train").mkdir()
    for f in (pkg / "__init__.py", pkg / "store" / "__init__.py", pkg / "train" / "__init__.py"):
        f.write_text("")
    (pkg / "store" / "reader.py").write_text("import os\n\ndef f():\n    from ichbench.train import engine\n")
    (pkg / "train" / "engine.py").write_text("from ..store import reader\n")
    assert violations(pkg) == ["ichbench/store/reader.py:4: store (layer 4) imports ichbench.train "
                               "(layer 10): not below it"]


@pytest.mark.parametrize("source, expected", [
    ("from ichbench import transforms", ["ichbench.transforms"]),
    ("from ichbench import UNKNOWN_LABEL", ["ichbench"]),
    ("import ichbench.store.reader", ["ichbench.store.reader"]),
    ("from .writer import StoreWriter", ["ichbench.store.writer"]),
    ("from .. import errors", ["ichbench.errors"]),
])
def test_imports_are_read_as_python_resolves_them(source, expected):
    got = [t for _, t in imported(ast.parse(source), "ichbench.store.reader", False)]
    assert got == expected
