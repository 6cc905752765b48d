"""Everyday commands: wall time of `ichbench --help`, `methods`, `datasets`, `plugins` and
`data info` in fresh processes, with the built-ins only and with the example plugins installed.

    .venv/bin/python benchmarks/listing.py [--repeat 5]

Each command is timed `--repeat` times (median reported). For scale the same table shows what an
import of torch alone costs in a fresh interpreter: the listing path must stay well below it.
Goal: every listing command <= 1 s on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ICHBENCH = [sys.executable, "-m", "ichbench.cli.main"]


def timed(cmd: list[str], env: dict, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ICHBENCH_HOME": home}
        from ichbench.datasets.base import IngestOptions, get_dataset
        from ichbench.ingest import ingest
        ingest(get_dataset("phantom"), Path(home), options=IngestOptions(
            size=64, extra={"volumes": 6, "slices": 8, "native_size": 64, "pretrain_volumes": 1}))
        commands = [["--help"], ["methods"], ["datasets"], ["plugins"], ["data", "info", "phantom"]]
        base = timed([sys.executable, "-c", "pass"], env, args.repeat)
        torch_import = timed([sys.executable, "-c", "import torch"], env, args.repeat)
        print(f"python -c pass: {base:.2f} s; python -c 'import torch': {torch_import:.2f} s\n")
        print(f"{'command':<24}{'built-ins only':>16}{'+ example plugins':>20}{'vs torch import':>18}")
        for cmd in commands:
            alone = timed(ICHBENCH + cmd, {**env, "ICHBENCH_LOAD_PLUGINS": ""}, args.repeat)
            with_plugins = timed(ICHBENCH + cmd, {k: v for k, v in env.items() if k != "ICHBENCH_LOAD_PLUGINS"},
                                 args.repeat)
            print(f"{'ichbench ' + ' '.join(cmd):<24}{alone:>14.2f} s{with_plugins:>18.2f} s"
                  f"{with_plugins / torch_import:>17.2f}x")


if __name__ == "__main__":
    main()
