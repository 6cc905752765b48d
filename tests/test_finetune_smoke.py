"""The smoke fine-tune of `unet_mixed` learns the phantom's hemorrhages (issue 3's acceptance test).

The smoke profile as it is (64x64, 8-channel U-Net, 16 epochs of 24 steps, paper's Adam/decay/L2,
Mixed sampling with α = 0.2, paper augmentation), trained on two thirds of a 15-volume phantom and
scored on the held-out third with the paper's volume metrics.
"""

from ichbench.config import resolve
from ichbench.splits import split_for_store
from ichbench.store import open_store
from ichbench.train.engine import finetune


def test_smoke_finetune_unet_mixed_learns_the_phantom(phantom_store, tmp_path):  # noqa: F811
    split = split_for_store(open_store(phantom_store), 3)
    cfg = resolve("unet_mixed", "phantom", "smoke")
    result = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path, device="cpu", progress=False)
    test = split["folds"][0]["test"]
    assert [v["volume_id"] for v in result["volumes"]] == test
    assert not set(test) & set(result["train_volumes"])
    dice = result["summary"]["all"]["dice"]["mean"]
    detail = [(v["volume_id"], round(v["dice"], 3), v["tp"] + v["fn"]) for v in result["volumes"]]
    assert dice > 0.5, f"mean held-out volume Dice {dice:.3f}; per volume (id, dice, true voxels): {detail}"
    # the loss fell: the first epoch's mean is well above the last's
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
