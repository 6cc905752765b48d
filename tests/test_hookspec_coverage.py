"""Meta-test: every hookspec is exercised by a test plugin.

A hook counts as tested when some test file (other than this one) defines a test plugin that
implements it — `@hookimpl` directly above `def <hook>(` — whether in code or in the source of a
plugin module the test writes out (the dist-info tests do that), and the same file has tests.
A new hookspec without such a test fails here by name.
"""

from __future__ import annotations

import re
from pathlib import Path

from ichbench.plugins import hookspecs
from ichbench.plugins.manager import HOOK_NAMES

TESTS = Path(__file__).resolve().parent
IMPL_RE = re.compile(r"@hookimpl(?:\([^)]*\))?\s*\n\s*def\s+(\w+)\s*\(")


def hookspec_names() -> list[str]:
    """Functions that pluggy marked as hookspecs of the `ichbench` project."""
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, marker))


def implemented_in_tests(texts: dict[str, str]) -> dict[str, list[str]]:
    """hook name -> test files with a test plugin implementing it."""
    found: dict[str, list[str]] = {}
    for name, text in texts.items():
        if not re.search(r"^\s*def test_", text, re.M):
            continue
        for hook in set(IMPL_RE.findall(text)):
            found.setdefault(hook, []).append(name)
    return found


def untested(specs, texts: dict[str, str]) -> list[str]:
    found = implemented_in_tests(texts)
    return [s for s in specs if s not in found]


def suite_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TESTS.rglob("test_*.py")) if p.resolve() != Path(__file__).resolve()}


def test_every_hookspec_has_a_test_plugin():
    specs = hookspec_names()
    assert specs, "no hookspecs found: the marker attribute changed?"
    missing = untested(specs, suite_texts())
    assert not missing, f"hookspecs with no test plugin implementing them: {', '.join(missing)}"


def test_the_manager_knows_exactly_the_hookspecs():
    # the manager rejects unknown hooks by this list; it must not drift from the specs
    assert HOOK_NAMES == hookspec_names()


def test_the_check_catches_an_untested_hook():
    texts = {"test_a.py": "@hookimpl\ndef register_methods(register):\n    pass\n\ndef test_x():\n    pass\n",
             "test_b.py": "SRC = '''\n@hookimpl\n    def register_datasets(self, register):\n'''\n",  # no tests here
             "test_c.py": "def test_y():\n    register_widgets = 1\n"}                               # not a plugin
    assert untested(["register_datasets", "register_methods", "register_widgets"], texts) == \
        ["register_datasets", "register_widgets"]
    assert implemented_in_tests(texts) == {"register_methods": ["test_a.py"]}
