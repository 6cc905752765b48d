"""The fold models a prediction averages: every finished fold's `model.pt` (written by the engine,
logged by the driver as each fold run's `checkpoints/model.pt`), found through MLflow by run id,
through a leaderboard entry's run id, or given as files.

Preprocessing, threshold and cavity mask come from the models' own recorded config, never from
today's defaults: a model is applied exactly as it was evaluated.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ichbench.errors import IchbenchError
from ichbench.names import inside
from ichbench.train import checkpoint as ckpt


@dataclass
class FoldModel:
    fold: int
    payload: dict              # the model.pt contents
    path: Path
    sha256: str


@dataclass
class Ensemble:
    folds: list[FoldModel]
    run_id: str | None = None
    entry: str | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def first(self) -> dict:
        return self.folds[0].payload

    @property
    def config(self) -> dict:
        return self.first["config"]

    @property
    def method(self) -> str:
        return self.first["method"]

    @property
    def image_size(self) -> int:
        return int(self.config["finetune"]["image_size"])

    @property
    def store_size(self) -> int:
        return int(self.first["store_size"])

    @property
    def threshold(self) -> float:
        return float(self.config["finetune"]["threshold"])

    @property
    def icm(self) -> dict | None:
        return self.first.get("icm")

    @property
    def classes(self) -> list[str] | None:
        """The class names of a subtypes model (ids 1..C of its label map); None: binary."""
        return self.first.get("classes")


def _check_compatible(folds: list[FoldModel]) -> None:
    ref = folds[0].payload
    for f in folds[1:]:
        p = f.payload
        same = (p["method"], p["config"]["model"], p["config"]["finetune"]["image_size"], p["store_size"],
                (p.get("icm") or {}).get("source"), p["config"].get("input"), p.get("classes")) == (
                    ref["method"], ref["config"]["model"], ref["config"]["finetune"]["image_size"],
                    ref["store_size"], (ref.get("icm") or {}).get("source"), ref["config"].get("input"),
                    ref.get("classes"))
        if not same:
            raise IchbenchError(f"{f.path}: fold {f.fold} was trained differently from fold {folds[0].fold} "
                                "(method, U-Net, sizes, input channels, cavity source or classes): they cannot be "
                                "averaged")


def _select(folds: list[FoldModel], wanted: list[int] | None, where: str) -> list[FoldModel]:
    if wanted is None:
        return folds
    have = {f.fold: f for f in folds}
    missing = [k for k in wanted if k not in have]
    if missing:
        raise IchbenchError(f"{where}: no model for fold(s) {missing}; it has folds {sorted(have)}")
    return [have[k] for k in wanted]


def _fold_model(path: Path) -> FoldModel:
    payload = ckpt.load_model(path)
    return FoldModel(int(payload["fold"]), payload, Path(path), ckpt.sha256_file(path))


def from_files(paths: list[Path], folds: list[int] | None = None) -> Ensemble:
    models = sorted((_fold_model(Path(p)) for p in paths), key=lambda f: f.fold)
    models = _select(models, folds, ", ".join(str(p) for p in paths))
    _check_compatible(models)
    return Ensemble(models, provenance={"source": "files"})


def from_run(run_id: str, tracking_uri: str, folds: list[int] | None = None, cache: Path | None = None) -> Ensemble:
    """The fold models of an `ichbench run` parent run (or of the parent of a fold run)."""
    from ichbench.tracking.mlflow_store import MLFLOW_PARENT_RUN_ID, TAG, Tracker
    tr = Tracker(tracking_uri, Path(cache or tempfile.gettempdir()))
    try:
        run = tr.client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own types for unknown ids
        raise IchbenchError(f"no run {run_id} in the tracking store {tracking_uri}") from None
    parent_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID) if run.data.tags.get(f"{TAG}kind") == "fold" else run_id
    children = tr.client.search_runs([run.info.experiment_id],
                                     filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and "
                                                   f"tags.`{TAG}kind` = 'fold' and attributes.status = 'FINISHED'")
    # ids and tags come from the tracking store: checked like names before they become folders
    dest = inside(Path(cache or tempfile.mkdtemp(prefix="ichbench-predict-")), parent_id)
    models = []
    for child in children:
        fold_dir = inside(dest, f"fold_{child.data.tags.get(f'{TAG}fold')}")
        try:
            local = tr.client.download_artifacts(child.info.run_id, f"checkpoints/{ckpt.MODEL_NAME}",
                                                 str(fold_dir))
        except Exception:  # noqa: BLE001 - a fold run without the file (older ichbench)
            continue
        models.append(_fold_model(Path(local)))
    if not models and run.data.tags.get(f"{TAG}own_finetuning") == "true":
        method = run.data.tags.get(f"{TAG}method")
        raise IchbenchError(f"run {parent_id} ({tracking_uri}) is of {method}, which fine-tunes by "
                            "itself (plugin API 2): ichbench predict applies only the shared "
                            "recipe's U-Nets; each fold's own model is named under `model` in its "
                            "result.json")
    if not models:
        raise IchbenchError(f"run {parent_id} ({tracking_uri}) has no finished fold with a model.pt checkpoint "
                            "(runs made before ichbench logged fold models cannot be applied; rerun it)")
    models = _select(sorted(models, key=lambda f: f.fold), folds, f"run {parent_id}")
    _check_compatible(models)
    return Ensemble(models, run_id=parent_id, provenance={"source": "mlflow", "tracking_uri": tracking_uri})


def from_entry(entry_path: Path, tracking_uri: str, folds: list[int] | None = None,
               cache: Path | None = None) -> Ensemble:
    """A leaderboard entry's run: its models are in the tracking store it was submitted from."""
    from ichbench.leaderboard.jsonio import read_json
    entry = read_json(Path(entry_path))
    run_id = entry.get("mlflow_run_id") if isinstance(entry, dict) else None
    if not run_id:
        raise IchbenchError(f"{entry_path}: not a leaderboard entry (no mlflow_run_id)")
    ens = from_run(str(run_id), tracking_uri, folds, cache)
    ens.entry = str(entry_path)
    return ens


def load_ensemble(*, run_id: str | None = None, entry: Path | None = None, checkpoints: list[Path] | None = None,
                  tracking_uri: str | None = None, folds: list[int] | None = None,
                  cache: Path | None = None) -> Ensemble:
    given = sum(x is not None and x != [] for x in (run_id, entry, checkpoints))
    if given != 1:
        raise IchbenchError("give exactly one of --run, --entry and --checkpoint")
    if checkpoints:
        return from_files(checkpoints, folds)
    if entry is not None:
        return from_entry(entry, tracking_uri, folds, cache)
    return from_run(run_id, tracking_uri, folds, cache)
