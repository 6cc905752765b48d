"""`ichbench run --seeds`: the seed list, the overrides that make each seed's run, and the numbers
over seeds (pure logic; the end-to-end run is tests/test_seeds_run.py)."""

from types import SimpleNamespace

import pytest

from ichbench.config.fields import MAX_SEED
from ichbench.errors import IchbenchError
from ichbench.orchestrate.seeds import combine, parse_seeds, seed_overrides, seed_plans


def cfg(ft=0, pre=0):
    return SimpleNamespace(finetune=SimpleNamespace(seed=ft), pretrain=SimpleNamespace(seed=pre))


def test_a_count_starts_at_the_configs_own_seed_and_a_list_is_taken_as_given():
    assert parse_seeds(None, 0) is None
    assert parse_seeds("3", 0) == [0, 1, 2]
    assert parse_seeds("2", 5) == [5, 6]
    assert parse_seeds("4,0, 9", 0) == [4, 0, 9]
    assert parse_seeds("7,", 0) == [7]   # a one-seed list, not a count


@pytest.mark.parametrize("text, says", [
    ("0", "give 1 to 100 seeds"), ("101", "give 1 to 100 seeds"), ("x", "expects a count or a comma list"),
    (",", "names no seed"), ("1,1", "names a seed twice"), (f"0,{MAX_SEED + 1}", "a seed is 0.."),
    ("-1,2", "a seed is 0.."), (",".join(map(str, range(101))), "at most 100"),
])
def test_bad_seed_lists_are_one_line(text, says):
    with pytest.raises(IchbenchError, match=says) as err:
        parse_seeds(text, 0)
    assert "\n" not in str(err.value)


def test_the_configs_own_seed_is_the_run_unchanged_and_per_seed_moves_pretraining_alike():
    assert seed_overrides(cfg(), 0, "shared") == []
    assert seed_overrides(cfg(), 0, "per_seed") == []
    assert seed_overrides(cfg(), 2, "shared") == ["finetune.seed=2"]
    assert seed_overrides(cfg(ft=1, pre=10), 3, "per_seed") == ["finetune.seed=3", "pretrain.seed=12"]
    with pytest.raises(IchbenchError, match="pretrain.seed would be -1"):
        seed_overrides(cfg(ft=1, pre=0), 0, "per_seed")


def test_seed_plans_reuse_the_base_plan_for_its_own_seed():
    made = []

    def make(extra):
        made.append(extra)
        return SimpleNamespace(cfg=cfg(ft=1), extra=extra)

    plans = seed_plans(make, "0,1,2")
    assert [s for s, _ in plans] == [0, 1, 2]
    assert made == [[], ["finetune.seed=0"], ["finetune.seed=2"]]   # seed 1 is the base plan, planned once
    assert plans[1][1].extra == []
    assert seed_plans(make, None)[0][0] is None
    with pytest.raises(IchbenchError, match="--seeds-pretrain 'both': one of shared, per_seed"):
        seed_plans(make, "2", "both")


def outcome(dice_rows, run_key):
    from ichbench.evaluate import summarize
    rows = [{"volume_id": f"V{i}", "fold": 0, "tp": 1, "fp": 0, "fn": 0, "dice": d, "precision": 1.0,
             "recall": d, "has_ich": True, "subtypes": None, "pred_ml": 1.0, "true_ml": 1.0,
             "hd_mm": 1.0, "hd95_mm": 1.0, "nsd": 1.0, "abs_rvd": 0.0} for i, d in enumerate(dice_rows)]
    plan = SimpleNamespace(run_key=run_key, method=SimpleNamespace(name="m"), cfg=SimpleNamespace(dataset="d"))
    return SimpleNamespace(plan=plan, parent_run_id=f"run-{run_key}", rows=rows, summary=summarize(rows))


def test_over_seeds_is_the_mean_and_sample_std_of_each_seeds_mean_and_rows_keep_their_seed():
    outs = [outcome([0.2, 0.4], "a"), outcome([0.5, 0.7], "b"), outcome([0.8, 1.0], "c")]
    res = combine([0, 1, 2], outs, "shared")
    assert [p["dice_all_mean"] for p in res.per_seed] == pytest.approx([0.3, 0.6, 0.9])
    assert res.over_seeds["dice_all_mean"] == pytest.approx({"mean": 0.6, "std": 0.3, "n": 3})
    assert [(r["seed"], r["volume_id"]) for r in res.rows] == [(0, "V0"), (0, "V1"), (1, "V0"), (1, "V1"),
                                                                (2, "V0"), (2, "V1")]
    assert [p["parent_run_id"] for p in res.per_seed] == ["run-a", "run-b", "run-c"]


def test_the_console_shows_each_seed_and_mean_pm_std(monkeypatch):
    from rich.console import Console

    from ichbench.orchestrate.seeds_report import seeds_view
    res = combine([0, 1, 2], [outcome([0.2, 0.4], "a"), outcome([0.5, 0.7], "b"), outcome([0.8, 1.0], "c")],
                  "shared")
    for width in (160, 80):
        con = Console(width=width, record=True)
        con.print(seeds_view([res]))
        text = con.export_text()
        assert "seed 2" in text and "60.00±30.00" in text, text
