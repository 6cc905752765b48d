import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from ichbench.datasets.base import IngestOptions
from ichbench.errors import InputError
from ichbench.store import open_store, store_path
from ichbench.ingest import ingest
from ichbench.store.writer import StoreWriter
from tests.synthetic import SyntheticDataset

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_writes_expected_arrays_and_table(home):
    [res] = ingest(SyntheticDataset(n=3), home, source=home, options=IngestOptions(size=16))
    st = open_store(res.path)
    data = st.load()
    assert data["images"].shape == (15, 16, 16) and data["images"].dtype == np.int16
    assert data["masks"].dtype == np.uint8 and data["labels"].shape == (15, 7)
    # volume 0 and 2 have ICH on slices 1-2 (of 5); labels follow the stored mask
    assert data["labels"][:, 1].tolist() == [0, 1, 1, 0, 0] + [0] * 5 + [0, 1, 1, 0, 0]
    assert (data["labels"][:, 0] == 1 - data["labels"][:, 1]).all()
    assert data["volume"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    v0 = st.volumes[0]
    assert (v0["id"], v0["start"], v0["stop"], v0["n_slices"]) == ("V000", 0, 5, 5)
    # 32 px at 0.5 mm resampled to 16 px -> 1.0 mm in-plane; z unchanged
    assert v0["spacing"] == [5.0, 1.0, 1.0]
    assert v0["subtypes"] == ["iph"] and v0["has_ich"] is True
    assert st.volumes[1]["has_ich"] is False
    # the lesion (70 HU) survives resampling: a 6x6 block at 32 px -> 3x3 at 16 px
    assert data["images"][1, 6, 6] == 70
    assert st.verify() == []


def test_ich_flag_comes_from_the_native_mask(home):
    """A bleed too small to survive resampling (one voxel of 32x32 stored at 8x8) keeps its volume
    an ICH volume: the flag is read from the native mask, the slice labels from the stored one."""
    def tiny(vol):
        vol.mask[:] = False
        vol.mask[2, 20, 20] = True

    [res] = ingest(SyntheticDataset(n=3, bad={0: tiny}), home, source=home, options=IngestOptions(size=8))
    st = open_store(res.path)
    data = st.load()
    assert not data["masks"][:5].any() and not data["labels"][:5, 1].any()   # lost on the 8x8 grid
    assert [v["has_ich"] for v in st.volumes] == [True, False, True]
    assert st.info()["n_ich_volumes"] == 2


def test_store_readable_by_plain_zarr_in_another_process(home):
    [res] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16))
    code = ("import zarr,sys; g=zarr.open_group(sys.argv[1], mode='r'); "
            "print(g['images'].shape, g.attrs['fingerprint'][:12], g['images'].shards)")
    out = subprocess.run([sys.executable, "-c", code, str(res.path)], capture_output=True, text=True, check=True)
    assert out.stdout.split(")")[0] == "(10, 16, 16"
    assert res.fingerprint[:12] in out.stdout


def test_fingerprint_is_content_and_settings(home):
    [a] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16))
    [b] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16), force=True)
    assert a.fingerprint == b.fingerprint
    [c] = ingest(SyntheticDataset(n=2, offset=5), home, source=home, options=IngestOptions(size=16), force=True)
    assert c.fingerprint != a.fingerprint
    [d] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=24), force=True)
    assert d.fingerprint != a.fingerprint


def test_unchanged_sources_are_a_noop_unless_forced(home):
    [a] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16))
    mtime = (a.path / "zarr.json").stat().st_mtime_ns
    [b] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16))
    assert b.skipped_as_unchanged and (a.path / "zarr.json").stat().st_mtime_ns == mtime
    [c] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16), force=True)
    assert not c.skipped_as_unchanged


def test_verify_detects_tampering(home):
    [res] = ingest(SyntheticDataset(n=2), home, source=home, options=IngestOptions(size=16))
    g = zarr.open_group(str(res.path), mode="r+")
    g["images"][3, 0, 0] = 1234
    problems = open_store(res.path).verify()
    assert problems == ["array images, shard 0 (slices 0-9) differs from the digest recorded when it was written"]


def test_bad_volumes_are_skipped_and_reported(home):
    def nan(v):
        v.hu[0, 0, 0] = np.nan

    def shape(v):
        v.mask = v.mask[:, :-1]

    def spacing(v):
        v.spacing = (0.0, 0.5, 0.5)

    ds = SyntheticDataset(n=5, bad={1: nan, 2: shape, 3: spacing})
    [res] = ingest(ds, home, source=home, options=IngestOptions(size=16))
    problems = {s["file"]: s["problem"] for s in res.report.skipped}
    assert problems == {
        "/fake/V001": "CT contains NaN or infinite voxels",
        "/fake/V002": "mask shape (5, 31, 32) differs from the CT shape (5, 32, 32)",
        "/fake/V003": "invalid voxel spacing (0.0, 0.5, 0.5)",
    }
    assert [v["id"] for v in open_store(res.path).volumes] == ["V000", "V004"]
    saved = json.loads((res.path / "ingest_report.json").read_text())
    assert len(saved["skipped"]) == 3
    with pytest.raises(InputError, match="/fake/V001: CT contains NaN"):
        ingest(ds, home, source=home, options=IngestOptions(size=16, strict=True), force=True)
    # the failed strict ingest left the earlier store untouched
    assert [v["id"] for v in open_store(res.path).volumes] == ["V000", "V004"]


def test_writer_appends_slices_of_a_seen_volume(tmp_path):
    w = StoreWriter(tmp_path / "s.zarr", size=8, with_masks=False, shard_slices=4)
    img = np.zeros((1, 8, 8), np.int16)
    lab = np.zeros((1, 7), np.uint8)
    for vid in ["a", "a", "b", "a"]:
        w.add({"id": vid, "spacing": [1, 1, 1]}, img, lab, brain=np.zeros((1, 8, 8), np.uint8))
    w.close({"dataset": "t", "role": "pretraining"}, {"size": 8})
    st = open_store(tmp_path / "s.zarr")
    a, b = st.volumes
    assert (a["n_slices"], a["start"], a["stop"]) == (3, None, None)  # not contiguous
    assert (b["n_slices"], b["start"], b["stop"]) == (1, 2, 3)
    assert st.load(["volume"])["volume"].tolist() == [0, 0, 1, 0]
    assert st.verify() == []


KILL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from ichbench.datasets.base import IngestOptions
from ichbench.ingest import ingest
from tests.synthetic import SyntheticDataset
ingest(SyntheticDataset(n=int(sys.argv[2]), delay=float(sys.argv[3]), offset=int(sys.argv[4])),
       Path(sys.argv[1]), source=Path(sys.argv[1]), options=IngestOptions(size=16), force=True)
"""


@pytest.mark.slow
def test_kill_during_ingest_keeps_previous_store_and_rerun_completes(home, tmp_path):
    script = tmp_path / "ingest_slow.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    def run(n, delay, offset):
        return subprocess.Popen([sys.executable, str(script), str(home), str(n), str(delay), str(offset)])
    assert run(2, 0, 0).wait() == 0
    final = store_path(home, "synthetic", "segmentation")
    before = open_store(final).fingerprint

    proc = run(200, 0.05, 7)  # a different, slow ingest that we kill mid-way
    deadline = time.time() + 60
    while not list(final.parent.glob(".segmentation.zarr.tmp-*")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(final.parent.glob(".segmentation.zarr.tmp-*")), "the killed ingest should have left its temp dir"
    st = open_store(final)
    assert st.fingerprint == before and st.verify() == []

    assert run(3, 0, 7).wait() == 0
    after = open_store(final)
    assert after.fingerprint != before and len(after.volumes) == 3 and after.verify() == []
    assert not list(final.parent.glob(".segmentation.zarr.*")), "temp and old dirs are cleaned up"
