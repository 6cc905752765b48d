"""Fixtures of the ichbench-nnunet tests: one small phantom segmentation store per session.

The store is ingested through `ichbench.api.ingest`, as ichbench's own tests do (their
`phantom_stores` fixture), but smaller in slices: nnU-Net plans, preprocesses and predicts
whole volumes, and the smoke run must stay well under the suite's time on two CPU cores.
"""

from __future__ import annotations

import shutil

import pytest

# 20 volumes: k = 5 folds of 4 test volumes and 16 training volumes (12 with hemorrhage in all)
PHANTOM = {"volumes": 20, "slices": 12, "native_size": 64, "pretrain_volumes": 1}
STORE_SIZE = 64


@pytest.fixture(scope="session")
def nnunet_phantom(tmp_path_factory):
    """An ICHBENCH_HOME holding the phantom's segmentation store at 64 x 64."""
    from ichbench.api import SEGMENTATION, IngestOptions, get_dataset, ingest, reset_registry

    root = tmp_path_factory.mktemp("nnunet_phantom")
    reset_registry()
    ingest(get_dataset("phantom"), root, roles=[SEGMENTATION],
           options=IngestOptions(size=STORE_SIZE, extra=dict(PHANTOM)))
    return root


@pytest.fixture
def home(nnunet_phantom, tmp_path, monkeypatch):
    """A fresh copy of the session's phantom home, with only this plugin loaded."""
    from ichbench.api import reset_registry

    root = tmp_path / "home"
    shutil.copytree(nnunet_phantom, root, symlinks=True)
    monkeypatch.setenv("ICHBENCH_HOME", str(root))
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", "ichbench-nnunet")
    reset_registry()
    yield root
    reset_registry()
