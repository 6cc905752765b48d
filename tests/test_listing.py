"""Listing commands stay fast: they import neither torch nor Ray, MLflow or zarr (issue 14).

Each command runs in a fresh interpreter, as a user runs it, and reports which heavy modules it
imported; speed itself is measured by benchmarks/listing.py, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow", "zarr")
PROBE = """
import json, sys
from ichbench.cli.main import main
sys.argv = ["ichbench", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
print(json.dumps(sorted(m for m in {examples!r} if m in sys.modules)), file=sys.stderr)
"""
EXAMPLES = ("ichbench_vicreg.plugin", "ichbench_mae.plugin")


def imported(args: list[str], env_extra: dict) -> tuple[list[str], list[str]]:
    """(heavy modules, example plugin modules) a command imported."""
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, examples=EXAMPLES), json.dumps(args)],
                         capture_output=True, text=True, env=env, timeout=120)
    heavy, examples = out.stderr.strip().splitlines()[-2:]
    return json.loads(heavy), json.loads(examples)


def imported_by(args: list[str], env_extra: dict) -> list[str]:
    return imported(args, env_extra)[0]


@pytest.mark.parametrize("args", [["--help"], ["methods"], ["methods", "--json"], ["datasets"], ["plugins"]])
@pytest.mark.parametrize("plugins", ["built-ins only", "with the example plugins"])
def test_listing_imports_no_heavy_module(args, plugins):
    # the example plugins (ichbench-vicreg, ichbench-mae) are installed by the README's set-up and
    # keep their torch code out of what registration imports, as docs/plugins.md recommends
    env = {"ICHBENCH_LOAD_PLUGINS": ""} if plugins == "built-ins only" else {"ICHBENCH_LOAD_PLUGINS": "vicreg,mae"}
    heavy, examples = imported(args, env)
    assert heavy == []
    # --help lists commands and loads no plugin; the others load the registry, examples included
    loads = plugins != "built-ins only" and args != ["--help"]
    assert examples == (sorted(EXAMPLES) if loads else [])


def test_data_info_reads_metadata_only(phantom_home):
    assert imported_by(["data", "info", "phantom"], {"ICHBENCH_HOME": str(phantom_home)}) == []
