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
"""


def imported_by(args: list[str], env_extra: dict) -> list[str]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(args)],
                         capture_output=True, text=True, env=env, timeout=120)
    return json.loads(out.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["methods"], ["methods", "--json"], ["datasets"], ["plugins"]])
@pytest.mark.parametrize("plugins", ["built-ins only", "with the example plugins"])
def test_listing_imports_no_heavy_module(args, plugins):
    # the example plugins (ichbench-vicreg, ichbench-mae) are installed by the README's set-up and
    # keep their torch code out of what registration imports, as docs/plugins.md recommends
    env = {"ICHBENCH_LOAD_PLUGINS": ""} if plugins == "built-ins only" else {"ICHBENCH_LOAD_PLUGINS": "vicreg,mae"}
    assert imported_by(args, env) == []


def test_data_info_reads_metadata_only(phantom_home):
    assert imported_by(["data", "info", "phantom"], {"ICHBENCH_HOME": str(phantom_home)}) == []
