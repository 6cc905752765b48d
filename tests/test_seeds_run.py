"""`ichbench run --seeds 3` end to end (issue 25 §2's done-when): three distinct per-seed results
and their mean ± std, the config's own seed is the run without --seeds, and a seed whose fold was
killed reruns that fold alone. Real Ray, real MLflow; one fold, two steps, to stay cheap."""

import json

import pytest

from ichbench.orchestrate.plan import plan_method
from tests.cli import call
from tests.test_run import runs_of

pytestmark = pytest.mark.slow

# head_prior 0.5: after two steps each seed's differently initialised U-Net still predicts
# something (at the smoke profile's 0.01 all three would predict nothing and score alike)
SETS = ["finetune.epochs=1", "finetune.steps_per_epoch=2", "finetune.head_prior=0.5"]
CMD = ["run", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke", "--folds", "0", "--seeds", "3",
       *[a for s in SETS for a in ("--set", s)]]


def test_three_seeds_give_three_results_and_a_killed_seed_reruns_alone(phantom_home, ray_session, monkeypatch,
                                                                        capsys):
    code, out, err = call(CMD, monkeypatch, capsys)
    assert code in (0, None), err[-3000:]
    assert "mean ± std (3 seeds)" in out
    parents = {int(p.data.tags["ichbench.seed"]): p for p in runs_of(phantom_home, kind="parent")}
    assert sorted(parents) == [0, 1, 2]
    dice = {s: p.data.metrics["dice_ich_mean"] for s, p in parents.items()}
    assert len(set(dice.values())) == 3, dice
    [group] = runs_of(phantom_home, kind="seeds")
    m = group.data.metrics
    import numpy as np
    assert m["dice_ich_mean_over_seeds_mean"] == pytest.approx(np.mean(list(dice.values())))
    assert m["dice_ich_mean_over_seeds_std"] == pytest.approx(np.std(list(dice.values()), ddof=1))
    assert group.data.tags["ichbench.seed_runs"].split(",") == [parents[s].info.run_id for s in (0, 1, 2)]
    # the config's own seed is the run without --seeds: same run key, so the same folder
    plain = plan_method("unet_mixed", "phantom", "smoke", phantom_home, folds=[0], overrides=SETS)
    assert parents[0].data.tags["ichbench.run_key"] == plain.run_key
    fold = {s: next((phantom_home / "runs").rglob(f"*{p.data.tags['ichbench.run_key'][:12]}/fold_0"))
            for s, p in parents.items()}
    assert fold[0] == plain.fold_dir(0)
    before = json.loads((fold[2] / "result.json").read_text())
    # seed 2's worker killed after its last checkpoint, before its result: what a killed fold leaves
    (fold[2] / "result.json").unlink()
    (fold[2] / "model.pt").unlink()
    code, out, err = call(CMD, monkeypatch, capsys)
    assert code in (0, None), err[-3000:]
    assert [(fold[s] / "attempts").read_text() for s in (0, 1, 2)] == ["1", "1", "2"]   # seed 2's fold alone
    after = json.loads((fold[2] / "result.json").read_text())
    # resumed from its checkpoint, not retrained: each epoch still names the killed worker
    assert [h["pid"] for h in after["history"]] == [h["pid"] for h in before["history"]]
    assert [r["dice"] for r in after["volumes"]] == [r["dice"] for r in before["volumes"]]
    assert len(runs_of(phantom_home, kind="seeds")) == 1 and len(runs_of(phantom_home, kind="parent")) == 3
    # `ichbench runs --json`: each seed's row names its seed, and the seeds run has the spread
    code, out, _ = call(["runs", "--json"], monkeypatch, capsys)
    rows = json.loads(out)
    assert sorted(r["seed"] for r in rows if r["kind"] == "parent") == [0, 1, 2]
    [srow] = [r for r in rows if r["kind"] == "seeds"]
    assert srow["seeds"] == [0, 1, 2] and srow["over_seeds"]["dice_ich_mean"]["std"] == pytest.approx(
        m["dice_ich_mean_over_seeds_std"])
