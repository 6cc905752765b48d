"""The driver of `ichbench run`: submit pretraining and folds to Ray, gather results, and do all
MLflow writing itself.

Rerunning the same command redoes nothing that finished: fold results live on disk under the
run's folder (keyed by everything that determines them), a finished pretraining is reused from
its cache slot, and the MLflow parent and fold runs are found again by their `run_key` tag.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ichbench.console import pct
from ichbench.evaluate import summarize
from ichbench.orchestrate.cluster import connect, default_gpus_per_fold
from ichbench.orchestrate.plan import MethodPlan, run_identity
from ichbench.plugins import get_registry
from ichbench.tracking import records
from ichbench.tracking.mlflow_store import TAG, Tracker
from ichbench.train import checkpoint as ckpt

console = Console(stderr=True)
SIDECAR = "mlflow_run.json"


@dataclass
class MethodOutcome:
    plan: MethodPlan
    parent_run_id: str
    summary: dict
    rows: list[dict]
    pretrain_run_id: str | None = None
    pretrain_cached: bool = False
    gpu_hours: float = 0.0
    fold_nodes: dict = field(default_factory=dict)
    external: dict = field(default_factory=dict)   # test dataset -> summaries (`orchestrate.external`)


def _done_result(plan: MethodPlan, fold: int) -> dict | None:
    path = plan.fold_dir(fold) / "result.json"
    if not path.exists():
        return None
    from ichbench.train.fold_setup import read_fold_result
    res = read_fold_result(path)
    ok = res.get("split_hash") == plan.split["hash"] and res.get("store_fingerprint") == plan.store.fingerprint
    # results written before folds recorded their prediction digests are re-evaluated (the
    # finished training state is resumed, not retrained), so every entry can carry them
    ok = ok and bool(res.get("predictions_sha256"))
    # and so are results scored before the surface metrics (issue 22): an entry needs them
    ok = ok and all("hd_mm" in v for v in res.get("volumes", ()))
    return res if ok else None


def fold_records(results: list[dict]) -> list[dict]:
    """What an entry records per fold to be checked: the digests of the fold's model.pt and of its
    predictions (`ichbench.evaluate.digest`), and the numerics its last bits depend on."""
    # (a fold result without them logs None, and `leaderboard submit` refuses the run by name)
    return [{"fold": int(res["fold"]), "model_sha256": (res.get("model") or {}).get("sha256"),
             "predictions_sha256": res.get("predictions_sha256"),
             "numerics": {k: res.get(k) for k in ("cpu_threads", "cpu_capability", "gpu")}}
            for res in sorted(results, key=lambda r: r["fold"])]


def _cached_pretraining(plan: MethodPlan) -> Path | None:
    final = plan.pretrain_dir / ckpt.PRETRAINED_NAME
    if not final.exists():
        return None
    pre = ckpt.load_pretrained(final)
    if pre.get("config_hash") == plan.cfg.hash() and pre.get("store_fingerprint") == plan.pretrain_store.fingerprint:
        return final
    return None


class Driver:
    def __init__(self, tracker: Tracker, *, address: str | None = None, gpus_per_fold: float | None = None):
        self.tracker = tracker
        self.resources = connect(address)
        self.gpus_per_fold = gpus_per_fold
        self._live: list[str] = []   # MLflow runs to mark KILLED/FAILED if we are interrupted
        self._n_folds = 1

    # -- one method ----------------------------------------------------------------------------------
    def run(self, plan: MethodPlan) -> MethodOutcome:
        """Run `plan`, one run per run folder at a time (`orchestrate.lock`): a second run of the
        same config waits for the first, then reuses what it finished, as a rerun does."""
        from ichbench.orchestrate.lock import run_lock
        from ichbench.orchestrate.plan import check_reuse
        with run_lock(plan.run_dir) as waited:
            if waited:
                check_reuse(plan)
            return self._run(plan)

    def _run(self, plan: MethodPlan) -> MethodOutcome:
        from ichbench.orchestrate.tasks import finetune_task, pretrain_task

        tr = self.tracker
        owner = get_registry().owner("methods", plan.method.name)
        exp = tr.experiment(plan.cfg.dataset)
        tags = records.base_tags(plan, owner, self.resources)
        key = {f"{TAG}run_key": plan.run_key}
        parent = tr.find_run(exp, {**key, f"{TAG}kind": "parent"})
        if parent is None:
            parent_id = tr.start_run(exp, f"{plan.method.name}/{plan.cfg.dataset}/{plan.cfg.profile}",
                                     {**tags, f"{TAG}kind": "parent"}).info.run_id
            # params cannot change, and a rerun with another eval.hd_cap_mm is this run: the cap is
            # logged with the summary's metrics (hd_cap_mm) instead
            tr.params(parent_id, run_identity(plan.cfg))
            tr.store_input(parent_id, plan.store, "evaluation")
        else:
            parent_id = parent.info.run_id
            if parent.info.status != "RUNNING":
                tr.reopen(parent_id)
        self._live = [parent_id]
        outcome = MethodOutcome(plan, parent_id, {}, [])
        started = time.time()
        try:
            pretrained = icm = None
            if plan.icm is not None:
                icm, icm_metrics = self.icm(plan.icm, exp, tags, parent_id)
                self._changed_metrics(parent_id, icm_metrics)
            if plan.method.has_pretext:
                pretrained = self._pretrain(plan, exp, tags, parent_id, outcome, pretrain_task)
            results = self._folds(plan, exp, tags, parent_id, pretrained, outcome, finetune_task, icm)
            from ichbench.orchestrate.external import score_all   # --test-on: after the folds it scores with
            outcome.external = score_all(self, plan, results, parent_id, icm)
        except KeyboardInterrupt:
            self.abort("KILLED")
            raise
        except BaseException:
            self.abort("FAILED")
            raise
        rows = [dict(r, fold=res["fold"]) for res in results for r in res["volumes"]]
        outcome.rows = rows
        outcome.summary = summarize(rows, plan.cfg.eval.nsd_mm, plan.cfg.eval.hd_cap_mm)
        outcome.gpu_hours += sum(self._gpu_hours(res.get("wall_seconds", 0.0)) for res in results)
        self._changed_metrics(parent_id, records.summary_metrics(outcome.summary))
        tr.tags(parent_id, {f"{TAG}gpu_hours": f"{outcome.gpu_hours:.6f}",
                            f"{TAG}folds": ",".join(str(f) for f in plan.folds),
                            f"{TAG}wall_seconds": f"{time.time() - started:.1f}"})
        tr.json_artifact(parent_id, rows, "per_volume.json")
        tr.text_artifact(parent_id, records.per_volume_csv(rows), "per_volume.csv")
        tr.json_artifact(parent_id, plan.cfg.to_dict(), "config.json")
        tr.json_artifact(parent_id, plan.split, "split.json")
        tr.json_artifact(parent_id, outcome.summary, "summary.json")
        tr.json_artifact(parent_id, fold_records(results), "folds.json")
        records.agreement_plot(tr, parent_id, rows)
        tr.end(parent_id, "FINISHED")
        self._live = []
        return outcome

    def _changed_metrics(self, run_id: str, values: dict) -> None:
        """Log the values that differ from the run's latest: a rerun that changed nothing (or a run
        that waited for another of its config) leaves each metric of the parent at one value."""
        latest = self.tracker.client.get_run(run_id).data.metrics
        self.tracker.metrics(run_id, {k: v for k, v in values.items() if v is None or latest.get(k) != float(v)})

    def _gpu_hours(self, seconds: float, gpus: float | None = None) -> float:
        g = self._fold_gpus() if gpus is None else gpus
        return seconds * g / 3600.0

    def _fold_gpus(self) -> float:
        if self.gpus_per_fold is not None:
            return self.gpus_per_fold
        return default_gpus_per_fold(self.resources.get("GPU", 0), self._n_folds)

    def abort(self, status: str) -> bool:
        """End the MLflow runs this driver left open (an interrupted or failed step) with `status`;
        False when none was open."""
        had = bool(self._live)
        for run_id in self._live:
            try:
                self.tracker.end(run_id, status)
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        self._live = []
        return had

    # -- pretraining ---------------------------------------------------------------------------------
    def _pretrain(self, plan, exp, tags, parent_id, outcome, pretrain_task) -> Path:
        tr = self.tracker
        cached = _cached_pretraining(plan)
        sidecar = plan.pretrain_dir / SIDECAR
        if cached is not None:
            source = json.loads(sidecar.read_text()).get("run_id") if sidecar.exists() else None
            existing = tr.find_run(exp, {f"{TAG}run_key": plan.run_key, f"{TAG}kind": "pretrain"})
            if existing is None:
                child = tr.start_run(exp, f"pretrain {plan.method.name} (cached)",
                                     {**tags, f"{TAG}kind": "pretrain", f"{TAG}cached": "true",
                                      f"{TAG}pretrain_source_run": source or "unknown",
                                      f"{TAG}checkpoint": str(cached)}, parent_id).info.run_id
                tr.end(child, "FINISHED")
            outcome.pretrain_cached = True
            outcome.pretrain_run_id = source
            console.print(f"{plan.method.name}: pretraining reused from "
                          f"{f'MLflow run {source}' if source else 'its cache'} ({cached})", soft_wrap=True)
            return cached
        child = tr.start_run(exp, f"pretrain {plan.method.name}",
                             {**tags, f"{TAG}kind": "pretrain", f"{TAG}cached": "false"}, parent_id).info.run_id
        self._live.append(child)
        tr.params(child, {"pretrain": plan.cfg.to_dict()["pretrain"], "pretrain_hash": plan.cfg.hash()})
        tr.store_input(child, plan.pretrain_store, "pretraining")
        gpus = 1 if self.resources.get("GPU", 0) >= 1 else 0
        console.print(f"[bold]{plan.method.name}[/bold]: pretraining on {plan.cfg.pretrain_dataset} "
                      f"({'1 GPU' if gpus else 'CPU'})")
        board = self._board()
        ref = pretrain_task.options(num_gpus=gpus, num_cpus=1).remote(
            plan.method, str(plan.pretrain_store.path), plan.cfg, str(plan.pretrain_dir), board)
        info = self._wait_one(ref, plan.method.name, board, {"pretraining": plan.cfg.pretrain.epochs})
        path = Path(info["checkpoint"])
        pre = ckpt.load_pretrained(path)
        records.curves(tr, child, pre.get("history", []))
        if pre.get("pretext_setup"):   # derived once from the selection, e.g. multilabel_ce's class weights
            tr.params(child, {"pretext_setup": pre["pretext_setup"]})
            tr.json_artifact(child, pre["pretext_setup"], ckpt.PRETEXT_SETUP_NAME)
        tr.metrics(child, {"seconds": info["seconds"]})
        tr.tags(child, {f"{TAG}checkpoint": str(path), f"{TAG}node": info["node_id"],
                        # streamed or in-memory (`train.stream`); checkpoints from before it: in-memory
                        f"{TAG}data_path": pre.get("data_path", "in-memory"),
                        f"{TAG}gpu_hours": f"{info['seconds'] * gpus / 3600:.6f}"})
        tr.file_artifact(child, path, "checkpoints")
        tr.end(child, "FINISHED")
        self._live.remove(child)
        sidecar.write_text(json.dumps({"run_id": child, "experiment_id": exp, "tracking_uri": tr.uri}))
        outcome.pretrain_run_id = child
        outcome.gpu_hours += info["seconds"] * gpus / 3600
        return path

    # -- the ICM U-Nets -------------------------------------------------------------------------------
    def icm(self, plan, exp: str, tags: dict, parent_id: str | None = None) -> tuple[Path, dict]:
        """Train the ICM U-Nets of `plan` (an IcmPlan) on Ray, or reuse them from their cache slot;
        log a run of kind "icm" (a child of `parent_id` when given). Returns (checkpoint, metrics)."""
        from ichbench.orchestrate.tasks import icm_task
        tr = self.tracker
        tags = {**tags, f"{TAG}kind": "icm", f"{TAG}icm_model": plan.key,
                f"{TAG}icm_dataset": plan.cfg.dataset, f"{TAG}icm_dataset_fingerprint": plan.store.fingerprint}
        sidecar = plan.dir / SIDECAR
        if plan.checkpoint.exists() and ckpt.load(plan.checkpoint).get("model_key") == plan.key:
            payload = ckpt.load(plan.checkpoint)
            source = json.loads(sidecar.read_text()).get("run_id") if sidecar.exists() else None
            console.print(f"ICM U-Nets reused from {f'MLflow run {source}' if source else plan.checkpoint} "
                          f"(held-out union Dice {pct(payload['metrics']['icm_dice_union'], 1)} %)", soft_wrap=True)
            if parent_id is not None and tr.find_run(exp, {f"{TAG}run_key": tags.get(f"{TAG}run_key", ""),
                                                            f"{TAG}kind": "icm"}) is None:
                child = tr.start_run(exp, "icm (cached)", {**tags, f"{TAG}cached": "true",
                                                             f"{TAG}icm_source_run": source or "unknown"}, parent_id)
                tr.metrics(child.info.run_id, payload["metrics"])
                tr.end(child.info.run_id, "FINISHED")
            return plan.checkpoint, payload["metrics"]
        child = tr.start_run(exp, f"icm {plan.cfg.dataset}", {**tags, f"{TAG}cached": "false"}, parent_id).info.run_id
        self._live.append(child)
        tr.params(child, {"icm": plan.cfg.identity()})
        gpus = 1 if self.resources.get("GPU", 0) >= 1 else 0
        console.print(f"ICM U-Nets (tissue and bone windows): training on {plan.cfg.dataset} "
                      f"({'1 GPU' if gpus else 'CPU'})")
        board = self._board()
        ref = icm_task.options(num_gpus=gpus, num_cpus=1).remote(str(plan.store.path), plan.cfg, str(plan.dir), board)
        info = self._wait_one(ref, "ICM", board, {"tissue window": plan.cfg.epochs, "bone window": plan.cfg.epochs})
        payload = ckpt.load(Path(info["checkpoint"]))
        for win, history in payload["history"].items():
            for rec in history:
                tr.metrics(child, {f"{win}_loss": rec["loss"], f"{win}_lr": rec["lr"]}, step=int(rec["epoch"]))
        tr.metrics(child, {**payload["metrics"], "seconds": info["seconds"]})
        tr.tags(child, {f"{TAG}checkpoint": info["checkpoint"], f"{TAG}node": info["node_id"],
                        f"{TAG}gpu_hours": f"{info['seconds'] * gpus / 3600:.6f}",
                        f"{TAG}holdout_volumes": ",".join(payload["holdout_volumes"])})
        tr.file_artifact(child, Path(info["checkpoint"]), "checkpoints")
        tr.end(child, "FINISHED")
        self._live.remove(child)
        sidecar.write_text(json.dumps({"run_id": child, "experiment_id": exp, "tracking_uri": tr.uri}))
        return Path(info["checkpoint"]), payload["metrics"]

    @staticmethod
    def _board():
        from ichbench.orchestrate.progress import ProgressBoard
        return ProgressBoard.remote()

    def _wait_one(self, ref, title: str, board, bars: dict[str, int]):
        """Wait for one Ray task, showing the epochs its worker reports for each of `bars`."""
        import ray
        from ichbench.orchestrate.progress import LiveBars
        with LiveBars(board, title) as live:
            for key, total in bars.items():
                live.show(key, 0, total, "starting")
            while True:
                ready, _ = ray.wait([ref], timeout=0.5)
                live.refresh()
                if ready:
                    return ray.get(ref)

    # -- folds ---------------------------------------------------------------------------------------
    def _folds(self, plan, exp, tags, parent_id, pretrained, outcome, finetune_task, icm=None) -> list[dict]:
        import ray
        self._n_folds = len(plan.folds)
        results: dict[int, dict] = {}
        pending = {}
        gpf = self._fold_gpus()
        from ichbench.orchestrate.progress import LiveBars
        board = self._board()
        for fold in plan.folds:
            done = _done_result(plan, fold)
            if done is not None:
                results[fold] = done
                continue
            pending[finetune_task.options(num_gpus=gpf, num_cpus=1).remote(
                plan.method, str(plan.store.path), plan.split, fold, plan.cfg, str(plan.fold_dir(fold)),
                str(pretrained) if pretrained else None, str(icm) if icm else None, board)] = fold
        if results:
            console.print(f"{plan.method.name}: folds {sorted(results)} already finished, reused")
        epochs = plan.cfg.finetune.epochs
        with LiveBars(board, plan.method.name) as live:
            for fold in plan.folds:
                live.show(f"fold {fold}", epochs if fold in results else 0, epochs,
                          "reused" if fold in results else "waiting for a worker")
            refs = list(pending)
            try:
                while refs:
                    ready, refs = ray.wait(refs, num_returns=1, timeout=0.5)
                    live.refresh()
                    for ref in ready:
                        res = ray.get(ref)
                        results[res["fold"]] = res
                        self._log_fold(plan, exp, tags, parent_id, res)
                        dice = res["summary"]["all"]["dice"]["mean"]
                        live.finish(f"fold {res['fold']}", f"Dice {100 * dice:.1f}")
                        console.print(f"{plan.method.name} fold {res['fold']}: mean volume Dice {100 * dice:.2f} "
                                      f"on {len(res['volumes'])} held-out volumes "
                                      f"({res.get('wall_seconds', 0):.0f} s)", highlight=False, soft_wrap=True)
            except BaseException:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
        for fold in plan.folds:  # folds finished by an earlier, interrupted driver
            self._log_fold(plan, exp, tags, parent_id, results[fold])
        outcome.fold_nodes = {f: results[f].get("worker", {}).get("node_id") for f in plan.folds}
        return [results[f] for f in plan.folds]

    def _log_fold(self, plan, exp, tags, parent_id, res: dict) -> None:
        tr = self.tracker
        fold = res["fold"]
        fkey = {f"{TAG}run_key": plan.run_key, f"{TAG}kind": "fold", f"{TAG}fold": str(fold)}
        if tr.find_run(exp, fkey, statuses=("FINISHED",)) is not None:
            return
        child = tr.start_run(exp, f"{plan.method.name} fold {fold}", {**tags, **fkey}, parent_id).info.run_id
        tr.params(child, {"fold": fold, "finetune": plan.cfg.to_dict()["finetune"]})
        tr.store_input(child, plan.store, "training")
        records.curves(tr, child, res.get("history", []))
        tr.metrics(child, records.summary_metrics(res["summary"]))
        worker = res.get("worker", {})
        tr.tags(child, {f"{TAG}node": worker.get("node_id", ""), f"{TAG}attempts": res.get("attempts", 1),
                        f"{TAG}predictions_sha256": res.get("predictions_sha256", ""),
                        f"{TAG}gpu_hours": f"{self._gpu_hours(res.get('wall_seconds', 0.0)):.6f}"})
        rows = [dict(r, fold=fold) for r in res["volumes"]]
        tr.json_artifact(child, rows, "per_volume.json")
        tr.text_artifact(child, records.per_volume_csv(rows), "per_volume.csv")
        tr.json_artifact(child, res["config"], "config.json")
        model = plan.fold_dir(fold) / ckpt.MODEL_NAME   # what `ichbench predict --run` downloads
        if model.exists():
            tr.file_artifact(child, model, "checkpoints")
            tr.tags(child, {f"{TAG}model_sha256": ckpt.sha256_file(model)})
        tr.end(child, "FINISHED")

