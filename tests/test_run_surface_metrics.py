"""Issue 22 on the run side: surface metrics in per-volume rows, their summaries and MLflow names,
inf in JSON both ways, the `eval` settings. Expected values are worked out by hand in the comments."""

import json
import math

import numpy as np
import pytest

from ichbench.errors import IchbenchError
from ichbench.evaluate import per_volume_row, summarize
from ichbench.evaluate.infjson import decode, encode
from ichbench.evaluate.summary import metric_stats
from ichbench.resolve import resolve
from ichbench.tracking.records import per_volume_csv, summary_metrics
from ichbench.train.fold_setup import read_fold_result, write_fold_result

INF = math.inf


def two_voxels():
    """One voxel of truth at slice 0 and one of prediction at slice 2 on a 2 x 1 x 1 mm grid."""
    t = np.zeros((3, 2, 2), bool)
    p = np.zeros_like(t)
    t[0, 0, 0] = p[2, 0, 0] = True
    return p, t


@pytest.mark.parametrize("tau, nsd", [(1.0, 0.0), (2.0, 0.5), (4.0, 1.0)])
def test_row_surface_metrics_by_hand(tau, nsd):
    # each voxel's surface corners lie on its two z planes: truth z in {0, 1}, prediction z in {2, 3}.
    # Half of each surface's (equal) surfel areas is 1 slice = 2 mm from the other surface, half 2
    # slices = 4 mm: HD = HD95 = 4 mm; NSD = the half within tau (<= tau counts).
    p, t = two_voxels()
    r = per_volume_row("a", p, t, (2.0, 1.0, 1.0), None, nsd_mm=tau)
    assert (r["hd_mm"], r["hd95_mm"]) == (4.0, 4.0)
    assert r["nsd"] == pytest.approx(nsd)
    assert (r["rvd"], r["abs_rvd"], r["vol_err_ml"], r["abs_vol_err_ml"], r["empty"]) == (0.0, 0.0, 0.0, 0.0, "none")
    # the spacing given is the one used: at 0.5 mm a slice the farthest corners are 1 mm apart
    assert per_volume_row("a", p, t, (0.5, 1.0, 1.0), None)["hd_mm"] == 1.0


def test_row_empty_case_rule():
    p, t = two_voxels()
    missed = per_volume_row("m", np.zeros_like(t), t, (2.0, 1.0, 1.0), None)   # 1 voxel of 2 mm^3 = 0.002 mL
    assert (missed["hd_mm"], missed["hd95_mm"], missed["nsd"], missed["empty"]) == (INF, INF, 0.0, "pred")
    assert missed["rvd"] == -1.0 and missed["abs_rvd"] == 1.0
    assert missed["vol_err_ml"] == pytest.approx(-0.002) and missed["abs_vol_err_ml"] == pytest.approx(0.002)
    false = per_volume_row("f", p, np.zeros_like(t), (2.0, 1.0, 1.0), None)
    assert (false["hd_mm"], false["abs_rvd"], false["nsd"], false["empty"]) == (INF, INF, 0.0, "truth")
    healthy = per_volume_row("h", np.zeros_like(t), np.zeros_like(t), (2.0, 1.0, 1.0), None)
    assert (healthy["hd_mm"], healthy["hd95_mm"], healthy["nsd"], healthy["abs_rvd"], healthy["empty"]) == \
        (0.0, 0.0, 1.0, 0.0, "both")


def test_metric_stats_by_hand():
    s = metric_stats([1.0, 3.0, INF])
    # finite 1, 3: mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2), median 2; one infinite
    assert s == {"n": 3, "n_infinite": 1, "mean": 2.0, "std": pytest.approx(math.sqrt(2)), "median": 2.0}
    # capped at 10: (1 + 3 + 10) / 3
    assert metric_stats([1.0, 3.0, INF], cap=10.0)["mean_capped"] == pytest.approx(14 / 3)
    assert metric_stats([INF]) == {"n": 1, "n_infinite": 1, "mean": None, "std": None, "median": None}
    assert metric_stats([]) == {"n": 0, "n_infinite": 0, "mean": None, "std": None, "median": None}


def srow(vid, dice, hd, nsd, pred_ml, true_ml, subtypes):
    tp = 1 if true_ml else 0
    return dict(volume_id=vid, tp=tp, fp=0, fn=0, dice=dice, precision=dice, recall=dice, has_ich=bool(true_ml),
                subtypes=subtypes, pred_ml=pred_ml, true_ml=true_ml, hd_mm=hd, hd95_mm=hd, nsd=nsd,
                rvd=(pred_ml - true_ml) / true_ml if true_ml else (INF if pred_ml else 0.0),
                abs_rvd=abs(pred_ml - true_ml) / true_ml if true_ml else (INF if pred_ml else 0.0),
                vol_err_ml=pred_ml - true_ml, abs_vol_err_ml=abs(pred_ml - true_ml), empty="none")


ROWS = [srow("A", 0.8, 2.0, 0.9, 3.0, 2.0, ["iph"]),     # |RVD| 0.5, error +1 mL
        srow("B", 0.4, INF, 0.0, 0.0, 4.0, ["iph", "sdh"]),   # missed: HD inf, |RVD| 1, error -4 mL
        srow("C", 1.0, 0.0, 1.0, 0.0, 0.0, []),           # healthy, nothing predicted
        srow("D", 0.5, 6.0, 0.5, 1.0, 0.0, None)]         # false positive on a healthy volume: |RVD| inf


def test_summary_groups_surface_stats_and_agreement_by_hand():
    s = summarize(ROWS, nsd_mm=0.42, hd_cap_mm=100.0)
    assert (s["nsd_mm"], s["hd_cap_mm"]) == (0.42, 100.0)
    a, ich, iph, sdh = s["all"], s["ich"], s["subtypes"]["iph"], s["subtypes"]["sdh"]
    # HD over all: finite 2, 0, 6 -> mean 8/3, median 2, one inf; capped (2 + 100 + 0 + 6) / 4 = 27
    assert a["hd_mm"]["mean"] == pytest.approx(8 / 3) and a["hd_mm"]["median"] == 2.0
    assert (a["hd_mm"]["n"], a["hd_mm"]["n_infinite"]) == (4, 1) and a["hd_mm"]["mean_capped"] == pytest.approx(27)
    assert a["nsd"]["mean"] == pytest.approx((0.9 + 0 + 1 + 0.5) / 4) and "mean_capped" not in a["nsd"]
    # |RVD|: 0.5, 1, 0, inf -> mean 0.5 over the finite three, one inf; mL errors 1, 4, 0, 1 -> 1.5
    assert a["abs_rvd"]["mean"] == pytest.approx(0.5) and a["abs_rvd"]["n_infinite"] == 1
    assert a["abs_vol_err_ml"]["mean"] == pytest.approx(1.5)
    # ICH volumes A, B: HD 2 and inf; subtype groups take the same rows as for Dice
    assert (ich["hd95_mm"]["mean"], ich["hd95_mm"]["n_infinite"]) == (2.0, 1)
    assert iph["nsd"]["mean"] == pytest.approx(0.45) and sdh["hd_mm"]["n_infinite"] == 1
    assert s["subtypes"]["sah"]["hd_mm"] == {"n": 0, "n_infinite": 0, "mean": None, "std": None, "median": None,
                                             "mean_capped": None}
    # Bland-Altman over all four: differences +1, -4, 0, +1 -> bias -0.5
    va = s["volume_agreement"]
    assert va["n"] == 4 and va["bias_ml"] == pytest.approx(-0.5)
    assert va["sd_diff_ml"] == pytest.approx(math.sqrt((1.5 ** 2 + 3.5 ** 2 + 0.5 ** 2 + 1.5 ** 2) / 3))


def test_existing_summary_values_do_not_move_and_old_rows_still_summarise():
    old = [{k: v for k, v in r.items() if k not in ("hd_mm", "hd95_mm", "nsd", "rvd", "abs_rvd", "vol_err_ml",
                                                    "abs_vol_err_ml", "empty")} for r in ROWS]
    before, now = summarize(old), summarize(ROWS)
    for g in ("all", "ich"):
        for k in ("n", "dice", "precision", "recall", "tp", "fp", "fn", "ml_abs_error"):
            assert now[g][k] == before[g][k]
    # rows without the surface metrics: no stats (not a crash, not a mean over the rows that have them)
    assert before["all"]["hd_mm"] is None and before["ich"]["nsd"] is None
    assert summarize(old[:2] + ROWS[2:])["all"]["hd95_mm"] is None
    assert before["volume_agreement"]["bias_ml"] == pytest.approx(-0.5)   # mL are in every row
    assert before["nsd_mm"] is None and before["hd_cap_mm"] is None


def test_inf_in_json_both_ways():
    doc = {"volume_id": "inf", "hd_mm": INF, "rvd": -INF, "nsd": 0.0, "rows": [{"abs_rvd": INF}]}
    text = json.dumps(encode(doc), allow_nan=False)   # valid JSON: no Infinity
    assert '"hd_mm": "inf"' in text and '"rvd": "-inf"' in text
    assert decode(json.loads(text)) == doc   # and a volume named "inf" stays a name


def test_fold_result_written_and_read_back_with_inf(tmp_path):
    path = tmp_path / "result.json"
    result = {"fold": 0, "volumes": ROWS, "summary": summarize(ROWS)}
    write_fold_result(result, path)
    assert "Infinity" not in path.read_text() and '"hd_mm": "inf"' in path.read_text()
    back = read_fold_result(path)
    assert back == json.loads(json.dumps(result))   # inf again, tuples as lists
    assert back["volumes"][1]["hd_mm"] == INF and summarize(back["volumes"]) == summarize(ROWS)


def test_mlflow_metric_names():
    m = summary_metrics(summarize(ROWS, nsd_mm=1.0, hd_cap_mm=100.0))
    assert m["dice_all_mean"] == pytest.approx(0.675)   # the paper's numbers stay as they were
    assert m["hd_mm_all_mean"] == pytest.approx(8 / 3) and m["hd_mm_all_n_infinite"] == 1
    assert m["hd95_mm_ich_mean"] == 2.0 and m["nsd_sub_iph_mean"] == pytest.approx(0.45)
    assert m["abs_rvd_all_n_infinite"] == 1 and m["hd_mm_all_mean_capped"] == pytest.approx(27)
    assert m["volume_bias_ml"] == pytest.approx(-0.5) and {"volume_ccc", "volume_icc_2_1", "volume_loa_low_ml",
                                                          "volume_loa_high_ml"} <= set(m)
    assert m["nsd_tolerance_mm"] == 1.0 and m["hd_cap_mm"] == 100.0   # the cap: a metric, as reruns may change it
    assert all(math.isfinite(v) for v in m.values())   # MLflow would store inf as 1.8e308
    assert "hd_mm_sub_sah_mean" not in m               # an empty group logs no mean


def test_per_volume_csv_writes_inf_and_old_rows_leave_the_columns_empty():
    lines = per_volume_csv([dict(ROWS[1], fold=0)]).splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert (row["hd_mm"], row["hd95_mm"], row["nsd"], row["empty"]) == ("inf", "inf", "0.0", "none")
    old = {k: v for k, v in ROWS[0].items() if k != "hd_mm"}
    assert dict(zip(lines[0].split(","), per_volume_csv([old]).splitlines()[1].split(",")))["hd_mm"] == ""


def test_eval_settings_identity(registry):
    from ichbench.orchestrate.plan import run_identity
    base = resolve("unet_mixed", "phantom", "smoke")
    tau = resolve("unet_mixed", "phantom", "smoke", ["eval.nsd_mm=0.42"])
    cap = resolve("unet_mixed", "phantom", "smoke", ["eval.hd_cap_mm=150"])
    assert "eval" not in base.to_dict() and (base.eval.nsd_mm, base.eval.hd_cap_mm) == (1.0, None)
    assert run_identity(base) == base.to_dict()   # the defaults: run keys as before
    # another NSD tolerance gives other per-volume numbers: another run and fine-tuning identity
    assert tau.to_dict()["eval"] == {"nsd_mm": 0.42, "hd_cap_mm": None}
    assert run_identity(tau)["eval"] == {"nsd_mm": 0.42}
    assert tau.finetune_hash() != base.finetune_hash() and tau.hash() == base.hash()
    # the cap only changes summaries, recomputed from the rows: recorded, but the same run and identities
    assert cap.to_dict()["eval"] == {"nsd_mm": 1.0, "hd_cap_mm": 150}
    assert run_identity(cap) == base.to_dict() and cap.finetune_hash() == base.finetune_hash()
    # an entry's recorded config gives the same settings back, nothing filled in
    from ichbench.leaderboard.recorded_config import rebuild
    for cfg in (tau, cap):
        filled: list[str] = []
        recorded = json.loads(json.dumps(cfg.to_dict()))
        assert rebuild(recorded, filled).eval == cfg.eval and filled == []


@pytest.mark.parametrize("item, says", [("eval.nsd_mm=-1", "eval.nsd_mm must be >= 0"),
                                        ("eval.hd_cap_mm=0", "eval.hd_cap_mm must be > 0"),
                                        ("eval.hd_cap_mm=1e9", "eval.hd_cap_mm must be <= 1000")])
def test_eval_settings_are_bounded(registry, item, says):
    with pytest.raises(IchbenchError, match=says):
        resolve("unet_mixed", "phantom", "smoke", [item])


def test_agreement_figure_is_a_png_and_the_same_bytes_twice():
    from ichbench.evaluate.agreement_plot import agreement_png
    png = agreement_png([3.0, 0.0, 0.0, 1.0], [2.0, 4.0, 0.0, 0.0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == agreement_png([3.0, 0.0, 0.0, 1.0], [2.0, 4.0, 0.0, 0.0])
    assert agreement_png([1.0], [1.0]) is None


def test_results_table_shows_hd95_nsd_and_ml_agreement_under_the_dice():
    from types import SimpleNamespace as NS

    from ichbench.orchestrate.report import result_table
    from tests.test_console_output import render

    def outcome(summary):
        return NS(plan=NS(method=NS(name="multilabel_dl"), cfg=NS(dataset="phantom", profile="smoke")),
                  summary=summary)
    # HD95 and HD over the finite 2, 0, 6: 2.7 ± 3.1 mm, one inf; NSD 60.0 ± 45.5 %; bias -0.50 mL
    narrow = "\n".join(render(result_table([outcome(summarize(ROWS))]), 80))
    assert "HD95 2.7±3.1 mm, HD 2.7±3.1 mm (1 inf), NSD 60.0±45.5 %" in narrow
    assert "bias -0.50 mL" in narrow and narrow.index("Dice all") < narrow.index("HD95") and "capped" not in narrow
    # eval.hd_cap_mm: (2 + 100 + 0 + 6) / 4 = 27 for both
    capped = "\n".join(render(result_table([outcome(summarize(ROWS, hd_cap_mm=100.0))]), 80))
    assert "HD95 / HD with each capped at 100 mm: 27.0 / 27.0 mm" in capped
    wide = render(result_table([outcome(summarize(ROWS))]), 200)
    [row] = [line for line in wide if line.startswith("│ multilabel_dl │ phantom │")]
    assert [c.strip() for c in row.split("│")[3:8]] == ["2.7±3.1", "2.7±3.1", "1", "60.0±45.5", "0.000"]
    # a summary from before the surface metrics: dashes, no crash
    old = summarize([{k: v for k, v in r.items() if k != "hd_mm"} for r in ROWS])
    del old["volume_agreement"]
    assert "HD95 2.7±3.1 mm, HD — mm (— inf)" in "\n".join(render(result_table([outcome(old)]), 80))
