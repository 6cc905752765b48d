"""Shared builders for the leaderboard tests (no tests here): a tmp copy of the leaderboard
folder, a real slice store for the `phantom` dataset, and entries with known counts."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np

from ichbench.datasets.base import IngestOptions
from ichbench.leaderboard.entries import build_entry, relpath
from ichbench.leaderboard.paths import Folder
from ichbench.splits import make_split
from ichbench.ingest import ingest
from tests.synthetic import SyntheticDataset

REPO_LEADERBOARD = Path(__file__).resolve().parents[1] / "leaderboard"


def copy_folder(tmp_path: Path) -> Folder:
    """The repo's leaderboard folder copied to tmp (tests never write into the repo's)."""
    dst = tmp_path / "leaderboard"
    shutil.copytree(REPO_LEADERBOARD, dst, ignore=shutil.ignore_patterns("entries", "README.md", "index.html"))
    # The tests record the phantom from stores they build; start from no phantom record (the repo
    # records the demo's default phantom).
    canonical = dst / "canonical.json"
    data = json.loads(canonical.read_text())
    data["datasets"].pop("phantom", None)
    canonical.write_text(json.dumps(data, indent=2) + "\n")
    return Folder(dst)


class PhantomLike(SyntheticDataset):
    """The in-memory test dataset under the name `phantom`, ingested through the real pipeline."""
    name = "phantom"


def phantom_store(home: Path, n: int = 6, force: bool = False):
    """Ingest n tiny volumes (even indices have ICH) as the phantom segmentation store."""
    [res] = ingest(PhantomLike(n=n), home, source=home, options=IngestOptions(size=16), force=force)
    return res


def flags_of(store_res) -> dict:
    from ichbench.store import open_store
    return {v["id"]: bool(v["has_ich"]) for v in open_store(store_res.path).volumes}


def counts_for(flags: dict, seed: int) -> list[dict]:
    """Per-volume rows with random but valid counts (no TP/FN where the volume has no ICH), 1 µL
    voxels, and surface metrics that follow the empty-case rule (`surface_for`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for vid in sorted(flags):
        if flags[vid]:
            tp, fp, fn = (int(x) for x in rng.integers(0, 400, 3))
            fn = max(fn, 1 if tp == 0 else 0)
        else:
            tp, fn, fp = 0, 0, int(rng.integers(0, 3) * rng.integers(0, 50))
        rows.append({"volume_id": vid, "tp": tp, "fp": fp, "fn": fn,
                     "pred_ml": (tp + fp) * 0.001, "true_ml": (tp + fn) * 0.001,
                     "subtypes": ["iph"] if flags[vid] else [],
                     **surface_for(tp, fp, fn, float(rng.uniform(1.5, 40.0)))})
    return rows


def class_rows(flags: dict, seed: int, shape=(3, 6, 6)) -> list[dict]:
    """Per-volume rows of the subtypes task as a run logs them (`train.predict.scored_row`): small
    random label maps (classes 1..5 = SUBTYPES on 1 mm voxels; truth only where the volume has ICH,
    the prediction the truth with 10 % of its voxels redrawn from 0..5) scored by
    `evaluate.classes.class_case_metrics`: the union's metrics, `classes` and the map's digest."""
    from ichbench import SUBTYPES
    from ichbench.evaluate.classes import class_case_metrics
    from ichbench.evaluate.digest import label_map_digest
    from ichbench.evaluate.summary import SURFACE_KEYS
    rng = np.random.default_rng(seed)
    labels = {n: i for i, n in enumerate(SUBTYPES, start=1)}
    rows = []
    for vid in sorted(flags):
        truth = np.zeros(shape, np.uint8)
        if flags[vid]:   # two or three classes per volume, one of them at least
            truth[1:, 1:5, 1:5] = rng.choice(rng.choice(np.arange(1, 6), 3, replace=False), (shape[0] - 1, 4, 4))
        pred = truth.copy()
        redraw = rng.random(shape) < 0.1
        pred[redraw] = rng.integers(0, 6, int(redraw.sum()))
        m = class_case_metrics(pred, truth, labels, (1.0, 1.0, 1.0))
        rows.append({"volume_id": vid, **{k: m[k] for k in ("tp", "fp", "fn", "dice", "precision", "recall",
                                                            "pred_ml", "true_ml", *SURFACE_KEYS)},
                     "has_ich": flags[vid], "subtypes": sorted(SUBTYPES[i - 1] for i in np.unique(truth) if i),
                     "classes": m["classes"], "pred_labels_sha256": label_map_digest(pred)})
    return rows


SUBTYPES_CONFIG = {"finetune": {"epochs": 1, "task": "subtypes"}}


def surface_for(tp: int, fp: int, fn: int, hd: float, voxel_ml: float = 0.001) -> dict:
    """Surface and volume metrics of a row, written out by hand from docs/score.md's rules (not
    ichbench's code): inf where exactly one mask is empty, 0/NSD 1 for the same masks, else HD
    `hd` (> the 1 mm tolerance, so NSD < 1), HD95 0.8 HD, NSD 0.5."""
    pred_ml, true_ml = (tp + fp) * voxel_ml, (tp + fn) * voxel_ml
    pred_empty, truth_empty = tp + fp == 0, tp + fn == 0
    empty = {(False, False): "none", (True, False): "pred", (False, True): "truth", (True, True): "both"}[
        (pred_empty, truth_empty)]
    if empty in ("pred", "truth"):
        hd, hd95, nsd = math.inf, math.inf, 0.0
    elif fp + fn == 0:
        hd, hd95, nsd = 0.0, 0.0, 1.0
    else:
        hd95, nsd = 0.8 * hd, 0.5
    rvd = (pred_ml - true_ml) / true_ml if true_ml else (0.0 if pred_ml == 0 else math.inf)
    return {"hd_mm": hd, "hd95_mm": hd95, "nsd": nsd, "rvd": rvd, "abs_rvd": abs(rvd),
            "vol_err_ml": pred_ml - true_ml, "abs_vol_err_ml": abs(pred_ml - true_ml), "empty": empty}


def recount(row: dict, tp: int, fp: int, fn: int) -> dict:
    """`row` (in place) with new counts and what a careful forger changes with them: the mL at the
    row's own voxel volume and surface metrics that follow the rules (`surface_for`; HD kept)."""
    voxel_ml = row["true_ml"] / (row["tp"] + row["fn"]) if row["tp"] + row["fn"] else \
        row["pred_ml"] / (row["tp"] + row["fp"]) if row["tp"] + row["fp"] else 0.001
    hd = row.get("hd_mm", "inf")
    hd = 7.0 if hd == "inf" or not math.isfinite(float(hd)) or float(hd) <= 1.0 else float(hd)
    row.update(tp=tp, fp=fp, fn=fn, pred_ml=(tp + fp) * voxel_ml, true_ml=(tp + fn) * voxel_ml)
    if "hd_mm" in row:
        row.update({k: "inf" if isinstance(v, float) and math.isinf(v) else v
                    for k, v in surface_for(tp, fp, fn, hd, voxel_ml).items()})
    return row


def fake_folds(run_id: str, k: int) -> list[dict]:
    """Fold records as the driver's folds.json gives them (digests made up, well-formed)."""
    import hashlib
    return [{"fold": f, "model_sha256": hashlib.sha256(f"model {run_id} {f}".encode()).hexdigest(),
             "predictions_sha256": hashlib.sha256(f"pred {run_id} {f}".encode()).hexdigest(),
             "numerics": {"cpu_threads": 1, "cpu_capability": "AVX2", "gpu": None}} for f in range(k)]


def make_entry(flags: dict, *, k: int = 3, method: str = "multilabel_dl", run_id: str = "a" * 32,
               seed: int = 0, fingerprint: str = "0" * 64, dataset: str = "phantom", config: dict | None = None,
               rows: list | None = None, gpu_hours: float | None = 0.5, plugin: tuple = ("ichbench", "0.1.0")) -> dict:
    split = make_split(dataset, flags, k)
    fold_of = {v: f["fold"] for f in split["folds"] for v in f["test"]}
    rows = rows if rows is not None else counts_for(flags, seed)
    rows = [{**r, "fold": fold_of[r["volume_id"]]} for r in rows]
    return build_entry(method=method, plugin_dist=plugin[0], plugin_version=plugin[1], dataset=dataset,
                       fingerprint=fingerprint, split_hash=split["hash"], k=k, profile="smoke",
                       config=config or {"finetune": {"epochs": 1}}, per_volume=rows, ichbench_version="0.1.0",
                       hardware="cpu: test", gpu_hours=gpu_hours, run_id=run_id, date="2025-01-02T03:04:05Z",
                       code_url=None, code_commit="deadbeef", nsd_mm=1.0, folds=fake_folds(run_id, k))


def with_external(entry: dict, flags: dict, dataset: str = "phantom_shifted", seed: int = 7) -> dict:
    """`entry` with an external test set (`ichbench run --test-on`) as submit writes it: the
    ensemble's rows and each of the entry's fold models' rows, random but valid counts."""
    from ichbench.leaderboard.test_sets import build
    folds = {str(f["fold"]): counts_for(flags, seed + 1 + f["fold"]) for f in entry["folds"]}
    item = build(dataset, "e" * 64, {"ensemble": counts_for(flags, seed), "folds": folds})
    return {**entry, "external": [item]}


def write_entry(folder: Folder, entry: dict, rel: Path | None = None) -> Path:
    path = folder.root / (rel or relpath(entry))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=2))
    return path


def resplit(dataset: str, rows: list, k: int):
    """(hash, volume -> fold) of the canonical split of these rows' volumes and ICH flags."""
    split = make_split(dataset, {r["volume_id"]: r["tp"] + r["fn"] > 0 for r in rows}, k)
    return split["hash"], {v: f["fold"] for f in split["folds"] for v in f["test"]}


def leaderboard_cli(*args):
    """`ichbench leaderboard ARGS` in-process (typer's runner)."""
    from typer.testing import CliRunner

    from ichbench.cli.leaderboard import app
    return CliRunner().invoke(app, [str(a) for a in args])


def recorded_world(tmp_path_factory, name: str, k: int = 3):
    """A module's world: a fresh folder with a home holding a 6-volume phantom store and a tmp copy
    of the leaderboard folder recording that store's canonical volumes for `k` folds;
    returns (base folder, home, the store's ingest result, the leaderboard copy)."""
    from ichbench.leaderboard.canonical import record_from_store
    base = tmp_path_factory.mktemp(name)
    home = base / "home"
    home.mkdir()
    res = phantom_store(home)
    template = copy_folder(base)
    record_from_store(template, home, "phantom", [k])
    return base, home, res, template


def recorded_board(tmp_path: Path, home: Path):
    """A tmp copy of the leaderboard folder with a real phantom store recorded for k = 3;
    returns (folder, the store's ingest result)."""
    folder = copy_folder(tmp_path)
    res = phantom_store(home)
    out = leaderboard_cli("canonical", "record", "--dataset", "phantom", "--k", 3, "--root", folder.root)
    assert out.exit_code == 0, out.output
    return folder, res


# -- an oracle for entry summaries, independent of ichbench's scoring code ------------------------

def hand_ratios(tp: int, fp: int, fn: int) -> dict:
    """The paper's eqs. 1-3 with eps = 1, written out."""
    return {"dice": (2 * tp + 1) / (2 * tp + fp + fn + 1), "precision": (tp + 1) / (tp + fp + 1),
            "recall": (tp + 1) / (tp + fn + 1)}


def hand_summary(rows: list[dict]) -> dict:
    """What an entry's summary must be, computed without ichbench: per-row ratios by hand, then
    the mean and the sample std (`statistics.stdev`; ichbench's summaries use ddof = 1, see
    test_metrics.test_summary_all_vs_ich_by_hand) over all rows and over the ICH rows (a row's
    recorded `has_ich`, else TP + FN > 0). std is None below two rows, mean None for none."""
    def ich(r):
        return bool(r["has_ich"]) if r.get("has_ich") is not None else int(r["tp"]) + int(r["fn"]) > 0
    out = {}
    for group, members in (("all", rows), ("ich", [r for r in rows if ich(r)])):
        scores = [hand_ratios(int(r["tp"]), int(r["fp"]), int(r["fn"])) for r in members]
        out[group] = {"n": len(members)}
        for m in ("dice", "precision", "recall"):
            vals = [s[m] for s in scores]
            out[group][m] = {"mean": statistics.fmean(vals) if vals else None,
                             "std": statistics.stdev(vals) if len(vals) >= 2 else None}
    return out


def assert_same_summary(got: dict, want: dict, rel: float = 1e-12) -> None:
    """`got` has exactly `want`'s groups, n and metrics; numbers equal to rounding (numpy and
    `statistics` sum in different orders), None exactly where `want` has None."""
    assert set(got) == set(want), (set(got), set(want))
    for g in want:
        assert set(got[g]) == set(want[g]) and got[g]["n"] == want[g]["n"], (g, got[g], want[g])
        for m in ("dice", "precision", "recall"):
            for s in ("mean", "std"):
                a, b = got[g][m][s], want[g][m][s]
                assert (a is None) == (b is None), (g, m, s, a, b)
                assert b is None or math.isclose(a, b, rel_tol=rel, abs_tol=1e-15), (g, m, s, a, b)
