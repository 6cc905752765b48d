"""One parent run per (method, dataset, profile), a child per pretraining and per fold.

Runs carry an `ichbench.run_key` tag (a hash of everything that determines the result), so a
rerun of the same command finds its unfinished parent and the children that already finished
instead of starting over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

from ichbench.errors import IchbenchError

MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"   # mlflow.utils.mlflow_tags, without importing MLflow

TAG = "ichbench."
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # no "Downloading artifacts" bars
logging.getLogger("alembic").setLevel(logging.WARNING)   # not "Creating initial database tables" on every new store
# MLflow's own use of SQLAlchemy APIs deprecated upstream: nothing an ichbench user can act on
warnings.filterwarnings("ignore", message=r".*The ``noload`` loader strategy is deprecated.*")


def default_tracking_uri(home: Path) -> str:
    return f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


class Tracker:
    def __init__(self, uri: str, home: Path):
        from mlflow import MlflowClient

        self.uri = uri
        self.home = Path(home)
        # Probe once, without MLflow's minutes of HTTP retries: an unreachable store must fail
        # before any training starts, and fail fast.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot track"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IchbenchError(f"MLflow tracking store {uri} is unreachable: {first[:200]}") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @classmethod
    def existing(cls, uri: str) -> "Tracker":
        """A tracker on a store that must already hold runs (submitting, predicting): a SQLite
        path without a database is an error, where MLflow would create an empty store and then
        find nothing."""
        home = Path.cwd()
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///"):])
            if not db.exists():
                raise IchbenchError(f"{db}: no MLflow tracking store here (run `ichbench run` first, "
                                    "or pass --tracking-uri)")
            home = db.parent
        return cls(uri, home)

    # -- experiments and runs ---------------------------------------------------------------------
    def experiment(self, dataset: str) -> str:
        name = f"ichbench/{dataset}"
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:"):
            # next to the database, not in whatever directory the user happens to be in
            artifacts = (self.home / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=artifacts)

    def find_run(self, experiment_id: str, tags: dict[str, str], statuses=None):
        flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"])
        for r in runs:
            if statuses is None or r.info.status in statuses:
                return r
        return None

    def start_run(self, experiment_id: str, name: str, tags: dict[str, str], parent_id: str | None = None):
        tags = dict(tags)
        if parent_id:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        return self.client.create_run(experiment_id, tags=tags, run_name=name)

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- logging ------------------------------------------------------------------------------------
    def params(self, run_id: str, config: dict) -> None:
        from mlflow.entities import Param
        existing = self.client.get_run(run_id).data.params
        flat = {k: v[:6000] for k, v in _flatten(config).items() if k not in existing}
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def metrics(self, run_id: str, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in values.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def store_input(self, run_id: str, store, context: str) -> None:
        """The slice store a run read, as an MLflow dataset input: its name, fingerprint (the
        digest) and location, shown in the UI's Datasets column. The `ichbench.dataset*` tags
        stay: runs are found by them (cache reuse, submit)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        with warnings.catch_warnings():   # "can be interpreted in multiple ways": all are local files
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(store.path))
        ds = MetaDataset(source=source,
                         name=f"{store.attrs.get('dataset', '?')}/{store.attrs.get('role', '?')}",
                         digest=store.fingerprint[:36])
        self.client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                              tags=[InputTag("mlflow.data.context", context)])])

    def json_artifact(self, run_id: str, obj, name: str) -> None:
        """`obj` as JSON, infinite values as "inf" (`ichbench.evaluate.infjson`: JSON has no inf)."""
        from ichbench.evaluate.infjson import encode
        self.client.log_dict(run_id, encode(obj), name)

    def file_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def text_artifact(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def bytes_artifact(self, run_id: str, data: bytes, name: str) -> None:
        """A file of `data` (e.g. a PNG) named `name` in the run's artifacts."""
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(run_id, str(path))
