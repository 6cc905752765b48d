"""`ichbench plugin new`: write a plugin package that installs and whose test passes unchanged.

A method plugin starts as rotation prediction (Gidaris et al. 2018), a small but real pretext: the
encoder learns to tell which of four rotations a slice was given. A dataset plugin starts as a
reader for a folder of NIfTI cases (`<case>/ct.nii.gz` + `<case>/mask.nii.gz`). Both import only
from `ichbench.api`, and each comes with a test that runs as generated, so an author changes one
working thing at a time instead of starting from a blank file.

The templates are in `ichbench.plugins.templates`.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from ichbench.errors import IchbenchError
from ichbench.plugins.templates.common import COMMON
from ichbench.plugins.templates.dataset import DATASET_FILES
from ichbench.plugins.templates.method import METHOD_FILES

KINDS = ("method", "dataset")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def names_for(name: str) -> dict[str, str]:
    """Every spelling the package needs, from `my-method` (or `ichbench-my-method`):
    distribution `ichbench-my-method`, module `ichbench_my_method`, registered name `my_method`,
    entry-point name `my-method` and class prefix `MyMethod`."""
    raw = name.strip().lower()
    slug = raw[len("ichbench-"):] if raw.startswith("ichbench-") else raw
    if not _NAME_RE.match(slug):
        raise IchbenchError(f"plugin name {name!r} must be lowercase letters, digits and single - or _ "
                            "between them, starting with a letter (e.g. my-method)")
    snake = slug.replace("-", "_")
    return {"slug": slug.replace("_", "-"), "dist": "ichbench-" + slug.replace("_", "-"),
            "module": "ichbench_" + snake, "registered": snake,
            "camel": "".join(part.capitalize() for part in snake.split("_"))}


def scaffold(name: str, kind: str = "method", directory: Path | str = ".") -> tuple[Path, list[Path]]:
    """Write the package into `directory/ichbench-<name>/`; returns its root and the files written."""
    if kind not in KINDS:
        raise IchbenchError(f"unknown plugin kind {kind!r}; known: {', '.join(KINDS)}")
    n = names_for(name)
    root = Path(directory).expanduser().resolve() / n["dist"]
    if root.exists() and any(root.iterdir()):
        raise IchbenchError(f"{root} already exists and is not empty; choose another --dir or name")
    files = {**COMMON, **(METHOD_FILES if kind == "method" else DATASET_FILES)}
    values = {**n, "kind": kind, "hook": "register_methods" if kind == "method" else "register_datasets",
              "what": "a pretext method" if kind == "method" else "a dataset reader",
              "impl": "method" if kind == "method" else "dataset",
              "classname": n["camel"] + ("Method" if kind == "method" else "Dataset")}
    written = []
    for rel, text in files.items():
        path = root / Template(rel).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
        written.append(path)
    return root, written
