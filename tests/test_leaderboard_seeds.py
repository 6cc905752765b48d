"""Leaderboard entries over several seeds (`ichbench run --seeds`, issue 25 §2): validation of the
other seeds' rows, the page's numbers from each volume's mean over seeds, mean ± std over seeds,
and a reproduction's tolerance widened to the entry's seed spread. Numbers checked by hand."""

from __future__ import annotations

import copy
import statistics

import numpy as np
import pytest

from ichbench.evaluate.metrics import ratios
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.model import _entry_row
from ichbench.leaderboard.page import _metric_cell
from ichbench.leaderboard.reproductions import VOLUME_TOLERANCE, tolerance_for
from tests.test_leaderboard_support import (copy_folder, fake_folds, flags_of, make_entry, phantom_store,
                                            recorded_board, recount)

SEEDS = (0, 4, 9)


def with_seeds(entry: dict, seeds=SEEDS, rng_seed: int = 3) -> dict:
    """`entry` as a seeds run's submission: the other seeds' rows keep each volume's fold and
    ground truth (TP + FN, true mL) and draw other predictions."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds[1:]:
        for r in entry["per_volume"]:
            truth = r["tp"] + r["fn"]
            tp = int(rng.integers(0, truth + 1)) if truth else 0
            fp = int(rng.integers(0, 60)) if truth else r["fp"] + int(rng.integers(0, 3))
            rows.append({**recount(copy.deepcopy(r), tp, fp, truth - tp), "seed": s})
    runs = [{"seed": seeds[0], "mlflow_run_id": "b" * 32, "folds": entry["folds"]}]
    runs += [{"seed": s, "mlflow_run_id": f"{s:x}" * 32, "folds": fake_folds(f"seed{s}", entry["split"]["k"])}
             for s in seeds[1:]]
    return {**entry, "seeds": {"pretrain": "shared", "runs": runs, "per_volume": rows}}


@pytest.fixture
def seeded(tmp_path, home):
    folder, res = recorded_board(tmp_path, home)
    entry = with_seeds(make_entry(flags_of(res), fingerprint=res.fingerprint))
    return entry, canon.expectation(canon.load(folder), "phantom")


def test_a_seeds_entry_is_valid_and_every_number_is_from_each_volumes_mean_over_seeds(seeded):
    entry, exp = seeded
    assert check_entry(entry, exp) == []
    row = _entry_row("x.json", entry, {})
    by_seed = {SEEDS[0]: entry["per_volume"]}
    for r in entry["seeds"]["per_volume"]:
        by_seed.setdefault(r["seed"], []).append(r)
    dice = {s: {r["volume_id"]: ratios(r["tp"], r["fp"], r["fn"])["dice"] for r in rows}
            for s, rows in by_seed.items()}
    vid = entry["per_volume"][0]["volume_id"]
    # the values both tests compare: each volume's mean over its seeds
    assert row.values["dice"][vid] == pytest.approx(100 * sum(d[vid] for d in dice.values()) / 3)
    per_seed = [100 * statistics.mean(d.values()) for d in dice.values()]
    cell = row.groups["all"]["dice"]
    assert cell["mean"] == pytest.approx(statistics.mean(per_seed))
    assert cell["seeds"]["std"] == pytest.approx(statistics.stdev(per_seed))
    assert cell["std"] == pytest.approx(statistics.stdev(row.values["dice"].values()))
    shown = _metric_cell(row, "all", "dice")["seeds"]
    assert shown == f"3 seeds: {statistics.mean(per_seed):.2f} ± {statistics.stdev(per_seed):.2f}"
    one = _entry_row("y.json", {k: v for k, v in entry.items() if k != "seeds"}, {})
    assert one.seeds is None and _metric_cell(one, "all", "dice")["seeds"] is None


def _broken(entry: dict, how: str) -> dict:
    e = copy.deepcopy(entry)
    rows = e["seeds"]["per_volume"]
    if how == "missing":
        rows.remove(next(r for r in rows if r["seed"] == SEEDS[2]))
    elif how == "fold":
        rows[0]["fold"] = (rows[0]["fold"] + 1) % e["split"]["k"]
    elif how == "truth":
        r = next(r for r in rows if r["tp"] > 0)
        recount(r, r["tp"] - 1, r["fp"], r["fn"])   # one voxel of truth less, mL with it
    elif how == "stray":
        rows[0]["seed"] = 77
    elif how == "twice":
        e["seeds"]["runs"][2]["seed"] = SEEDS[1]
    elif how == "first":
        e["seeds"]["runs"][0]["folds"] = fake_folds("other", e["split"]["k"])
    elif how == "version":
        e["schema_version"] = 2
    return e


@pytest.mark.parametrize("how, says", [
    ("missing", "seeds: seed 9 did not score exactly the entry's volumes, each once"),
    ("fold", "seeds: seed 4: volume"),
    ("truth", "another ground truth (TP + FN or true mL)"),
    ("stray", "seeds: rows of seed 77, which is not one of the seeds after the first"),
    ("twice", "seeds: a seed is listed twice"),
    ("first", "seeds: the first run (seed 0) must be the run of the entry's own rows"),
    ("version", "schema:"),
])
def test_a_seeds_entry_that_does_not_hold_together_is_refused_by_name(seeded, how, says):
    entry, exp = seeded
    problems = check_entry(_broken(entry, how), exp)
    assert any(says in p for p in problems), problems


def test_a_reproduction_tolerance_widens_to_the_entrys_seed_spread(seeded):
    entry, _ = seeded
    n_ich = sum(1 for r in entry["per_volume"] if r["tp"] + r["fn"] > 0)
    plain = tolerance_for(n_ich)
    assert tolerance_for(n_ich, {k: v for k, v in entry.items() if k != "seeds"}) == plain
    rows = {SEEDS[0]: entry["per_volume"]}
    for r in entry["seeds"]["per_volume"]:
        rows.setdefault(r["seed"], []).append(r)
    dice = {}
    means = []
    for rs in rows.values():
        ich = [ratios(r["tp"], r["fp"], r["fn"])["dice"] for r in rs if r["tp"] + r["fn"] > 0]
        means.append(statistics.mean(ich))
        for r in rs:
            if r["tp"] + r["fn"] > 0:
                dice.setdefault(r["volume_id"], []).append(ratios(r["tp"], r["fp"], r["fn"])["dice"])
    widest = max(max(d) - min(d) for d in dice.values())
    wide = tolerance_for(n_ich, entry)
    assert wide["volume"] == pytest.approx(min(1.0, max(VOLUME_TOLERANCE, 1.5 * widest)))
    assert wide["mean"] == pytest.approx(min(1.0, max(plain["mean"], 2.5 * statistics.stdev(means))))
    assert wide["volume"] > plain["volume"] and wide["fp_voxels"] == plain["fp_voxels"]


def _seed_rows(flags: dict, seed: int) -> list[dict]:
    """Rows of one seed of a run: the ground truth of `counts_for(flags, 0)`, predictions by seed."""
    from tests.test_leaderboard_support import counts_for
    rng = np.random.default_rng(100 + seed)
    out = []
    for r in counts_for(flags, 0):
        truth = r["tp"] + r["fn"]
        tp = int(rng.integers(0, truth + 1)) if truth else 0
        out.append(recount(dict(r), tp, int(rng.integers(0, 40)), truth - tp))
    return out


def test_submit_of_a_seeds_run_writes_one_valid_entry_of_every_seed(tmp_path, monkeypatch, mlflow_template):
    """`leaderboard submit --run-id <seeds run>` on a real MLflow store: each seed's parent run is
    checked as any submission is, and the entry holds them all."""
    import mlflow

    import tests.test_leaderboard_submit as ts
    from ichbench.leaderboard.canonical import record_from_store
    from ichbench.leaderboard.validate import validate
    home = tmp_path / "home"
    home.mkdir()
    res = phantom_store(home)
    flags = flags_of(res)
    folder = copy_folder(tmp_path)
    record_from_store(folder, home, "phantom", [3])
    import shutil
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")   # migrated once a session
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("ichbench/phantom", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = {}
    for s in (0, 1):
        monkeypatch.setattr(ts, "counts_for", lambda flags, seed, s=s: _seed_rows(flags, s))
        runs[s] = ts._log_run(uri, exp, flags, res.fingerprint, tags={"ichbench.seed": str(s)})
    other = ts._log_run(uri, exp, flags, res.fingerprint, method="unet_mixed")

    def seeds_run(ids):
        with mlflow.start_run(experiment_id=exp, tags={
                "ichbench.kind": "seeds", "ichbench.seeds": "0,1", "ichbench.seeds_pretrain": "per_seed",
                "ichbench.seed_runs": ",".join(ids)}) as run:
            pass
        return run.info.run_id

    good, mixed = seeds_run([runs[0], runs[1]]), seeds_run([runs[0], other])
    mlflow.set_tracking_uri(before)
    out = ts.submit({"uri": uri}, folder, "--run-id", mixed)
    assert out.exit_code == 1 and "seed 1's run differs from seed 0's in method" in out.output, out.output
    assert not (folder.root / "entries").exists() or not any((folder.root / "entries").rglob("*.json"))
    out = ts.submit({"uri": uri}, folder, "--run-id", good)
    assert out.exit_code == 0, out.output
    report = validate(folder)
    assert report.ok, report.lines()
    [path] = (folder.root / "entries" / "phantom").glob("*.json")
    import json
    e = json.loads(path.read_text())
    assert e["mlflow_run_id"] == good and e["gpu_hours"] == 0.5
    assert [(r["seed"], r["mlflow_run_id"]) for r in e["seeds"]["runs"]] == [(0, runs[0]), (1, runs[1])]
    assert e["seeds"]["pretrain"] == "per_seed"
    got = sorted((r["volume_id"], r["tp"], r["fp"]) for r in e["seeds"]["per_volume"])
    assert got == sorted((r["volume_id"], r["tp"], r["fp"]) for r in _seed_rows(flags, 1))
    assert {r["seed"] for r in e["seeds"]["per_volume"]} == {1}
    assert [(r["volume_id"], r["tp"]) for r in e["per_volume"]] == sorted(
        (r["volume_id"], r["tp"]) for r in _seed_rows(flags, 0))
