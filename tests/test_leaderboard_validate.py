"""Validation of the leaderboard folder: every kind of tampering is rejected, by name, with a
non-zero exit from the CLI; canonical records come from a real ingested store."""

from __future__ import annotations

import copy
import json

import pytest

from ichbench import SUBTYPES
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.entries import relpath, rescore
from ichbench.leaderboard.validate import validate
from tests.test_leaderboard_support import (copy_folder, flags_of, hand_summary, leaderboard_cli, make_entry,
                                            phantom_store, recount, recorded_board, resplit, write_entry)

cli = leaderboard_cli


@pytest.fixture
def board(tmp_path, home):
    """A tmp leaderboard with the phantom recorded from a real store, and one valid entry."""
    folder, res = recorded_board(tmp_path, home)
    flags = flags_of(res)
    entry = make_entry(flags, fingerprint=res.fingerprint)
    path = write_entry(folder, entry)
    return folder, flags, res, entry, path


def test_canonical_record_from_store(board):
    folder, flags, res, _, _ = board
    data = canon.load(folder)
    d = data["datasets"]["phantom"]
    assert d["volume_ids"] == sorted(flags) and d["has_ich"] == flags
    assert d["n_volumes"] == 6 and d["n_ich_volumes"] == 3
    assert d["fingerprints"] == [res.fingerprint]
    from ichbench.splits import make_split
    # the asked-for k and the default 5 (the phantom has no paper k)
    assert d["split_hashes"] == {str(k): make_split("phantom", flags, k)["hash"] for k in (3, 5)}
    # the published datasets keep their nulls: nothing was invented for them
    assert data["datasets"]["segcq500"]["volume_ids"] is None
    assert data["datasets"]["hssayeni"]["fingerprints"] == []


def test_valid_entry_passes(board):
    folder, *_ , path = board
    out = cli("validate", "--root", folder.root)
    assert out.exit_code == 0, out.output
    assert f"ok     leaderboard/entries/phantom/{path.name}" in out.output
    assert "ok     leaderboard/published/spahr2023.json" in out.output


def assert_rejected(folder, path, *expected):
    out = cli("validate", "--root", folder.root)
    assert out.exit_code == 1, out.output
    lines = [line for line in out.output.splitlines() if line.startswith(f"REJECT leaderboard/{path}")]
    assert lines, out.output
    for text in expected:
        assert any(text in line for line in lines), (text, out.output)
    return lines


def _rewrite(path, entry):
    path.write_text(json.dumps(entry, indent=2))


def test_changed_mean_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["summary"]["ich"]["dice"]["mean"] += 1e-6
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "summary ich.dice.mean", "per-volume counts give")


def test_changed_counts_rejected(board):
    # a better-looking count without touching the summary
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["per_volume"][0]["fp"] = 0
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "per-volume counts give")


def test_ich_flag_contradicting_the_counts_rejected(board):
    folder, flags, _, entry, path = board
    e = copy.deepcopy(entry)
    row = next(r for r in e["per_volume"] if r["tp"] + r["fn"] > 0)
    row["has_ich"] = False          # hide a hemorrhage volume from the ICH group
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), f"has_ich is false but tp + fn > 0 for {row['volume_id']}")


def test_ich_flag_without_scored_voxels_counts_as_ich(board):
    """A bleed lost when the mask was resampled still makes an ICH volume (issue 9 §5)."""
    folder, flags, _, entry, path = board
    e = copy.deepcopy(entry)
    row = next(r for r in e["per_volume"] if r["has_ich"])
    recount(row, 0, row["fp"], 0)
    # the summary by hand (not ichbench's scorer): the flagged row is in the ICH group
    e["summary"] = hand_summary(e["per_volume"])
    assert e["summary"]["ich"]["n"] == sum(flags.values()) == 3
    _rewrite(path, e)
    assert validate(folder).ok, validate(folder).lines()
    # and the summary that leaves it out of the ICH group (as TP + FN > 0 alone would) is refused
    e["summary"]["ich"] = hand_summary([r for r in e["per_volume"] if r is not row])["ich"]
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "summary ich.n = 2 but the per-volume rows give 3")


def _forged(entry, rows, k=3):
    """What a careful forger would do: re-derive summary and split so only canonical data catches it."""
    e = copy.deepcopy(entry)
    e["per_volume"] = rows
    e["split"]["hash"], fold_of = resplit("phantom", rows, k)
    for r in rows:
        r["fold"] = fold_of[r["volume_id"]]
    e["summary"] = rescore(rows)
    return e


def test_missing_volume_rejected(board):
    folder, _, _, entry, path = board
    rows = [r for r in copy.deepcopy(entry["per_volume"]) if r["volume_id"] != "V003"]
    _rewrite(path, _forged(entry, rows))
    assert_rejected(folder, path.relative_to(folder.root), "missing canonical volumes: V003",
                    "not the canonical phantom split")


def test_extra_volume_rejected(board):
    folder, _, _, entry, path = board
    rows = copy.deepcopy(entry["per_volume"]) + [{**entry["per_volume"][1], "volume_id": "V999"}]
    _rewrite(path, _forged(entry, rows))
    assert_rejected(folder, path.relative_to(folder.root), "volumes not in the canonical phantom set: V999")


def test_duplicated_volume_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["per_volume"].append(dict(e["per_volume"][0]))
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "volumes listed more than once: V000")


def test_rows_that_cannot_be_rescored_stop_the_checks_there(board):
    """A fold out of range (or a volume listed twice, or ICH against the counts): re-scoring and
    the split checks would only repeat it. An unknown subtype is named but does not stop them."""
    folder, _, _, entry, _ = board
    exp = canon.expectation(canon.load(folder), "phantom")
    e = copy.deepcopy(entry)
    e["per_volume"][0].update(fold=7, subtypes=["iph", "xyz"])
    e["summary"]["all"]["dice"]["mean"] = 0.5
    assert check_entry(e, exp) == ["fold numbers 7 out of range for k = 3",
                                   f"unknown subtypes xyz (known: {', '.join(SUBTYPES)})"]
    e["per_volume"][0]["fold"] = entry["per_volume"][0]["fold"]
    problems = check_entry(e, exp)
    assert problems[0] == f"unknown subtypes xyz (known: {', '.join(SUBTYPES)})"
    assert problems[1].startswith("summary all.dice.mean = 0.5 but the per-volume counts give")


def test_wrong_split_hash_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["split"]["hash"] = "f" * 64
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root),
                    "split hash ffffffffffff… is not the canonical phantom split for k = 3",
                    "is not the hash of the folds its volumes were scored in")


def test_entry_of_some_folds_names_the_missing_folds(board):
    """A `--folds 1` run's entry: the folds are named, not the split hash they make differ."""
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["per_volume"] = [r for r in e["per_volume"] if r["fold"] == 1]
    e["summary"] = rescore(e["per_volume"])
    _rewrite(path, e)
    lines = assert_rejected(folder, path.relative_to(folder.root),
                            "run covers folds 1 of k = 3; missing 0, 2: an entry needs every fold; rerun the same "
                            "`ichbench run` without --folds (finished folds are reused) and submit again")
    assert len(lines) == 1, lines


def test_wrong_fold_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    a, b = e["per_volume"][0], e["per_volume"][2]
    a["fold"], b["fold"] = (a["fold"] + 1) % 3, a["fold"]
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "different fold than the canonical split puts them")


def test_wrong_fingerprint_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["dataset"]["fingerprint"] = "1" * 64
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root),
                    "dataset fingerprint 111111111111… is not a recorded phantom fingerprint")


def test_duplicate_run_rejected(board):
    folder, _, _, entry, path = board
    twin = copy.deepcopy(entry)
    twin["method"] = "renamed_method"
    twin["plugin"] = {"distribution": "ichbench-renamed", "version": "1.0"}   # not a built-in name
    twin_path = write_entry(folder, twin)
    lines = assert_rejected(folder, twin_path.relative_to(folder.root), "duplicate: MLflow run " + "a" * 32)
    assert f"already on the leaderboard as leaderboard/entries/phantom/{path.name}" in lines[0]


def test_edited_published_row_rejected(board):
    folder = board[0]
    pub = folder.published_dir / "spahr2023.json"
    pub.write_text(pub.read_text().replace('"mean": 63.85', '"mean": 73.85', 1))
    assert_rejected(folder, "published/spahr2023.json", "published rows were edited")
    # and the edited copy is never shown as the paper's
    from ichbench.leaderboard.published import load_published
    assert load_published(folder) == []


def test_unknown_published_file_rejected(board):
    folder = board[0]
    (folder.published_dir / "mine.json").write_text(json.dumps({"rows": []}))
    assert_rejected(folder, "published/mine.json", "not a known published table")


def test_oversized_file_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["config"]["padding"] = "x" * (5 * 1024 * 1024)
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "over the 5,242,880-byte limit")


def test_malformed_json_rejected(board):
    folder, _, _, _, path = board
    path.write_text(path.read_text()[:-20])
    lines = assert_rejected(folder, path.relative_to(folder.root), "malformed JSON")
    assert len(lines) == 1 and "line" in lines[0]


def test_nan_and_duplicate_keys_rejected(board):
    folder, _, _, _, path = board
    text = path.read_text()
    path.write_text(text.replace('"gpu_hours": 0.5', '"gpu_hours": NaN', 1))
    assert_rejected(folder, path.relative_to(folder.root), "NaN is not valid JSON")
    path.write_text(text.replace('"gpu_hours": 0.5', '"gpu_hours": 0.5, "gpu_hours": 0.1', 1))
    assert_rejected(folder, path.relative_to(folder.root), "duplicate key 'gpu_hours'")


def test_patient_identifiers_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["config"]["data"] = {"PatientName": "DOE^JOHN", "study": "1.2.840.113619.2.55.3.604688119"}
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "'config/data/PatientName' looks like a patient identifier",
            "looks like a DICOM UID")


def test_schema_violation_and_misplaced_file_rejected(board):
    folder, _, _, entry, path = board
    e = copy.deepcopy(entry)
    e["per_volume"][0]["dice"] = 0.99  # ratios are never stored, only counts
    _rewrite(path, e)
    assert_rejected(folder, path.relative_to(folder.root), "schema: at per_volume/0")
    _rewrite(path, entry)
    moved = folder.root / "entries" / "phantom" / "elsewhere.json"
    path.rename(moved)
    assert_rejected(folder, moved.relative_to(folder.root), f"belongs at {relpath(entry)}")


def test_edited_schema_copy_rejected(board):
    folder = board[0]
    schema = json.loads(folder.schema.read_text())
    schema["additionalProperties"] = True
    folder.schema.write_text(json.dumps(schema))
    assert_rejected(folder, "schema/entry.schema.json", "differs from the schema ichbench validates with")


def test_validate_single_path_and_unrecorded_dataset(tmp_path, home):
    folder = copy_folder(tmp_path)
    flags = {f"V{i:03d}": i % 2 == 0 for i in range(6)}
    path = write_entry(folder, make_entry(flags))
    out = cli("validate", path, "--root", folder.root)
    assert out.exit_code == 1
    assert "dataset 'phantom' has no record in canonical.json" in out.output
    # what the real folder cannot check yet is said plainly
    assert "segcq500: not yet recorded from a real ingest, so these checks are left out: volume ids" in out.output
    assert ("hssayeni: not yet recorded from a real ingest, so these checks are left out: per-volume ICH flags"
            in out.output)


def test_hssayeni_count_checked_without_record(tmp_path):
    # Hssayeni's ids are public: coverage is checked before anyone records the ICH flags
    folder = copy_folder(tmp_path)
    ids = canon.load(folder)["datasets"]["hssayeni"]["volume_ids"]
    flags = {v: i < 36 for i, v in enumerate(ids)}
    ok = make_entry(flags, k=10, dataset="hssayeni", run_id="b" * 32)
    write_entry(folder, ok)
    report = validate(folder)
    assert report.ok, report.lines()
    short = {v: f for v, f in list(flags.items())[1:]}
    bad = make_entry(short, k=10, dataset="hssayeni", run_id="c" * 32)
    write_entry(folder, bad)
    report = validate(folder)
    assert [r.reason for r in report.rejections] == ["missing canonical volumes: 049"]
    fewer_ich = make_entry({v: i < 30 for i, v in enumerate(ids)}, k=10, dataset="hssayeni", run_id="d" * 32)
    write_entry(folder, fewer_ich)
    assert "30 volumes with ICH (has_ich); hssayeni has 36" in [r.reason for r in validate(folder).rejections]


def test_record_refuses_partial_store(tmp_path, home):
    folder = copy_folder(tmp_path)
    phantom_store(home, n=6)
    assert cli("canonical", "record", "--dataset", "phantom", "--root", folder.root).exit_code == 0
    phantom_store(home, n=4, force=True)  # re-ingest with volumes missing
    out = cli("canonical", "record", "--dataset", "phantom", "--root", folder.root)
    assert out.exit_code == 2 and "missing V004, V005" in out.output
    assert canon.load(folder)["datasets"]["phantom"]["n_volumes"] == 6
    out = cli("canonical", "record", "--dataset", "phantom", "--root", folder.root, "--force")
    assert out.exit_code == 0, out.output
    assert canon.load(folder)["datasets"]["phantom"]["n_volumes"] == 4


def test_record_without_store_is_one_line(tmp_path, home):
    folder = copy_folder(tmp_path)
    out = cli("canonical", "record", "--dataset", "segcq500", "--root", folder.root)
    assert out.exit_code == 2
    assert "no slice store here" in out.output and "Traceback" not in out.output


def test_segcq500_split_checked_before_ids_are_known(tmp_path):
    # every Seg-CQ500 volume has ICH, so the canonical split follows from an entry's own 51 ids
    folder = copy_folder(tmp_path)
    ids = [f"CQ500-CT-{i}" for i in range(51)]
    good = make_entry({v: True for v in ids}, k=5, dataset="segcq500", run_id="e" * 32)
    write_entry(folder, good)
    assert validate(folder).ok
    # a self-consistent but non-canonical split (another seed): folds and hash agree with each other
    from ichbench.splits import make_split
    other = make_split("segcq500", {v: True for v in ids}, 5, seed=1)
    bad = make_entry({v: True for v in ids}, k=5, dataset="segcq500", run_id="f" * 32)
    fold_of = {v: f["fold"] for f in other["folds"] for v in f["test"]}
    for r in bad["per_volume"]:
        r["fold"] = fold_of[r["volume_id"]]
    from ichbench.splits import split_hash
    bad["split"]["hash"] = split_hash([f["test"] for f in other["folds"]], 5)  # hashed as if canonical
    write_entry(folder, bad)
    reasons = [r.reason for r in validate(folder).rejections]
    assert any(x.startswith("split hash") and "is not the canonical segcq500 split for k = 5" in x for x in reasons)
    assert any("different fold than the canonical split" in x for x in reasons)
    assert not any("hash of the folds" in x for x in reasons)


def test_split_hash_must_match_own_folds_without_canonical_flags(tmp_path):
    folder = copy_folder(tmp_path)
    ids = canon.load(folder)["datasets"]["hssayeni"]["volume_ids"]
    e = make_entry({v: i < 36 for i, v in enumerate(ids)}, k=10, dataset="hssayeni", run_id="9" * 32)
    e["per_volume"][0]["fold"] = (e["per_volume"][0]["fold"] + 1) % 10
    write_entry(folder, e)
    reasons = [r.reason for r in validate(folder).rejections]
    assert len(reasons) == 1 and "is not the hash of the folds its volumes were scored in" in reasons[0]


def test_the_repositorys_leaderboard_folder_validates():
    # CI runs validation over the committed folder: published rows, canonical records, entries
    from tests.test_leaderboard_support import REPO_LEADERBOARD
    out = cli("validate", "--root", REPO_LEADERBOARD)
    assert out.exit_code == 0, out.output
    assert "0 rejected" in out.output
