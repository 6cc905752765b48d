"""The one MLflow access layer (`ichbench.tracking.mlflow_store.Tracker`) on a real SQLite store."""

from __future__ import annotations

import shutil

import pytest

from ichbench.errors import IchbenchError
from ichbench.store import open_store
from ichbench.tracking.mlflow_store import MLFLOW_PARENT_RUN_ID, Tracker, default_tracking_uri


def test_the_parent_tag_is_mlflows_own_constant():
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID as mlflows
    assert MLFLOW_PARENT_RUN_ID == mlflows


def test_runs_tags_text_and_the_store_as_a_dataset_input(tmp_path, phantom_store, mlflow_template):
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")   # migrated once a session
    tr = Tracker(default_tracking_uri(tmp_path), tmp_path)
    exp = tr.experiment("phantom")
    parent = tr.start_run(exp, "parent", {"ichbench.kind": "parent"}).info.run_id
    child = tr.start_run(exp, "child", {"ichbench.kind": "fold"}, parent).info.run_id
    tr.tags(child, {"ichbench.node": "n1", "ichbench.attempts": 2})
    tr.text_artifact(child, "hello\n", "notes.txt")
    store = open_store(phantom_store)
    tr.store_input(child, store, "training")
    run = tr.client.get_run(child)
    assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent
    assert run.data.tags["ichbench.node"] == "n1" and run.data.tags["ichbench.attempts"] == "2"
    [inp] = run.inputs.dataset_inputs
    assert inp.dataset.name == "phantom/segmentation" and inp.dataset.digest == store.fingerprint[:36]
    assert str(store.path) in inp.dataset.source
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "training")]
    local = tr.client.download_artifacts(child, "notes.txt", str(tmp_path / "dl"))
    assert open(local).read() == "hello\n"


def test_reading_a_store_that_is_not_there_is_one_line(tmp_path):
    uri = default_tracking_uri(tmp_path / "nowhere")
    with pytest.raises(IchbenchError, match=r"mlflow.db: no MLflow tracking store here"):
        Tracker.existing(uri)
    assert not (tmp_path / "nowhere" / "mlflow.db").exists()
