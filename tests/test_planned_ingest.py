"""Decoding workers write the image shards themselves (issue 10 §1, `ichbench.ingest.planned`):
a file that fails to decode leaves exactly the store of the same files without it, whatever the
number of workers and wherever the failure falls, and no pixel passes through the driver."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ichbench.datasets.base import IngestOptions
from ichbench.datasets.rsna import RsnaDataset
from ichbench.errors import InputError
from ichbench.ingest import ingest
from ichbench.store import open_store
from ichbench.testing.dicom import write_slice
from tests.test_rsna import label_rows, synthetic_series, write_csv

SERIES = ("1.2.3.1", "1.2.3.2", "1.2.3.3")   # stored in this order: 80, 70 and 60 slices (4 shards)
# a truncated file per place: the store's first row, inside shard 1, inside the last shard
BAD = (("ID_bad_first", SERIES[0], -2.5), ("ID_bad_mid", SERIES[1], 52.5), ("ID_bad_last", SERIES[2], 252.5))


def _source(root, with_bad: bool):
    img = root / "stage_2_train"
    rows = []
    for uid, n, prefix in zip(SERIES, (80, 70, 60), ("ID_a", "ID_b", "ID_c")):
        rows += synthetic_series(img, n, uid=uid, prefix=prefix, ich=("sdh",))
    if with_bad:
        for name, uid, z in BAD:
            p = write_slice(img / f"{name}.dcm", np.full((32, 32), 1024, np.uint16), series_uid=uid,
                            position=(0.0, 0.0, z), thickness=None, spacing=(0.8, 0.8))
            p.write_bytes(p.read_bytes()[:-1000])   # header intact, pixel data cut short
            rows += label_rows(name)
    write_csv(root, rows)
    return root


def _shard_files(store_path):
    folder = store_path / "images" / "c"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_decodes_leave_the_store_of_the_files_without_them(tmp_path, workers):
    opts = dict(size=32, selection="all", holdout=0)
    [clean] = ingest(RsnaDataset(), tmp_path / "h-clean", _source(tmp_path / "clean", False),
                     options=IngestOptions(workers=1, **opts))
    [bad] = ingest(RsnaDataset(), tmp_path / "h-bad", _source(tmp_path / "bad", True),
                   options=IngestOptions(workers=workers, **opts))
    assert sorted(os.path.basename(s["file"]) for s in bad.report.skipped) == sorted(f"{n}.dcm" for n, _, _ in BAD)
    assert all("pixel data cannot be decoded" in s["problem"] for s in bad.report.skipped)
    a, b = open_store(clean.path), open_store(bad.path)
    assert b.n_slices == a.n_slices == 210 and b.volumes == a.volumes
    assert b.fingerprint == a.fingerprint and b.attrs["shard_digests"] == a.attrs["shard_digests"]
    # shard files byte for byte: the rewritten last shard keeps no planned row past the new end
    assert _shard_files(b.path) == _shard_files(a.path)
    assert list(_shard_files(b.path)) == ["0/0/0", "1/0/0", "2/0/0", "3/0/0"]
    assert b.verify() == []
    if workers == 2:   # every shard (images: decoded there) written by the workers
        assert os.getpid() not in bad.shard_writers and len(bad.shard_writers) == 2


def test_a_plan_whose_every_file_fails_is_refused_and_keeps_the_previous_store(tmp_path):
    src = _source(tmp_path / "src", True)
    home = tmp_path / "home"
    [res] = ingest(RsnaDataset(), home, src, options=IngestOptions(size=32, selection="all", holdout=0, workers=2))
    before = res.fingerprint
    shutil.rmtree(src / "stage_2_train")
    (src / "stage_2_train").mkdir()
    rows = []
    for name, uid, z in BAD:
        p = write_slice(src / "stage_2_train" / f"{name}.dcm", np.full((32, 32), 1024, np.uint16),
                        series_uid=uid, position=(0.0, 0.0, z), thickness=None, spacing=(0.8, 0.8))
        p.write_bytes(p.read_bytes()[:-1000])
        rows += label_rows(name)
    write_csv(src, rows)
    with pytest.raises(InputError, match="no usable pretraining slices.*3 inputs skipped"):
        ingest(RsnaDataset(), home, src, options=IngestOptions(size=32, selection="all", holdout=0, workers=2))
    assert open_store(res.path).fingerprint == before and open_store(res.path).verify() == []
