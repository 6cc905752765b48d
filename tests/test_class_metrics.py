"""Per-class scoring of label images (ichbench/evaluate/classes.py): each class its own binary mask,
the union as the binary result, macro means. Expected values are counted by hand on tiny grids."""

import math

import numpy as np
import pytest

from ichbench.evaluate.classes import class_case_metrics, label_problem, parse_labels, summarize_classes

SPACING = (1.0, 1.0, 1.0)
BHSD = {"EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}


def stats(values, key):
    v = [x for x in values if math.isfinite(x)]
    return {"mean": sum(v) / len(v) if v else None, "n_infinite": len(values) - len(v)}


@pytest.mark.parametrize("spec, expected", [
    ("1,2,3", {"1": 1, "2": 2, "3": 3}),
    ("EDH=1, IPH=2,IVH=3,SAH=4,SDH=5", BHSD),
    ("sdh=5,edh=1", {"sdh": 5, "edh": 1}),          # the order given is kept
])
def test_parse_labels(spec, expected):
    got = parse_labels(spec)
    assert got == expected and list(got) == list(expected)


@pytest.mark.parametrize("spec, says", [
    ("1,,2", "empty label"), ("EDH=x", "must be an integer"), ("0", "background"), ("EDH=-1", "is not a class"),
    ("EDH=1,IPH=1", "twice"), ("EDH=1,EDH=2", "twice"), ("1 2=3", "class name"),
])
def test_bad_label_lists_are_one_line(spec, says):
    with pytest.raises(ValueError, match=says) as err:
        parse_labels(spec)
    assert "\n" not in str(err.value)


def test_label_problem_names_the_foreign_values():
    raw = np.array([0, 1, 2, 7, 7, 2.5])
    problem = label_problem(raw, {"a": 1, "b": 2})
    assert problem.startswith("3 voxels hold values other than 0 and the labels 1, 2") and "2.5, 7" in problem
    assert label_problem(np.array([0, 1, 2, 2]), {"a": 1, "b": 2}) is None


def test_each_class_is_its_own_mask_and_the_union_is_the_binary_case():
    truth = np.zeros((1, 4, 8), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, 0:4] = 1          # EDH: 4 voxels, predicted as IPH -> EDH missed, IPH false positive
    pred[0, 0, 0:4] = 2
    truth[0, 2, 0:2] = 4          # SAH: 2 voxels, one of them found
    pred[0, 2, 0] = 4
    m = class_case_metrics(pred, truth, BHSD, SPACING)
    # the union: 6 true voxels, 5 predicted, all 5 inside -> tp 5, fp 0, fn 1
    assert (m["tp"], m["fp"], m["fn"]) == (5, 0, 1)
    assert m["dice"] == pytest.approx((2 * 5 + 1) / (2 * 5 + 0 + 1 + 1))
    edh, iph, sah, sdh = (m["classes"][k] for k in ("EDH", "IPH", "SAH", "SDH"))
    assert (edh["tp"], edh["fp"], edh["fn"]) == (0, 0, 4) and edh["dice"] == pytest.approx(1 / 5)
    assert edh["hd_mm"] == math.inf and edh["nsd"] == 0.0 and edh["empty"] == "pred"
    assert (iph["tp"], iph["fp"], iph["fn"]) == (0, 4, 0) and iph["abs_rvd"] == math.inf
    assert (sah["tp"], sah["fp"], sah["fn"]) == (1, 0, 1) and sah["dice"] == pytest.approx(3 / 4)
    # a class absent from both: the healthy-volume rule (Dice 1 through eps, HD 0, NSD 1)
    assert (sdh["dice"], sdh["hd_mm"], sdh["nsd"], sdh["empty"]) == (1.0, 0.0, 1.0, "both")


def test_class_summary_over_all_cases_and_where_the_class_is_present_and_macro():
    truth_a = np.zeros((1, 4, 8), np.uint8)
    truth_a[0, 0, 0:3] = 1                          # case a: EDH only, found exactly
    truth_b = np.zeros_like(truth_a)
    truth_b[0, 1, 0:3] = 2                          # case b: IPH only, missed
    labels = {"EDH": 1, "IPH": 2}
    cases = [class_case_metrics(truth_a, truth_a, labels, SPACING),
             class_case_metrics(np.zeros_like(truth_b), truth_b, labels, SPACING)]
    s = summarize_classes(cases, ("dice", "hd_mm"), stats)
    edh, iph = s["classes"]["EDH"], s["classes"]["IPH"]
    # EDH: a exact (1), b has no EDH and none predicted (1) -> all 1; present: a only
    assert edh["all"]["dice"]["mean"] == 1.0 and edh["present"]["dice"]["mean"] == 1.0
    # IPH: a has none (1), b missed 3 voxels (1/4) -> all 0.625, present 0.25; HD infinite in b
    assert iph["all"]["dice"]["mean"] == pytest.approx(0.625)
    assert iph["present"]["dice"]["mean"] == pytest.approx(0.25)
    assert iph["present"]["hd_mm"] == {"mean": None, "n_infinite": 1}
    assert s["macro"]["all"]["dice"] == {"mean": pytest.approx((1.0 + 0.625) / 2), "n_classes": 2}
    assert s["macro"]["present"]["dice"]["mean"] == pytest.approx((1.0 + 0.25) / 2)
    # IPH's present HD has no finite value: the macro mean is EDH's alone, and says so
    assert s["macro"]["present"]["hd_mm"] == {"mean": 0.0, "n_classes": 1}
