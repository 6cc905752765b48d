"""Rendering: README.md and index.html hold the expected rows and numbers, and the statistics
shown are the ones computed from the entries."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from ichbench.cli.leaderboard import app
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard import stats
from ichbench.leaderboard.canonical import record_from_store
from ichbench.leaderboard.model import build
from ichbench.leaderboard.published import load_published, paper_labels
from ichbench.leaderboard.render import InvalidFolder, render
from ichbench.leaderboard.reproductions import append, entry_sha256
from ichbench.leaderboard.validate import validate
from ichbench.orchestrate.reproduce import compare
from tests.test_leaderboard_support import copy_folder, flags_of, make_entry, phantom_store, write_entry

RUNS = {"multilabel_dl": "a" * 32, "unet_mixed": "b" * 32}


@pytest.fixture
def board(tmp_path, home):
    folder = copy_folder(tmp_path)
    res = phantom_store(home, n=8)
    record_from_store(folder, home, "phantom", [2])
    flags = flags_of(res)
    entries = [make_entry(flags, method=m, run_id=r, seed=i, k=2, fingerprint=res.fingerprint)
               for i, (m, r) in enumerate(RUNS.items())]
    entries.append(make_entry(flags, method="multilabel_dl", run_id="c" * 32, seed=7, k=2,
                              fingerprint=res.fingerprint, config={"data": {"labeled_fraction": 0.5}}))
    entries.append(make_entry(flags, method="unet_mixed_icm", run_id="d" * 32, seed=3, k=2,
                              fingerprint=res.fingerprint, config={"icm": {"source": "unet"}}))
    for e in entries:
        write_entry(folder, e)
    return folder, entries


def pct(x):
    return f"{100 * x:.2f}"


def test_readme_rows_and_numbers(board):
    folder, entries = board
    render(folder)
    md = folder.readme.read_text()
    # the paper's rows, as printed, bold where the paper has bold
    assert ("| Multi-label classification (DL) | published | **63.85** ± 39.96 | **69.33** ± 38.78 | 76.45 ± 33.23 | "
            "49.50 ± 31.95 | 60.92 ± 33.04 | 50.95 ± 32.37 | – |") in md
    assert "| U-Net 2D ICH-only | published | 51.74 ± 29.78 | 54.17 ± 29.25 | 59.04 ± 31.93 | – |" in md
    # re-scored rows: numbers recomputed from the counts (the fixture's summary came from them too)
    e = entries[0]
    d = e["summary"]["all"]["dice"]
    lo, hi = stats.bootstrap_ci([100 * (2 * r["tp"] + 1) / (2 * r["tp"] + r["fp"] + r["fn"] + 1)
                                 for r in e["per_volume"]])
    row = next(line for line in md.splitlines() if line.startswith("| Multi-label classification (DL) · run aaaaaaaa"))
    assert f"| re-scored, self-reported | {pct(d['mean'])} ± {pct(d['std'])} [{lo:.2f}, {hi:.2f}] |" in row
    assert row.endswith("| 0.50 |")
    assert md.count("| re-scored, self-reported |") == 4 and md.count("| published |") == 20
    assert "## Seg-CQ500" in md and "canonical.json lacks what only a real ingest" in md
    # each table ends with the "predicts nothing" reference, from canonical.json's counts: Hssayeni
    # 39 of 75 volumes healthy (52 %), Seg-CQ500 none, the fixture's phantom 4 of 8
    floors = [line for line in md.splitlines()
              if line.startswith("| *Predicts nothing (reference)* | reference, not ranked | ")]
    assert [f.split(" | ")[2] for f in floors] == ["52.00 ± 50.30", "0.00 ± 0.00", "50.00 ± 53.45"]
    # last in its table, below every ranked row
    assert all(md.split(f + "\n", 1)[1].startswith("\n") for f in floors)
    # the surface table of the phantom: the entries' HD95 over ICH volumes, infinite ones counted
    e = entries[0]
    ich = [r for r in e["per_volume"] if r["has_ich"]]
    finite = [r["hd95_mm"] for r in ich if r["hd95_mm"] != "inf"]
    n_inf = len(ich) - len(finite)
    mean = f"{sum(finite) / len(finite):.2f}"
    srow = next(line for line in md.splitlines()
                if line.startswith("| Multi-label classification (DL) · run aaaaaaaa") and "CCC" not in line
                and line.count("|") == 9)
    assert f" | {mean} ± " in srow and (f"(∞ × {n_inf})" in srow) == (n_inf > 0)


def test_page_tables_plots_and_no_external_resources(board):
    folder, _ = board
    render(folder)
    html = folder.index.read_text()
    for ds in ("hssayeni", "segcq500", "phantom"):
        assert f'id="results-{ds}"' in html
    # every row twice: the results table and the surface table
    assert html.count('<tr class="published">') == 40 and html.count('<tr class="entry">') == 8
    for ds in ("hssayeni", "segcq500", "phantom"):
        assert f'id="surface-{ds}"' in html and f'<tr class="reference" id="floor-{ds}">' in html
    assert html.count('<tr class="reference"') == 6   # the floor in each table's footer
    # one volume agreement figure per entry
    assert all(f'id="va-phantom-{i}"' in html for i in range(1, 5)) and 'id="va-phantom-5"' not in html
    # a +ICM entry says which cavity mask it used
    assert "ICM: unet" in html and html.count("ICM: ") == 1
    assert re.search(r'id="box-phantom"[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)
    assert 'id="le-phantom"' in html  # two labeled amounts exist: 2 (half of 4) and 4 volumes per fold
    assert 'id="box-hssayeni"' not in html  # published rows have no per-volume values to plot
    assert 'id="p-phantom-all-dice"' in html and 'id="p-hssayeni-ich-recall"' in html
    assert "paired is the right test" in html.lower()
    # a p-value below 0.001 is text, not the start of a tag
    assert '"Welch t-test (unpaired, unadjusted)">&lt;0.001</td>' in html and "><0.001<" not in html
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html


def test_matrix_is_holm_over_paired_wilcoxon(board):
    folder, entries = board
    report = validate(folder)
    data = canon.load(folder)
    views = build(load_published(folder), report.entries, {n: canon.expectation(data, n) for n in data["datasets"]},
                  paper_labels(folder))
    view = next(v for v in views if v.name == "phantom")
    mat = next(m for m in view.matrices if m.group == "all" and m.metric == "dice")
    rows = view.rows
    raw = {}
    for i in range(3):
        for j in range(i + 1, 3):
            raw[(i, j)] = stats.paired_wilcoxon(rows[i].values["dice"], rows[j].values["dice"])[0]
    adjusted = dict(zip(raw, stats.holm(list(raw.values()))))
    for (i, j), p in adjusted.items():
        assert mat.paired[i][j] == pytest.approx(p) and mat.paired[j][i] == pytest.approx(p)
        assert mat.welch[i][j] == pytest.approx(stats.welch(rows[i].values["dice"].values(),
                                                             rows[j].values["dice"].values()))
    # published rows: Welch from the printed mean/std/n, no paired test
    hs = next(v for v in views if v.name == "hssayeni")
    m = next(x for x in hs.matrices if x.group == "all" and x.metric == "dice")
    a, b = hs.rows[0].groups["all"]["dice"], hs.rows[1].groups["all"]["dice"]
    assert m.welch[0][1] == pytest.approx(stats.welch_from_stats(a["mean"], a["std"], 75, b["mean"], b["std"], 75))
    assert m.paired[0][1] is None


def test_render_is_deterministic_and_refuses_invalid(board):
    folder, entries = board
    render(folder)
    first = folder.index.read_bytes()
    render(folder)
    assert folder.index.read_bytes() == first
    bad = folder.root / "entries" / "phantom" / "unet_mixed--bbbbbbbb.json"
    bad.write_text(bad.read_text().replace('"fp": ', '"fp": 1', 1))
    with pytest.raises(InvalidFolder):
        render(folder)
    out = CliRunner().invoke(app, ["render", "--root", str(folder.root)])
    assert out.exit_code == 1 and "REJECT leaderboard/entries/phantom/unet_mixed--bbbbbbbb.json" in out.output
    out = CliRunner().invoke(app, ["render", "--root", str(folder.root), "--skip-invalid"])
    assert out.exit_code == 0, out.output
    assert folder.index.read_text().count('<tr class="entry">') == 6


def test_no_label_efficiency_view_with_one_amount(tmp_path, home):
    folder = copy_folder(tmp_path)
    res = phantom_store(home, n=6)
    record_from_store(folder, home, "phantom", [3])
    write_entry(folder, make_entry(flags_of(res), fingerprint=res.fingerprint))
    render(folder)
    html = folder.index.read_text()
    assert 'id="box-phantom"' in html and 'id="le-phantom"' not in html


def _protocol_line(html: str, dataset: str) -> str:
    section = html[html.index(f'<section id="{dataset}">'):]
    return re.search(r"re-scored entries\. ([^<]*)</p>", section).group(1)


def test_each_section_names_its_k(board):
    folder, _ = board
    render(folder)
    html = folder.index.read_text()
    assert "?-fold" not in html
    assert _protocol_line(html, "hssayeni").startswith("Paper protocol: 10-fold cross-validation;")
    assert _protocol_line(html, "segcq500").startswith("Paper protocol: 5-fold cross-validation;")
    # not a paper dataset: canonical.json records k = 2 (asked for) and 5 (ichbench's default); the
    # entries' k = 2 is named too
    phantom = _protocol_line(html, "phantom")
    assert phantom.startswith("Protocol: 5-fold cross-validation (from canonical.json;")
    assert phantom.endswith("Entries scored with k = 2 are shown too.")


def test_the_committed_phantom_record_gives_its_k(tmp_path):
    """The repository's canonical.json records the demo phantom's split for k = 5 only."""
    import json
    import shutil

    from ichbench.leaderboard.paths import Folder
    from tests.test_leaderboard_support import REPO_LEADERBOARD
    shutil.copytree(REPO_LEADERBOARD, tmp_path / "leaderboard")
    folder = Folder(tmp_path / "leaderboard")
    phantom = json.loads(folder.canonical.read_text())["datasets"]["phantom"]
    assert phantom["paper_k"] is None and list(phantom["split_hashes"]) == ["5"]
    render(folder)
    line = _protocol_line(folder.index.read_text(), "phantom")
    assert line.startswith("Protocol: 5-fold cross-validation (from canonical.json;") and "shown too" not in line
    # the committed entry is of schema version 2 (before surface metrics), read as it is: its HD95, HD
    # and NSD show "–", its |RVD| (from its mL) a number; the phantom's floor is 24 of 60 = 40 %
    entry = json.loads(next((folder.root / "entries" / "phantom").glob("*.json")).read_text())
    assert entry["schema_version"] == 2
    md = folder.readme.read_text()
    row = next(x for x in md.splitlines() if x.startswith("| Multi-label classification (DL) · run ")
               and x.count("|") == 9)
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[:2] == ["–", "–"] and cells[2][0].isdigit()
    assert "| *Predicts nothing (reference)* | reference, not ranked | 40.00 ± 49.40 |" in md


@pytest.mark.parametrize("paper_k, recorded, entry_ks, expected", [
    (10, ["5"], [5], 10),         # the paper's k wins
    (None, ["3"], [2], 3),        # the one recorded k
    (None, ["2", "5"], [2], 5),   # ichbench's default among several recorded
    (None, ["2", "3"], [3], 3),   # else the entries' k when they agree
    (None, [], [2, 3], None),     # nothing says: no number is shown
])
def test_protocol_k(paper_k, recorded, entry_ks, expected):
    from types import SimpleNamespace

    from ichbench.leaderboard.canonical import Expectation
    from ichbench.leaderboard.model import _protocol_k
    exp = Expectation("someset", True, split_hashes={k: "h" for k in recorded}, paper_k=paper_k)
    rows = [SimpleNamespace(published=False, k=k) for k in entry_ks]
    assert _protocol_k("someset", exp, rows) == expected


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_text_from_an_entry_is_escaped_in_text_and_attributes(board):
    """A plugin's distribution, its code url and commit and a reproduction's author are free text
    that reach cells, data-value and title attributes: markup in them stays text."""
    folder, entries = board
    flags = {r["volume_id"]: r["tp"] + r["fn"] > 0 for r in entries[0]["per_volume"]}
    entry = make_entry(flags, method="vicreg", run_id="e" * 32, seed=5, k=2, plugin=(HOSTILE, "1.0"),
                       fingerprint=entries[0]["dataset"]["fingerprint"])
    entry["code"] = {"url": HOSTILE, "commit": '"<b>x'}
    path = write_entry(folder, entry)
    volumes, tol, mean, _ = compare(entry, entry["per_volume"], [0])
    append(path, entry, {"entry_sha256": entry_sha256(entry), "who": HOSTILE, "date": "2026-12-01T10:00:00Z",
                         "ichbench_version": "0.1.0", "hardware": HOSTILE,
                         "folds": [{"fold": 0, "numerics": {"cpu_threads": 1}, "model_sha256": "1" * 64,
                                    "predictions_sha256": entry["folds"][0]["predictions_sha256"],
                                    "predictions_identical": True}],
                         "tolerance": tol, "volumes": volumes, "mean_delta": mean, "passed": True, "failures": []})
    render(folder)
    html = folder.index.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and '"<b>' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = _Tags()
    page.feed(html)
    # the page's own script, the figures' images: nothing the entry brought
    assert [t for t, _ in page.tags].count("script") == 1
    assert all("onerror" not in attrs for _, attrs in page.tags)
    assert all(a.get("src", "data:").startswith("data:") for t, a in page.tags if t == "img")
    label = f"vicreg [{HOSTILE} 1.0] · run eeeeeeee"
    # whole values in attributes: the quote did not end them
    assert any(a.get("data-value") == label for t, a in page.tags if t == "td")
    assert any(a.get("title") == label for t, a in page.tags if t == "th")
    details = next(x for x in page.text if x.startswith("profile smoke") and "run" not in x and HOSTILE in x)
    assert f"reproduced by {HOSTILE} on 2026-12-01 (fold 0; {HOSTILE};" in details
    assert f'commit "<b>x · code: {HOSTILE}' in details
