"""`ichbench score` (issue 22 §3) on real NIfTI files written by nibabel and by `ichbench predict`'s
own writer: matching by name, the JSON shape of docs/score.md, one line per refused case, exit codes.

Expected metric values come from `ichbench.evaluate.surface.case_metrics` on the same arrays (tested
against hand values and DeepMind's implementation in tests/test_surface_metrics.py) or by hand.
"""

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ichbench.cli.main import main
from ichbench.evaluate.surface import case_metrics

SPACING = (0.42, 0.42, 5.0)              # file axes (x, y, z), as the header's zooms give them
AFFINE = np.diag([-0.42, -0.42, 5.0, 1.0])
SHAPE = (24, 20, 6)


def write(path: Path, data, affine=AFFINE, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), affine), str(path))
    return path


def bleed(dx=0) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[6 + dx:14 + dx, 5:12, 2:4] = True
    return m


def call(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`ichbench score ARGS` in-process, as the `ichbench` script runs it."""
    monkeypatch.setattr(sys, "argv", ["ichbench", "score", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.fixture
def folders(tmp_path):
    """Three good cases: a shifted bleed, a healthy volume predicted healthy, a missed bleed."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    write(truth / "a.nii.gz", bleed())
    write(pred / "a.nii.gz", bleed(dx=1))
    write(truth / "b.nii.gz", np.zeros(SHAPE))
    write(pred / "b.nii", np.zeros(SHAPE), dtype=np.float32)     # .nii, float 0/1 masks are fine
    write(truth / "c.nii.gz", bleed())
    write(pred / "c.nii.gz", np.zeros(SHAPE))
    (pred / "plans.json").write_text("{}")                         # nnU-Net leaves these beside its masks
    return pred, truth


def test_json_shape_and_values(folders, monkeypatch, capsys):
    pred, truth = folders
    code, out, err = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, "--json", "--nsd-mm", "0.42")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert set(doc) == {"cases", "refused", "summary"} and doc["refused"] == []
    cases = {c["case"]: c for c in doc["cases"]}
    assert list(cases) == ["a", "b", "c"]
    # spacing from the truth's header; values as case_metrics gives them on the same arrays
    want = case_metrics(bleed(dx=1), bleed(), SPACING, nsd_mm=0.42)
    for key in ("dice", "precision", "recall", "hd_mm", "hd95_mm", "nsd", "abs_rvd", "pred_ml", "true_ml"):
        assert cases["a"][key] == pytest.approx(want[key], rel=1e-6), key
    assert cases["a"]["hd_mm"] == pytest.approx(0.42, rel=1e-6)   # hand: shifted one 0.42 mm voxel
    assert cases["a"]["spacing_mm"] == pytest.approx(list(SPACING))
    # the empty-case rule, infinities written as "inf"
    assert (cases["b"]["dice"], cases["b"]["hd_mm"], cases["b"]["nsd"], cases["b"]["empty"]) == (1.0, 0.0, 1.0, "both")
    assert (cases["c"]["hd_mm"], cases["c"]["hd95_mm"], cases["c"]["nsd"]) == ("inf", "inf", 0.0)
    s = doc["summary"]
    assert (s["n_scored"], s["n_refused"], s["nsd_mm"], s["hd_cap_mm"]) == (3, 0, 0.42, None)
    # mean over the finite values, and the count of infinite ones (hand: (0.42 + 0) / 2, 1)
    assert s["all"]["hd_mm"]["mean"] == pytest.approx(0.21, rel=1e-6) and s["all"]["hd_mm"]["n_infinite"] == 1
    assert s["ich"]["dice"]["n"] == 2 and s["all"]["dice"]["n"] == 3
    assert set(s["volume_agreement"]) == {"n", "ccc", "icc_2_1", "bias_ml", "sd_diff_ml", "loa_low_ml",
                                          "loa_high_ml"}
    # bias by hand: predictions 112, 0, 0 voxels against 112, 0, 112, a voxel 0.882 uL
    assert s["volume_agreement"]["bias_ml"] == pytest.approx(-112 * 0.42 * 0.42 * 5 / 1000 / 3, rel=1e-6)


def test_hd_cap_table_and_out_file(folders, monkeypatch, capsys, tmp_path):
    pred, truth = folders
    out_file = tmp_path / "scores.json"
    code, out, err = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, "--hd-cap-mm", "100",
                          "--out", out_file)
    assert (code, err) == (0, "")
    for word in ("Dice", "HD95", "inf", "a", "b", "c", "Lin's CCC", "capped at 100 mm"):
        assert word in out
    doc = json.loads(out_file.read_text())
    # hand: (0.42 + 0 + 100) / 3, the infinite HD counted as the cap
    assert doc["summary"]["all"]["hd_mm"]["mean_capped"] == pytest.approx(100.42 / 3, rel=1e-6)


def test_workers_give_the_same_answer(folders, monkeypatch, capsys):
    pred, truth = folders
    one = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, "--json")[1]
    two = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, "--json", "--workers", "2")[1]
    assert json.loads(one) == json.loads(two)


def _truncated(path: Path) -> None:
    write(path, np.random.default_rng(0).random((64, 64, 16)) < 0.5)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))


# (case, how its files are made, what its one line says)
BAD = [
    ("no_truth", lambda p, t: write(p / "no_truth.nii.gz", bleed()), "no truth no_truth.nii.gz in"),
    ("no_pred", lambda p, t: write(t / "no_pred.nii.gz", bleed()), "no prediction for this case"),
    ("shape", lambda p, t: (write(t / "shape.nii.gz", bleed()), write(p / "shape.nii.gz", bleed()[:, :, :5])),
     "shape 24 x 20 x 5 differs from the truth's 24 x 20 x 6"),
    ("affine", lambda p, t: (write(t / "affine.nii.gz", bleed()),
                             write(p / "affine.nii.gz", bleed(), affine=np.diag([0.5, 0.42, 5.0, 1.0]))),
     "affine differs from the truth's"),
    ("labels", lambda p, t: (write(t / "labels.nii.gz", bleed()), write(p / "labels.nii.gz", bleed() * 3)),
     "not a binary mask: 112 voxels are neither 0 nor 1 (3)"),
    ("prob", lambda p, t: (write(t / "prob.nii.gz", bleed()),
                           write(p / "prob.nii.gz", bleed() * 0.7, dtype=np.float32)), "not a binary mask"),
    ("truncated", lambda p, t: (write(t / "truncated.nii.gz", np.zeros((64, 64, 16))),
                                _truncated(p / "truncated.nii.gz")),
     "truncated or a false header"),
    ("garbage", lambda p, t: (write(t / "garbage.nii.gz", bleed()), (p / "garbage.nii.gz").write_bytes(b"\0" * 40)),
     "not a readable NIfTI file"),
    ("twice", lambda p, t: (write(t / "twice.nii.gz", bleed()), write(p / "twice.nii.gz", bleed()),
                            write(p / "twice.nii", bleed())), "2 files name this case"),
]


def test_bad_cases_get_one_line_each_and_the_rest_is_scored(folders, monkeypatch, capsys):
    pred, truth = folders
    for _, make, _ in BAD:
        make(pred, truth)
    code, out, err = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, "--json")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == len(BAD), err
    assert "Traceback" not in err
    for case, _, says in BAD:
        line = next((x for x in lines if x.startswith(f"ichbench: refused {case}: ")), None)
        assert line is not None and says in line, (case, err)
    doc = json.loads(out)
    assert [c["case"] for c in doc["cases"]] == ["a", "b", "c"]
    assert sorted(r["case"] for r in doc["refused"]) == sorted(c for c, _, _ in BAD)
    assert doc["summary"]["n_refused"] == len(BAD)


def test_missing_as_empty_scores_a_missing_prediction(tmp_path, monkeypatch, capsys):
    write(tmp_path / "truth" / "x.nii.gz", bleed())
    (tmp_path / "pred").mkdir()
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
                          "--json", "--missing-as-empty")
    assert (code, err) == (0, "")
    case = json.loads(out)["cases"][0]
    assert (case["case"], case["pred"], case["hd_mm"], case["empty"]) == ("x", None, "inf", "pred")


@pytest.mark.parametrize("args,says", [
    (["--nsd-mm", "-1"], "--nsd-mm -1.0: the tolerance must be"),
    (["--nsd-mm", "nan"], "--nsd-mm nan"),
    (["--workers", "0"], "--workers 0: need at least 1"),
    (["--hd-cap-mm", "0"], "--hd-cap-mm 0.0: the cap must be"),
    (["--out", "{tmp}/no/such/dir/x.json"], "does not exist"),
    (["--out", "{tmp}"], "is a folder"),
])
def test_bad_options_are_one_line(folders, tmp_path, monkeypatch, capsys, args, says):
    pred, truth = folders
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = call(monkeypatch, capsys, "--pred", pred, "--truth", truth, *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("ichbench: error: ") and says in err, err


def test_missing_or_empty_folders_are_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    code, _, err = call(monkeypatch, capsys, "--pred", tmp_path / "nope", "--truth", tmp_path / "e2")
    assert code == 2 and f"--pred {tmp_path / 'nope'}: no such folder" in err and err.count("\n") == 1
    code, _, err = call(monkeypatch, capsys, "--pred", tmp_path / "e1", "--truth", tmp_path / "e2")
    assert code == 2 and "no NIfTI masks" in err and err.count("\n") == 1


def test_scores_folders_written_by_ichbench_predict(tmp_path, monkeypatch, capsys):
    """`ichbench predict --output PRED/CASE` writes PRED/CASE/mask.nii.gz with the scan's header and
    voxel order (predict/outputs.write_nifti, called here on a real scan read as predict reads it);
    `score --pred PRED` finds it by the folder's name. The scan is RAS, two axes flipped
    from the store's orientation, so the mask is back in the truth's file order only if the writer
    undid that: Dice 1 against the truth itself."""
    from ichbench.datasets.nifti_io import to_store
    from ichbench.predict.outputs import write_nifti
    from ichbench.predict.scan import read_scan
    ras = np.diag([0.42, 0.42, 5.0, 1.0])     # RAS: x and y run opposite to the store's L, P
    ct = write(tmp_path / "scans" / "head.nii.gz", np.full(SHAPE, 40.0), affine=ras, dtype=np.int16)
    truth = write(tmp_path / "truth" / "head.nii.gz", bleed(), affine=ras)
    scan = read_scan(ct)
    store_mask = to_store(bleed(), scan.nifti.transform)
    (tmp_path / "pred" / "head").mkdir(parents=True)
    write_nifti(tmp_path / "pred" / "head" / "mask.nii.gz", scan, store_mask)
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", truth.parent, "--json")
    assert (code, err) == (0, "")
    case = json.loads(out)["cases"][0]
    assert case["case"] == "head" and case["pred"].endswith("head/mask.nii.gz")
    assert (case["dice"], case["hd_mm"], case["nsd"]) == (1.0, 0.0, 1.0)


def test_real_process_exit_codes_and_no_traceback(folders):
    """The installed command, as a user runs it: exit 1 with one line for a refused case."""
    pred, truth = folders
    write(pred / "stray.nii.gz", bleed())
    proc = subprocess.run([sys.executable, "-m", "ichbench.cli.main", "score", "--pred", str(pred),
                           "--truth", str(truth), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().startswith("ichbench: refused stray: ") and proc.stderr.count("\n") == 1
    assert len(json.loads(proc.stdout)["cases"]) == 3
    assert not math.isnan(json.loads(proc.stdout)["summary"]["all"]["dice"]["mean"])


@pytest.mark.slow
def test_ctrl_c_while_workers_score(tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) while --workers 2 are
    scoring: exit 130 with one line, no --out file, no worker left behind. The first case is refused
    by a worker (a label image), so its line on stderr says scoring has begun."""
    from tests.procs import alive_in_session, sigint_at_default
    rng = np.random.default_rng(1)
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    write(truth / "a00.nii.gz", bleed())
    write(pred / "a00.nii.gz", bleed() * 2)
    for i in range(1, 25):   # scattered voxels: seconds of scoring in all
        write(truth / f"c{i:02d}.nii.gz", rng.random((128, 128, 30)) < 0.02)
        write(pred / f"c{i:02d}.nii.gz", rng.random((128, 128, 30)) < 0.02)
    err_file, out_file = tmp_path / "err.txt", tmp_path / "scores.json"
    with open(err_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ichbench.cli.main", "score", "--pred", str(pred),
                                 "--truth", str(truth), "--workers", "2", "--out", str(out_file)],
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=sigint_at_default,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while "refused a00" not in err_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, err_file.read_text()
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    lines = err_file.read_text().splitlines()
    assert lines[-1] == "ichbench: interrupted; nothing written" and "Traceback" not in err_file.read_text()
    assert not out_file.exists()
    deadline = time.monotonic() + 10
    while alive_in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive_in_session(proc.pid) == []


def test_scores_nnunet_output_folders(tmp_path, monkeypatch, capsys):
    """nnU-Net's layout, written by its own code: labels as the ichbench-nnunet plugin exports them
    (labelsTr/CASE.nii.gz, SimpleITK) and predictions as `nnUNetv2_predict` writes them
    (SimpleITKIO.write_seg with the image's properties, CASE.nii.gz beside plans.json)."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    export = pytest.importorskip("ichbench_nnunet.export")
    spacing_zyx = (5.0, 0.42, 0.42)
    truth = bleed().transpose(2, 1, 0)                               # (S, H, W) as the plugin writes it
    export.write_volume(export.image_path(tmp_path / "imagesTs", "ich_001"), np.full(truth.shape, 40, np.int16),
                        spacing_zyx)
    export.write_volume(tmp_path / "labelsTs" / "ich_001.nii.gz", truth.astype(np.uint8), spacing_zyx)
    io = SimpleITKIO()
    _, props = io.read_images([str(export.image_path(tmp_path / "imagesTs", "ich_001"))])
    (tmp_path / "preds").mkdir()
    io.write_seg(np.roll(truth, 1, axis=2).astype(np.uint8), str(tmp_path / "preds" / "ich_001.nii.gz"), props)
    (tmp_path / "preds" / "plans.json").write_text("{}")
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "preds", "--truth", tmp_path / "labelsTs", "--json")
    assert (code, err) == (0, "")
    case = json.loads(out)["cases"][0]
    assert case["case"] == "ich_001" and case["true_ml"] == pytest.approx(112 * 5 * 0.42 * 0.42 / 1000, rel=1e-5)
    assert case["hd_mm"] == pytest.approx(0.42, rel=1e-5)      # hand: shifted one 0.42 mm column


def test_labels_score_each_class_and_their_union(tmp_path, monkeypatch, capsys):
    """BHSD-style label images (uint8 ids, float ids with a slope as some writers store them): the
    case's top-level metrics are the union's, `classes` each class's; a foreign id is refused."""
    t, p = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    t[6:14, 5:12, 2:4] = 2                 # IPH, 112 voxels, predicted shifted by one voxel
    p[7:15, 5:12, 2:4] = 2
    t[18:20, 2:4, 1] = 5                   # SDH, 4 voxels, missed
    write(tmp_path / "truth" / "x.nii.gz", t)
    write(tmp_path / "pred" / "x.nii.gz", p, dtype=np.float32)
    bad = p.copy()
    bad[0, 0, 0] = 7
    write(tmp_path / "truth" / "y.nii.gz", t)
    write(tmp_path / "pred" / "y.nii.gz", bad)
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
                          "--labels", "EDH=1,IPH=2,IVH=3,SAH=4,SDH=5", "--json")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("ichbench: refused y: ") and "values other than 0 and the labels 1, 2, 3, 4, 5 (7)" in err
    doc = json.loads(out)
    (case,) = doc["cases"]
    union = case_metrics(p > 0, t > 0, SPACING)
    assert case["dice"] == pytest.approx(union["dice"]) and (case["tp"], case["fp"], case["fn"]) == (98, 14, 18)
    iph, sdh, edh = (case["classes"][k] for k in ("IPH", "SDH", "EDH"))
    assert (iph["tp"], iph["fp"], iph["fn"]) == (98, 14, 14) and iph["hd_mm"] == pytest.approx(0.42, rel=1e-6)
    assert (sdh["tp"], sdh["fn"], sdh["hd_mm"], sdh["empty"]) == (0, 4, "inf", "pred")
    assert (edh["dice"], edh["hd_mm"], edh["empty"]) == (1.0, 0.0, "both")
    s = doc["summary"]
    assert s["classes"]["SDH"]["present"]["dice"]["n"] == 1 and s["classes"]["EDH"]["present"]["dice"]["n"] == 0
    assert s["classes"]["SDH"]["present"]["hd_mm"]["n_infinite"] == 1
    # macro over the classes present somewhere: IPH (2*98+1)/(2*98+28+1) and SDH 1/5
    assert s["macro"]["present"]["dice"]["mean"] == pytest.approx((197 / 225 + 1 / 5) / 2)
    assert s["macro"]["present"]["dice"]["n_classes"] == 2
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
                          "--labels", "EDH=1,IPH=2,IVH=3,SAH=4,SDH=5")
    assert "per class" in out and "macro" in out and "SDH" in out
    # without --labels a label image is refused, and the line says what to do
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    assert code == 1 and "score a label image with --labels" in err
    code, out, err = call(monkeypatch, capsys, "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
                          "--labels", "EDH=0")
    assert code == 2 and err.startswith("ichbench: error: --labels ") and err.count("\n") == 1
