"""An installed wheel is the package as users get it: the paper's Table 3 must be inside it and
read through the pinned-sha256 reader, not from a leaderboard folder beside a source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_prints_the_papers_rows(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ichbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import ichbench, json; from ichbench.orchestrate.report import published_rows; "
            "print(json.dumps([ichbench.__file__, published_rows('multilabel_dl')]))")
    # run from an empty folder with only the installed wheel ahead of the editable checkout
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    import json
    where, rows = json.loads(out.stdout)
    assert Path(where).is_relative_to(site)
    assert sorted(rows) == ["hssayeni", "segcq500"]
    assert rows["hssayeni"]["all"]["dice"] == {"mean": 63.85, "std": 39.96}   # Table 3, as printed


def test_the_packaged_table_is_the_leaderboard_folders_byte_for_byte():
    from ichbench.leaderboard.published import PACKAGED, PUBLISHED_SHA256, packaged_rows
    from ichbench.leaderboard.jsonio import sha256_file
    for name, pinned in PUBLISHED_SHA256.items():
        assert sha256_file(PACKAGED / name) == pinned == sha256_file(REPO / "leaderboard" / "published" / name)
    assert len(packaged_rows()) == 20


def test_an_edited_packaged_table_is_an_error_not_silence(tmp_path, monkeypatch):
    import pytest

    from ichbench.errors import InputError
    from ichbench.leaderboard import published
    from ichbench.orchestrate.report import published_rows
    copy = tmp_path / "spahr2023.json"
    copy.write_text((published.PACKAGED / "spahr2023.json").read_text().replace("63.85", "99.99"))
    monkeypatch.setattr(published, "PACKAGED", tmp_path)
    with pytest.raises(InputError, match="published rows were edited"):
        published_rows("multilabel_dl")
