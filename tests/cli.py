"""Running the `ichbench` command in the test's own process, as its console script does, so a case
that raises fails the test with the traceback instead of hiding it in a child's stderr."""

from __future__ import annotations

import sys

import pytest

from ichbench.cli.main import main


def call(argv, monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `ichbench ARGV`."""
    monkeypatch.setattr(sys, "argv", ["ichbench", *[str(a) for a in argv]])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err
