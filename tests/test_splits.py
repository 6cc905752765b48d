
import pytest

from ichbench.errors import IchbenchError
from ichbench.splits import make_folds, make_split, split_hash, train_ids


def cohort(n_ich=7, n_clean=5):
    vols = {f"ICH{i:02d}": True for i in range(n_ich)}
    vols.update({f"CLN{i:02d}": False for i in range(n_clean)})
    return vols


def test_folds_partition_and_are_stratified():
    vols = cohort()
    folds = make_folds(vols, 3)
    flat = [v for f in folds for v in f]
    assert sorted(flat) == sorted(vols) and len(flat) == len(set(flat))
    # 7 ICH over 3 folds -> 3,2,2 ; then 5 clean continue the round-robin -> sizes 4,4,4
    assert sorted(sum(vols[v] for v in f) for f in folds) == [2, 2, 3]
    assert [len(f) for f in folds] == [4, 4, 4]


def test_split_is_a_pure_function_of_ids_k_and_seed():
    a = make_split("d", cohort(), 3)
    b = make_split("d", dict(reversed(list(cohort().items()))), 3)  # insertion order irrelevant
    assert a["hash"] == b["hash"] and a["folds"] == b["folds"]
    assert make_split("d", cohort(), 4)["hash"] != a["hash"]
    assert make_split("d", cohort(), 3, seed=1)["hash"] != a["hash"]
    folds = [f["test"] for f in a["folds"]]
    assert a["hash"] == split_hash(folds, 3)


def test_train_ids_exclude_the_test_fold():
    s = make_split("d", cohort(), 3)
    tr = train_ids(s, 1)
    assert set(tr).isdisjoint(s["folds"][1]["test"])
    assert len(tr) + len(s["folds"][1]["test"]) == 12


def test_too_few_volumes():
    with pytest.raises(IchbenchError, match="cannot make 5 folds from 3 volumes"):
        make_folds({"a": True, "b": False, "c": True}, 5)


def test_labeled_subset_is_stratified_nested_and_deterministic():
    from ichbench.splits import labeled_subset
    vols = cohort(n_ich=8, n_clean=4)
    train = sorted(vols)
    half = labeled_subset(train, vols, 0.5, seed=3)
    quarter = labeled_subset(train, vols, 0.25, seed=3)
    assert sum(vols[v] for v in half) == 4 and sum(not vols[v] for v in half) == 2
    assert sum(vols[v] for v in quarter) == 2 and sum(not vols[v] for v in quarter) == 1
    assert set(quarter) <= set(half)                      # nested: curves compare like with like
    assert labeled_subset(train, vols, 0.5, seed=3) == half
    assert labeled_subset(train, vols, 1.0) == train
    assert len(labeled_subset(train, vols, 0.01)) == 2    # at least one volume of each stratum
    with pytest.raises(IchbenchError, match="labeled_fraction must be in"):
        labeled_subset(train, vols, 0.0)
