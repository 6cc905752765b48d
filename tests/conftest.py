import atexit
import os
import shutil
import tempfile

import pytest

# One intra-op thread per test process (and the commands it starts): scripts/test.sh runs two
# workers on two cores, and torch's OpenMP threads spin while they wait for a core, so two threads
# each made the suite slower, not faster. Ray's fold workers run one thread anyway.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never autoload third-party plugins installed in the environment; they register their own.
os.environ["ICHBENCH_LOAD_PLUGINS"] = ""
os.environ.pop("ICHBENCH_STRICT_PLUGINS", None)
# Training maps stores through the node cache (ichbench/train/node_cache.py): one temporary folder
# for the session (Ray workers and CLI subprocesses inherit it), never the user's ~/.ichbench.
_NODE_CACHE = tempfile.mkdtemp(prefix="ichbench-node-cache-")
os.environ["ICHBENCH_NODE_CACHE"] = _NODE_CACHE
atexit.register(shutil.rmtree, _NODE_CACHE, True)


@pytest.fixture(autouse=True)
def _cli_state_does_not_leak():
    """The CLI keeps `--home` in a process-wide STATE and exports ICHBENCH_HOME (and
    ICHBENCH_STORE_ROOT) for its workers:
    right for one command per process, but a test that invokes it must not hand its home to the
    next test."""
    from ichbench.cli.common import STATE
    names = ("ICHBENCH_HOME", "ICHBENCH_STORE_ROOT")
    saved_state, saved_env = dict(STATE), {n: os.environ.get(n) for n in names}
    yield
    STATE.clear()
    STATE.update(saved_state)
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
def phantom_stores(tmp_path_factory, mlflow_template):
    """A small phantom (segmentation + pretraining stores at 64x64), ingested once per session."""
    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.plugins import reset_registry
    from ichbench.ingest import ingest

    root = tmp_path_factory.mktemp("phantom_home")
    reset_registry()
    ingest(get_dataset("phantom"), root, options=IngestOptions(size=64, extra=dict(PHANTOM_SMALL)))
    shutil.copy(mlflow_template, root / "mlflow.db")
    return root


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An empty MLflow SQLite store, its schema migrated. Creating one runs MLflow's alembic
    migrations (~5 s on two cores): made once a session, a test's home copies it (every
    `phantom_home` has it) instead of migrating its own."""
    from ichbench.tracking import Tracker, default_tracking_uri
    root = tmp_path_factory.mktemp("mlflow_template")
    Tracker(default_tracking_uri(root), root)
    return root / "mlflow.db"


# The learning test's phantom: enough volumes that a 384-step smoke fine-tune generalises. With the
# 15-volume phantom the held-out Dice swung between 0.21 and 0.80 with the seed, the thread count
# and the CPU's vector ISA (docs/architecture.md, "Determinism"); with 40 training volumes it stays
# within 0.64–0.84 (measured over seeds 0–3, 1 and 2 threads, AVX2 and the plain-C kernels).
PHANTOM_LEARNING = {"volumes": 60, "slices": 16, "native_size": 64, "pretrain_volumes": 1}


@pytest.fixture(scope="session")
def learning_store(tmp_path_factory):
    """Segmentation store of a 60-volume phantom at 64x64, for the learning test."""
    from ichbench.datasets.base import IngestOptions, SEGMENTATION, get_dataset
    from ichbench.plugins import reset_registry
    from ichbench.store import store_path
    from ichbench.ingest import ingest

    root = tmp_path_factory.mktemp("learning_home")
    reset_registry()
    ingest(get_dataset("phantom"), root, roles=[SEGMENTATION],
           options=IngestOptions(size=64, extra=dict(PHANTOM_LEARNING)))
    return store_path(root, "phantom", SEGMENTATION)


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
        # address="local": a cluster of its own, whatever a stale /tmp/ray/ray_current_cluster names
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
