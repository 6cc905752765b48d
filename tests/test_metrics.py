"""Volume metrics (eqs. 1–3, ε = 1), hemorrhage volumes and summaries, against hand-computed values."""

import math

import numpy as np
import pytest

import ichbench.evaluate as ev
from ichbench.evaluate import per_volume_row, summarize, volume_metrics, volume_ml


def test_public_import_path():
    assert ev.volume_metrics is volume_metrics


def test_two_by_two_by_hand():
    # pred [[1,1],[0,0]], truth [[1,0],[1,0]] → TP 1 (top-left), FP 1 (top-right), FN 1 (bottom-left)
    #   Dice = (2+1)/(2+1+1+1) = 3/5; precision = (1+1)/(1+1+1) = 2/3; recall = 2/3
    m = volume_metrics(np.array([[1, 1], [0, 0]], bool), np.array([[1, 0], [1, 0]], bool))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert m["dice"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)


def test_empty_prediction_on_empty_volume_scores_one():
    z = np.zeros((3, 4, 4), bool)
    m = volume_metrics(z, z)
    assert (m["dice"], m["precision"], m["recall"]) == (1.0, 1.0, 1.0)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0)


def test_missed_and_false_hemorrhage_by_hand():
    truth = np.zeros((2, 2), bool)
    truth[0] = True
    truth[1, 0] = True  # 3 voxels
    # nothing predicted: Dice = 1/(3+1), precision = (0+1)/(0+0+1) = 1 (ε), recall = 1/4
    m = volume_metrics(np.zeros_like(truth), truth)
    assert (m["dice"], m["precision"], m["recall"]) == pytest.approx((0.25, 1.0, 0.25))
    # two false voxels on a healthy volume: Dice = 1/(2+1), precision = 1/3, recall = 1
    pred = np.array([[1, 0], [0, 1]], bool)
    m = volume_metrics(pred, np.zeros_like(pred))
    assert (m["dice"], m["precision"], m["recall"]) == pytest.approx((1 / 3, 1 / 3, 1.0))


def test_counts_are_summed_over_slices_not_averaged():
    # slice 0: TP 1; slice 1: FP 2 → volume Dice (2·1 + 1)/(2·1 + 2 + 0 + 1) = 3/5,
    # whereas the mean of per-slice Dice would be ((2+1)/(2+1) + 1/(2+1))/2 = 2/3
    pred = np.zeros((2, 2, 2), bool)
    truth = np.zeros((2, 2, 2), bool)
    pred[0, 0, 0] = truth[0, 0, 0] = True
    pred[1, 0, :] = True
    m = volume_metrics(pred, truth)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 0)
    assert m["dice"] == pytest.approx(3 / 5)


def test_eps_parameter():
    m = volume_metrics(np.zeros((2, 2), bool), np.zeros((2, 2), bool), eps=0.5)
    assert m["dice"] == 1.0
    m = volume_metrics(np.array([[1, 0]], bool), np.array([[0, 1]], bool), eps=0.5)
    # Dice = 0.5/(0+1+1+0.5) = 0.2
    assert m["dice"] == pytest.approx(0.2)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        volume_metrics(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


def test_zero_one_integers_accepted_other_values_rejected():
    m = volume_metrics(np.array([1, 0], np.uint8), np.array([1, 1], np.uint8))
    assert (m["tp"], m["fn"]) == (1, 1)
    with pytest.raises(ValueError, match="pred"):
        volume_metrics(np.array([0.7, 0.0]), np.array([1, 0], bool))


def test_volume_ml_by_hand():
    mask = np.zeros((2, 4, 4), bool)
    mask[0, :2, :] = True  # 8 voxels
    mask[1, 0, :2] = True  # 2 voxels
    # 10 voxels × 5 mm × 0.5 mm × 0.4 mm = 10 mm³ = 0.01 mL
    assert volume_ml(mask, (5.0, 0.5, 0.4)) == pytest.approx(0.01)
    assert volume_ml(np.zeros((1, 2, 2), bool), (5, 1, 1)) == 0.0
    for bad in [(5.0, 0.5), (5.0, -0.5, 0.4), (5.0, float("nan"), 1.0)]:
        with pytest.raises(ValueError, match="spacing"):
            volume_ml(mask, bad)


def row(vid, tp, fp, fn, dice, prec, rec, subtypes, pred_ml, true_ml):
    return dict(volume_id=vid, tp=tp, fp=fp, fn=fn, dice=dice, precision=prec, recall=rec,
                has_ich=tp + fn > 0, subtypes=subtypes, pred_ml=pred_ml, true_ml=true_ml)


ROWS = [
    row("A", 3, 0, 1, 0.8, 1.0, 0.6, ["iph", "ivh"], 1.0, 1.5),
    row("B", 1, 0, 1, 0.4, 0.6, 0.5, ["iph"], 2.0, 1.0),
    row("C", 0, 0, 0, 1.0, 1.0, 1.0, [], 0.0, 0.0),
    row("D", 0, 2, 0, 0.2, 0.2, 1.0, None, 0.5, 0.0),
]


def test_summary_all_vs_ich_by_hand():
    s = summarize(ROWS)
    assert s["std_ddof"] == 1
    a, ich = s["all"], s["ich"]
    assert (a["n"], ich["n"]) == (4, 2)
    # all: Dice (0.8+0.4+1+0.2)/4 = 0.6; deviations ±0.2, ±0.4 → Σ² = 0.4; sample std √(0.4/3)
    assert a["dice"]["mean"] == pytest.approx(0.6)
    assert a["dice"]["std"] == pytest.approx(math.sqrt(0.4 / 3))
    assert a["precision"]["mean"] == pytest.approx(0.7)
    assert a["recall"]["mean"] == pytest.approx(0.775)
    # ICH volumes A, B: Dice 0.6 ± √(0.08/1); precision 0.8; recall 0.55
    assert ich["dice"]["mean"] == pytest.approx(0.6)
    assert ich["dice"]["std"] == pytest.approx(math.sqrt(0.08))
    assert ich["precision"]["mean"] == pytest.approx(0.8)
    assert ich["recall"]["mean"] == pytest.approx(0.55)
    assert (a["tp"], a["fp"], a["fn"]) == (4, 2, 2)
    # |pred − true| mL: 0.5, 1, 0, 0.5 → 0.5
    assert a["ml_abs_error"]["mean"] == pytest.approx(0.5)
    assert ich["ml_abs_error"]["mean"] == pytest.approx(0.75)


def test_summary_per_subtype():
    s = summarize(ROWS)
    sub = s["subtypes"]
    assert list(sub)[:5] == ["iph", "ivh", "sah", "sdh", "edh"]
    assert sub["iph"]["n"] == 2 and sub["iph"]["recall"]["mean"] == pytest.approx(0.55)
    assert sub["ivh"]["n"] == 1 and sub["ivh"]["dice"] == {"mean": pytest.approx(0.8), "std": None}
    assert sub["sah"]["n"] == 0 and sub["sah"]["dice"] == {"mean": None, "std": None}
    assert s["subtypes_unknown"] == 1


def test_summary_rejects_inconsistent_rows():
    with pytest.raises(ValueError, match="twice"):
        summarize([ROWS[0], ROWS[0]])
    with pytest.raises(ValueError, match="missing true_ml"):
        summarize([{k: v for k, v in ROWS[0].items() if k != "true_ml"}])
    with pytest.raises(ValueError, match="has_ich"):   # hemorrhage voxels in a volume flagged healthy
        summarize([dict(ROWS[0], has_ich=False)])
    # the other way round is allowed: a bleed flagged from the native mask but lost when the mask
    # was resampled to the scoring grid (issue 9 §5) stays an ICH volume
    assert summarize([dict(ROWS[2], has_ich=True)])["ich"]["n"] == 1
    with pytest.raises(ValueError, match="dice"):
        summarize([dict(ROWS[2], dice=1.5)])


def test_per_volume_row_builds_a_consistent_row():
    truth = np.zeros((2, 3, 3), bool)
    truth[0, :2, :2] = True        # 4 voxels
    pred = np.zeros_like(truth)
    pred[0, :2, :1] = True         # 2 TP
    pred[1, 2, 2] = True           # 1 FP
    # voxels of 2 x 1.5 x 0.5 mm = 1.5 mm^3 = 0.0015 mL
    r = per_volume_row(7, pred, truth, (2.0, 1.5, 0.5), ["sdh", "iph"])
    assert set(r) == {"volume_id", "tp", "fp", "fn", "dice", "precision", "recall", "has_ich", "subtypes",
                      "pred_ml", "true_ml", "hd_mm", "hd95_mm", "nsd", "rvd", "abs_rvd", "vol_err_ml",
                      "abs_vol_err_ml", "empty"}
    assert r["volume_id"] == "7"
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)
    assert r["dice"] == pytest.approx(5 / 8)      # (4+1)/(4+1+2+1)
    assert r["precision"] == pytest.approx(3 / 4)  # (2+1)/(2+1+1)
    assert r["recall"] == pytest.approx(3 / 5)     # (2+1)/(2+2+1)
    assert r["has_ich"] is True and r["subtypes"] == ["iph", "sdh"]   # sorted
    assert r["pred_ml"] == pytest.approx(3 * 0.0015) and r["true_ml"] == pytest.approx(4 * 0.0015)
    # a healthy volume, nothing predicted: every ratio is eps/eps = 1, no ICH, subtypes unknown
    healthy = per_volume_row("v2", np.zeros_like(truth), np.zeros_like(truth), (2.0, 1.5, 0.5), None)
    assert (healthy["tp"], healthy["fp"], healthy["fn"]) == (0, 0, 0)
    assert (healthy["dice"], healthy["precision"], healthy["recall"]) == (1.0, 1.0, 1.0)
    assert healthy["has_ich"] is False and healthy["subtypes"] is None
    assert healthy["pred_ml"] == 0.0 and healthy["true_ml"] == 0.0
    # the store's native-resolution flag wins over the scored truth ...
    tiny = per_volume_row("v3", np.zeros_like(truth), np.zeros_like(truth), (2.0, 1.5, 0.5), ["iph"], has_ich=True)
    assert tiny["has_ich"] is True and (tiny["tp"], tiny["fn"]) == (0, 0)
    # ... but cannot deny hemorrhage the scored mask shows
    with pytest.raises(ValueError, match="flagged without hemorrhage but its mask has 4 voxels"):
        per_volume_row("v4", pred, truth, (2.0, 1.5, 0.5), ["sdh"], has_ich=False)
