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


# -- shared phantom stores and one Ray cluster for the orchestration tests -------------------------

# 15 volumes: 3 test volumes per fold at k=5, 5 at k=3
PHANTOM_SMALL = {"volumes": 15, "slices": 16, "native_size": 64, "pretrain_volumes": 4}


@pytest.fixture(scope="session")
def phantom_stores(tmp_path_factory):
    """A small phantom (segmentation + pretraining stores at 64x64), ingested once per session."""
    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.plugins import reset_registry
    from ichbench.store.ingest import ingest

    root = tmp_path_factory.mktemp("phantom_home")
    reset_registry()
    ingest(get_dataset("phantom"), root, options=IngestOptions(size=64, extra=dict(PHANTOM_SMALL)))
    return root


@pytest.fixture(scope="session")
def phantom_store(phantom_stores):
    """Path of the session phantom's segmentation store (64x64)."""
    from ichbench.store import store_path
    return store_path(phantom_stores, "phantom", "segmentation")


@pytest.fixture
def phantom_home(phantom_stores, tmp_path, monkeypatch):
    """A fresh ICHBENCH_HOME holding a copy of the session's phantom stores and sources."""
    import shutil
    root = tmp_path / "home"
    shutil.copytree(phantom_stores, root, symlinks=True)
    monkeypatch.setenv("ICHBENCH_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster (2 CPUs) shared by every test that needs Ray."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
