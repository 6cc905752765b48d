"""Entries that prove themselves (issue 15 §4), the parts that need no training: who may claim a
built-in method's name, the distribution shown beside every other method, the reproduced /
self-reported marks, the per-fold digests, and the same per-volume numbers under a new run id."""

from __future__ import annotations

import json

import pytest

from ichbench.leaderboard.entries import rescore
from ichbench.leaderboard.render import render
from ichbench.orchestrate.reproduce import compare
from ichbench.leaderboard.reproductions import append, entry_sha256, record_path
from ichbench.leaderboard.schema import SURFACE_KEYS
from ichbench.leaderboard.validate import validate
from tests.test_leaderboard_support import (flags_of, leaderboard_cli, make_entry, recorded_board,
                                            recount, surface_for, write_entry)

cli = leaderboard_cli


@pytest.fixture
def board(tmp_path, home):
    folder, res = recorded_board(tmp_path, home)
    return folder, flags_of(res), res.fingerprint


def rejected(folder, name):
    out = cli("validate", "--root", folder.root)
    head = f"REJECT leaderboard/entries/phantom/{name}"
    lines = [x for x in out.output.splitlines() if x.startswith(head)]
    return out, lines


def perfect(flags):
    return [{"volume_id": v, "tp": 500 if ich else 0, "fp": 0, "fn": 0,
             "pred_ml": 0.5 if ich else 0.0, "true_ml": 0.5 if ich else 0.0,
             "subtypes": ["iph"] if ich else [], **surface_for(500 if ich else 0, 0, 0, 0.0)}
            for v, ich in sorted(flags.items())]


def test_forged_entry_claiming_a_paper_method_from_another_distribution_is_refused(board):
    folder, flags, fp = board
    forged = make_entry(flags, fingerprint=fp, rows=perfect(flags),
                        plugin=("ichbench-evil", "6.6.6"))
    path = write_entry(folder, forged)
    out, lines = rejected(folder, path.name)
    assert out.exit_code == 1
    assert lines == [f"REJECT leaderboard/entries/phantom/{path.name}: method 'multilabel_dl' is "
                     "built into ichbench, but the entry says it comes from ichbench-evil 6.6.6: a "
                     "plugin's method needs a name of its own"]
    # and it is not shown: rendering refuses the folder, --skip-invalid leaves it out
    assert cli("render", "--root", folder.root).exit_code == 1
    assert cli("render", "--root", folder.root, "--skip-invalid").exit_code == 0
    assert "run aaaaaaaa" not in folder.index.read_text()


def test_ichbench_cannot_be_claimed_for_a_method_it_does_not_ship(board):
    folder, flags, fp = board
    path = write_entry(folder, make_entry(flags, fingerprint=fp, method="vicreg"))
    out, lines = rejected(folder, path.name)
    assert out.exit_code == 1 and len(lines) == 1
    assert "method 'vicreg' is not one of ichbench's built-in methods, but the entry says it " \
        "comes from ichbench" in lines[0]


def test_page_shows_the_distribution_of_plugin_methods_and_the_marks(board):
    folder, flags, fp = board
    builtin = make_entry(flags, fingerprint=fp, seed=1, run_id="a" * 32)
    plugin = make_entry(flags, fingerprint=fp, seed=2, run_id="b" * 32, method="vicreg",
                        plugin=("ichbench-vicreg", "0.3.0"))
    write_entry(folder, builtin)
    plugin_path = write_entry(folder, plugin)
    # a reproduction of the plugin's entry, on two of its three folds, that matched
    volumes, tol, mean, failures = compare(plugin, plugin["per_volume"], [0, 2])
    assert not failures and mean == 0.0
    record = {"entry_sha256": entry_sha256(plugin), "who": "Ada <ada@example.org>",
              "date": "2026-12-01T10:00:00Z",
              "ichbench_version": "0.1.0", "hardware": "x86_64 2 CPU",
              "folds": [{"fold": f, "numerics": {"cpu_threads": 1}, "model_sha256": "1" * 64,
                         "predictions_sha256": plugin["folds"][f]["predictions_sha256"],
                         "predictions_identical": True} for f in (0, 2)],
              "tolerance": tol, "volumes": volumes, "mean_delta": mean,
              "passed": True, "failures": []}
    append(plugin_path, plugin, record)
    report = validate(folder)
    assert report.ok, report.lines()
    render(folder)
    html, md = folder.index.read_text(), folder.readme.read_text()
    # beside the plugin's method, its distribution; the built-in keeps the paper's label, alone
    assert "vicreg [ichbench-vicreg 0.3.0] · run bbbbbbbb" in html
    assert "vicreg \\[ichbench-vicreg 0.3.0\\]" in md   # Markdown-escaped: text, not a link
    assert "Multi-label classification (DL) · run aaaaaaaa" in html
    assert "[ichbench 0.1.0]" not in html
    row = next(x for x in html.split("<tr") if "run bbbbbbbb" in x)
    assert '<span class="badge reproduced">reproduced</span>' in row
    assert "reproduced by Ada &lt;ada@example.org&gt; on 2026-12-01 (folds 0, 2; x86_64 2 CPU" \
        in row
    row = next(x for x in html.split("<tr") if "run aaaaaaaa" in x)
    assert '<span class="badge self-reported">self-reported</span>' in row
    assert "| re-scored, reproduced by Ada &lt;ada@example.org&gt;, 2026-12-01 |" in md
    assert "| re-scored, self-reported |" in md


def test_a_record_is_checked_against_its_entry(board):
    folder, flags, fp = board
    entry = make_entry(flags, fingerprint=fp)
    path = write_entry(folder, entry)
    volumes, tol, mean, failures = compare(entry, entry["per_volume"], [0, 1, 2])
    base = {"entry_sha256": entry_sha256(entry), "who": "b", "date": "2026-12-01T10:00:00Z",
            "ichbench_version": "0.1.0", "hardware": "h",
            "folds": [{"fold": 0, "numerics": {}, "model_sha256": "1" * 64,
                       "predictions_sha256": "2" * 64, "predictions_identical": False}],
            "tolerance": tol, "volumes": volumes, "mean_delta": mean, "passed": True,
            "failures": []}
    shown = f"REJECT leaderboard/entries/phantom/{record_path(path).name}"
    cases = [({"entry_sha256": "f" * 64}, "is of another version of the entry"),
             ({"tolerance": {**tol, "volume": 0.5}}, "(volume 0.5) is wider than ichbench's"),
             ({"tolerance": {**tol, "mean": 0.25}}, "(mean 0.25) is wider than"),
             ({"tolerance": {**tol, "fp_voxels": 11}}, "(fp_voxels 11) is wider than"),
             ({"passed": False}, "its verdict does not follow"),
             ({"volumes": [{**volumes[0], "dice_entry": 0.99,
                            "delta": volumes[0]["dice_reproduced"] - 0.99}] + volumes[1:]},
              f"disagrees with the entry's counts for {volumes[0]['volume_id']}")]
    for change, why in cases:
        record_path(path).unlink(missing_ok=True)
        append(path, entry, {**base, **change})
        out = cli("validate", "--root", folder.root)
        lines = out.output.splitlines()
        assert out.exit_code == 1 and any(x.startswith(shown) and why in x for x in lines), \
            (why, out.output)
    # and a record with no entry beside it
    record_path(path).unlink()
    append(path, entry, base)
    path.unlink()
    out = cli("validate", "--root", folder.root)
    assert out.exit_code == 1
    assert f"{shown}: reproduction records of {path.name}, which does not exist" in out.output


def test_same_numbers_under_a_new_run_id_are_a_duplicate(board):
    folder, flags, fp = board
    first = make_entry(flags, fingerprint=fp, run_id="a" * 32)
    again = {**make_entry(flags, fingerprint=fp, run_id="c" * 32), "date": "2026-01-01T00:00:00Z"}
    assert again["per_volume"] == first["per_volume"]   # same counts, another run
    write_entry(folder, first)
    later = write_entry(folder, again)
    out = cli("validate", "--root", folder.root)
    assert out.exit_code == 1
    assert [x for x in out.output.splitlines() if x.startswith("REJECT")] == [
        f"REJECT leaderboard/entries/phantom/{later.name}: duplicate: the same per-volume counts as "
        "leaderboard/entries/phantom/multilabel_dl--aaaaaaaa.json (MLflow run " + "a" * 32
        + ", 2025-01-02T03:04:05Z), submitted under another run id"]
    # validating the earlier one alone accepts it; the later one alone is still the duplicate
    earlier = folder.root / "entries/phantom/multilabel_dl--aaaaaaaa.json"
    assert cli("validate", "--root", folder.root, earlier).exit_code == 0
    out = cli("validate", "--root", folder.root, later)
    assert out.exit_code == 1 and "duplicate: the same per-volume counts" in out.output
    # one volume's counts differ: not a duplicate
    r = again["per_volume"][0]
    recount(r, r["tp"], r["fp"] + 1, r["fn"])
    again["summary"] = rescore(again["per_volume"])
    later.write_text(json.dumps(again))
    assert cli("validate", "--root", folder.root).exit_code == 0


def test_fold_digests(board):
    folder, flags, fp = board
    entry = make_entry(flags, fingerprint=fp)
    assert [f["fold"] for f in entry["folds"]] == [0, 1, 2] and entry["schema_version"] == 3
    path = write_entry(folder, {**entry, "folds": entry["folds"][:2]})
    _, lines = rejected(folder, path.name)
    want = ("folds lists digests for folds 0, 1, but the volumes were scored in folds 0, 1, 2: "
            "each scored fold needs its digests once")
    assert any(want in x for x in lines)
    missing = {k: v for k, v in entry.items() if k != "folds"}
    path.write_text(json.dumps(missing))
    _, lines = rejected(folder, path.name)
    assert any("'folds' is a required property" in x for x in lines)
    # an entry of schema 1 (before digests, and before surface metrics) stays valid
    old = {**{k: v for k, v in missing.items() if k != "nsd_mm"}, "schema_version": 1,
           "per_volume": [{k: v for k, v in r.items() if k not in SURFACE_KEYS} for r in entry["per_volume"]]}
    path.write_text(json.dumps(old))
    assert cli("validate", "--root", folder.root).exit_code == 0


def test_reproduce_says_when_numerics_differ_from_the_entrys():
    from ichbench.orchestrate.reproduce import numerics_notes
    entry = {"folds": [{"fold": 0, "numerics": {"cpu_threads": 1, "cpu_capability": "AVX2"}},
                       {"fold": 1, "numerics": {"cpu_threads": 1, "gpu": "NVIDIA H200"}},
                       {"fold": 2, "numerics": {"cpu_threads": 1, "cpu_capability": "AVX512"}}]}
    here = {"cpu_threads": 1, "cpu_capability": "AVX512", "gpu": None}
    notes = numerics_notes(entry, [{"fold": f, "numerics": here} for f in (0, 1, 2)])
    assert len(notes) == 2   # fold 2 ran as here: nothing to say
    assert notes[0].startswith("fold 0 numerics differ from the entry's (cpu_threads 1, "
                               "cpu_capability AVX2 there, cpu_threads 1, cpu_capability AVX512 here)")
    assert notes[1].startswith("fold 1 ran on a GPU for the entry and on the CPU here")


def test_volumes_without_ich_are_compared_by_false_positive_voxels():
    """Dice = 1/(FP + 1) without ICH: one stray voxel is 50 points, so such volumes compare
    their false-positive voxels; a volume with ICH compares Dice."""
    from ichbench.leaderboard.reproductions import verdict
    rows = [{"volume_id": "A", "fold": 0, "tp": 0, "fp": 0, "fn": 0, "has_ich": False},
            {"volume_id": "B", "fold": 0, "tp": 0, "fp": 300, "fn": 0, "has_ich": False},
            {"volume_id": "C", "fold": 0, "tp": 90, "fp": 10, "fn": 10, "has_ich": True}]
    entry = {"per_volume": rows}
    again = [{**rows[0], "fp": 4}, {**rows[1], "fp": 360}, {**rows[2], "tp": 85, "fn": 15}]
    volumes, tol, mean, failures = compare(entry, again, [0])
    assert failures == [] and tol["mean"] == pytest.approx(0.15)   # one ICH volume
    assert volumes[0]["delta"] == pytest.approx(1 / 5 - 1)          # -80 Dice points, yet fine
    forged = [{**rows[0], "fp": 40}, {**rows[1], "fp": 20}, rows[2]]
    _, _, _, failures = compare(entry, forged, [0])
    assert failures == ["volume A (fold 0), without ICH: 0 false-positive voxels in the entry, "
                        "40 re-run (tolerance 20)",
                        "volume B (fold 0), without ICH: 300 false-positive voxels in the entry, "
                        "20 re-run (tolerance 85)"]
    assert verdict(volumes, tol)[1] == []
