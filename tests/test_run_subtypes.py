"""A subtypes run through the real CLI (issue 23's done-when, `--dataset phantom --set
finetune.task=subtypes` in the suite): `ichbench run` on the session Ray cluster and a real MLflow
store, one fold of two steps, scored per class on its own fold and on an external test set
(`--test-on phantom_shifted`), then read back by `ichbench runs --json`."""

import json

import pytest

from ichbench import SUBTYPES
from ichbench.evaluate.infjson import decode
from tests.cli import call
from tests.test_run import runs_of

pytestmark = pytest.mark.slow

SETS = ["finetune.task=subtypes", "finetune.epochs=1", "finetune.steps_per_epoch=2"]
SHIFTED = {"volumes": 4, "slices": 8, "native_size": 64}   # a small external set, as test_leaderboard_reproduce's


def test_a_subtypes_run_reports_per_class_dice_on_its_folds_and_its_external_set(phantom_home, ray_session,
                                                                                  monkeypatch, capsys):
    from ichbench.datasets.base import IngestOptions, get_dataset
    from ichbench.ingest import ingest
    from ichbench.store import open_store, store_path
    ingest(get_dataset("phantom_shifted"), phantom_home, options=IngestOptions(size=64, extra=SHIFTED))
    assert open_store(store_path(phantom_home, "phantom_shifted", "segmentation")).class_names == list(SUBTYPES)
    cmd = ["run", "--method", "unet_mixed", "--dataset", "phantom", "--profile", "smoke", "--folds", "0",
           "--test-on", "phantom_shifted", *[a for s in SETS for a in ("--set", s)]]
    code, out, err = call(cmd, monkeypatch, capsys)
    assert code in (0, None), err[-3000:]
    # the results: the run's per-class table and the external set's, each with a row per class
    assert "unet_mixed, per class" in out and "unet_mixed on phantom_shifted (external test set" in out
    for name in SUBTYPES:
        assert sum(line.lstrip("│| ").startswith(f"{name} ") for line in out.splitlines()) == 2, (name, out)
    [parent] = runs_of(phantom_home, kind="parent")
    m = parent.data.metrics
    for name in SUBTYPES:
        assert f"dice_class_{name}_all_mean" in m
        for kind in ("folds", "ensemble"):
            assert f"test.phantom_shifted.{kind}.dice_class_{name}_all_mean" in m
    # the external rows: the cross-validation rows' format (the union's metrics, classes below)
    run_dir = next((phantom_home / "runs").rglob("external/phantom_shifted.json")).parent.parent
    rows = decode(json.loads((run_dir / "external" / "phantom_shifted.json").read_text()))["rows"]
    assert len(rows) == SHIFTED["volumes"]
    for r in rows:
        assert list(r["classes"]) == list(SUBTYPES) and "pred_labels_sha256" in r and "dice" in r
    fold_rows = decode(json.loads((run_dir / "fold_0" / "external" / "phantom_shifted.json").read_text()))["rows"]
    assert [list(r["classes"]) for r in fold_rows] == [list(SUBTYPES)] * len(rows)
    code, out, _ = call(["runs", "--json"], monkeypatch, capsys)
    [row] = json.loads(out)
    assert set(row["classes"]) == {*SUBTYPES, "macro"}
    ext = row["external"]["phantom_shifted"]["ensemble"]
    assert ext["n"] == SHIFTED["volumes"] and set(ext["classes"]) == {*SUBTYPES, "macro"}
    sdh = m["test.phantom_shifted.ensemble.dice_class_sdh_all_mean"]
    assert ext["classes"]["sdh"]["dice_all"] == pytest.approx(sdh)
