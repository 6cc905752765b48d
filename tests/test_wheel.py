"""An installed wheel is the package as users get it: the paper's Table 3 must be inside it and
read through the pinned-sha256 reader, not from a leaderboard folder beside a source tree, and the
leaderboard page's templates must be inside it too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # builds and installs a wheel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The wheel of this checkout, installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels, site = tmp / "wheels", tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ichbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def run_installed(site: Path, code: str, cwd: Path):
    """`code` in a fresh interpreter, from an empty folder, with only the installed wheel ahead of
    the editable checkout; returns what it printed as JSON."""
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_wheel_prints_the_papers_rows(site, tmp_path):
    code = ("import ichbench, json; from ichbench.orchestrate.report import published_rows; "
            "print(json.dumps([ichbench.__file__, published_rows('multilabel_dl')]))")
    where, rows = run_installed(site, code, tmp_path)
    assert Path(where).is_relative_to(site)
    assert sorted(rows) == ["hssayeni", "segcq500"]
    assert rows["hssayeni"]["all"]["dice"] == {"mean": 63.85, "std": 39.96}   # Table 3, as printed


def test_a_wheel_renders_the_leaderboard_page(site, tmp_path):
    code = ("import json; from ichbench.leaderboard import page; "
            "from ichbench.leaderboard.model import build; "
            "from ichbench.leaderboard.published import packaged_rows; "
            "print(json.dumps([page.__file__, page.render_page(build(packaged_rows(), {}, {}, {}))]))")
    where, html = run_installed(site, code, tmp_path)
    assert Path(where).is_relative_to(site)
    # page.html with its inline includes: the CSS, the sorting JS, a section per dataset
    assert html.startswith("<!DOCTYPE html>") and html.count("<script>") == 1
    assert "table.sortable th[data-sort]{cursor:pointer" in html and "function sortBy(table, i, th)" in html
    assert 'id="results-hssayeni"' in html and 'id="p-segcq500-all-dice"' in html
    assert "<b>Confidence intervals</b>" in html
    # the paper's rows in each dataset's results table and again in its surface table (as "–")
    assert html.count('<tr class="published">') == 40 and 'id="surface-segcq500"' in html


def test_the_packaged_table_is_the_leaderboard_folders_byte_for_byte():
    from ichbench.leaderboard.published import PACKAGED, PUBLISHED_SHA256, packaged_rows
    from ichbench.leaderboard.jsonio import sha256_file
    for name, pinned in PUBLISHED_SHA256.items():
        assert sha256_file(PACKAGED / name) == pinned == sha256_file(REPO / "leaderboard" / "published" / name)
    assert len(packaged_rows()) == 20


def test_an_edited_packaged_table_is_an_error_not_silence(tmp_path, monkeypatch):
    from ichbench.errors import InputError
    from ichbench.leaderboard import published
    from ichbench.orchestrate.report import published_rows
    copy = tmp_path / "spahr2023.json"
    copy.write_text((published.PACKAGED / "spahr2023.json").read_text().replace("63.85", "99.99"))
    monkeypatch.setattr(published, "PACKAGED", tmp_path)
    with pytest.raises(InputError, match="published rows were edited"):
        published_rows("multilabel_dl")
