import os

import pytest

# Tests never autoload third-party plugins installed in the environment; they register their own.
os.environ["ICHBENCH_LOAD_PLUGINS"] = ""
os.environ.pop("ICHBENCH_STRICT_PLUGINS", None)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ICHBENCH_HOME for one test."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("ICHBENCH_HOME", str(root))
    return root


@pytest.fixture
def registry():
    """A freshly loaded plugin registry, reset after the test."""
    from ichbench.plugins import get_registry, reset_registry
    reset_registry()
    yield get_registry()
    reset_registry()
