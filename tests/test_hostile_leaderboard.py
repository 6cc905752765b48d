"""The leaderboard against hostile entries, round 2 (issue 26 §4).

- A real entry copied under a new name is the duplicate, not the original: which came first is the
  order the entry files entered the leaderboard's git history (real `git init` repositories and
  commits), the recorded dates only outside a checkout.
- README.md shows every entry string as text: no raw HTML, no broken table row, no injected
  heading or link (the README is parsed back).
- No string of an entry holds a control character: validate and reproduce say so on one line.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess

import pytest

from ichbench.leaderboard.canonical import record_from_store
from ichbench.leaderboard.entries import ratios, relpath
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.render import markdown, render
from ichbench.leaderboard.reproductions import append, entry_sha256, tolerance_for
from tests.test_leaderboard_support import copy_folder, flags_of, make_entry, phantom_store, write_entry
from tests.cli import call as _call

GIT_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "test@example.org", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A leaderboard folder with the phantom recorded from a real store (k = 3), built once;
    (folder, ICH flags, fingerprint). Tests copy it."""
    base = tmp_path_factory.mktemp("recorded")
    home = base / "home"
    home.mkdir()
    folder = copy_folder(base)
    res = phantom_store(home)
    record_from_store(folder, home, "phantom", [3])
    return folder, flags_of(res), res.fingerprint


@pytest.fixture
def board(recorded, tmp_path):
    template, flags, fp = recorded
    root = tmp_path / "repo" / "leaderboard"
    shutil.copytree(template.root, root)
    return Folder(root), flags, fp


def _git(cwd, *args, date=None):
    env = {**os.environ, **GIT_ENV}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _commit(folder, path, message, date=None):
    _git(folder.root, "add", str(path))
    _git(folder.root, "commit", "-q", "-m", message, date=date)


def _validate(folder, monkeypatch, capsys, *paths):
    code, out, err = _call(["leaderboard", "validate", *map(str, paths), "--root", str(folder.root)],
                           monkeypatch, capsys)
    assert "Traceback" not in out + err
    return code, out, err


def _plugin(entry, method, dist, **more):
    return {**copy.deepcopy(entry), "method": method, "plugin": {"distribution": dist, "version": "1.0"}, **more}


# -- a copy under a new name is the duplicate, whatever it chose -----------------------------------

def _copies(flags, fp):
    """(variant, genuine entry, copy, what the copy's rejection says). Each copy sits at a path
    that sorts before the genuine's, or carries an earlier date, so neither decides."""
    builtin = make_entry(flags, fingerprint=fp)                            # multilabel_dl--aaaaaaaa
    plugin = make_entry(flags, fingerprint=fp, method="vicreg", run_id="c" * 32,
                        plugin=("ichbench-vicreg", "0.3.0"))               # vicreg--cccccccc
    counts = "duplicate: the same per-volume counts as leaderboard/entries/phantom/"
    return [
        ("same_run_id_and_date", builtin, _plugin(builtin, "aaa_copy", "ichbench-aaa"),
         "duplicate: MLflow run " + "a" * 32 + " is already on the leaderboard as "
         "leaderboard/entries/phantom/multilabel_dl--aaaaaaaa.json"),
        ("new_run_id", builtin, _plugin(builtin, "aaa_copy", "ichbench-aaa", mlflow_run_id="b" * 32),
         counts + "multilabel_dl--aaaaaaaa.json"),
        ("earlier_date", builtin, _plugin(builtin, "zzz_copy", "ichbench-zzz", mlflow_run_id="b" * 32,
                                          date="2020-01-01T00:00:00Z"),
         counts + "multilabel_dl--aaaaaaaa.json"),
        # another plugin's name on a plugin's entry: vicreg--bbbbbbbb sorts before vicreg--cccccccc
        ("plugin_name", plugin, _plugin(plugin, "vicreg", "ichbench-vicreg-plus", mlflow_run_id="b" * 32),
         counts + "vicreg--cccccccc.json"),
    ]


VARIANTS = ["same_run_id_and_date", "new_run_id", "earlier_date", "plugin_name"]


@pytest.mark.parametrize("committed", [True, False], ids=["copy_committed_later", "copy_not_committed"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_copy_is_the_duplicate_in_git_history_order(variant, committed, board, monkeypatch, capsys):
    folder, flags, fp = board
    _, genuine, copied, says = next(c for c in _copies(flags, fp) if c[0] == variant)
    _git(folder.root.parent, "init", "-q")
    g_path = write_entry(folder, genuine)
    _commit(folder, folder.root, "the leaderboard with the genuine entry")
    c_path = write_entry(folder, copied)
    assert str(relpath(copied)) < str(relpath(genuine)) or copied["date"] < genuine["date"]
    if committed:   # backdated: commit dates are the copier's to choose too
        _commit(folder, c_path, "a copy", date="2001-01-01T00:00:00Z")
    code, out, err = _validate(folder, monkeypatch, capsys)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"REJECT leaderboard/entries/phantom/"
                                                                 f"{c_path.name}: {says}"), err
    assert f"ok     leaderboard/entries/phantom/{g_path.name}" in out
    # validating one file still weighs it against the other
    assert _validate(folder, monkeypatch, capsys, g_path)[0] == 0
    code, _, err = _validate(folder, monkeypatch, capsys, c_path)
    assert code == 1 and says in err


def test_a_copy_at_the_path_of_a_removed_entry_is_new(board, monkeypatch, capsys):
    """The path's first commit is not the copy's: a path deleted and added again counts from then."""
    folder, flags, fp = board
    _git(folder.root.parent, "init", "-q")
    old = _plugin(make_entry(flags, fingerprint=fp, seed=7), "aaa_old", "ichbench-aaa", mlflow_run_id="b" * 32)
    o_path = write_entry(folder, old)
    _commit(folder, folder.root, "an entry, withdrawn later")
    _git(folder.root, "rm", "-q", str(o_path))
    _git(folder.root, "commit", "-q", "-m", "withdrawn")
    genuine = make_entry(flags, fingerprint=fp)
    write_entry(folder, genuine)
    _commit(folder, folder.root, "the genuine entry")
    c_path = write_entry(folder, _plugin(genuine, "aaa_old", "ichbench-aaa", mlflow_run_id="b" * 32))
    assert c_path == o_path
    _commit(folder, c_path, "a copy where the withdrawn entry was")
    code, _, err = _validate(folder, monkeypatch, capsys)
    assert code == 1 and err.startswith(f"REJECT leaderboard/entries/phantom/{c_path.name}: duplicate: the same "
                                        "per-volume counts as leaderboard/entries/phantom/multilabel_dl--"), err


def test_outside_git_the_recorded_submission_decides(board, monkeypatch, capsys):
    """No history to read: the dates the entries record, then their paths."""
    folder, flags, fp = board
    genuine = make_entry(flags, fingerprint=fp)
    later = _plugin(genuine, "aaa_copy", "ichbench-aaa", mlflow_run_id="b" * 32, date="2026-01-01T00:00:00Z")
    write_entry(folder, genuine)
    c_path = write_entry(folder, later)
    code, out, err = _validate(folder, monkeypatch, capsys)
    assert code == 1 and err.splitlines() == [
        f"REJECT leaderboard/entries/phantom/{c_path.name}: duplicate: the same per-volume counts as "
        "leaderboard/entries/phantom/multilabel_dl--aaaaaaaa.json (MLflow run " + "a" * 32
        + ", 2025-01-02T03:04:05Z), submitted under another run id"], err
    # dates are instants: an hour later, written with an offset that sorts first as text
    c_path.write_text(json.dumps({**later, "date": "2025-01-02T03:04:05-01:00"}))
    code, out, err = _validate(folder, monkeypatch, capsys)
    assert code == 1 and err.startswith(f"REJECT leaderboard/entries/phantom/{c_path.name}: duplicate: "), err
    assert "ok     leaderboard/entries/phantom/multilabel_dl--aaaaaaaa.json" in out


def test_a_shallow_checkout_says_that_dates_decide(board, tmp_path, monkeypatch, capsys):
    folder, flags, fp = board
    _git(folder.root.parent, "init", "-q")
    write_entry(folder, make_entry(flags, fingerprint=fp))
    _commit(folder, folder.root, "one")
    write_entry(folder, make_entry(flags, fingerprint=fp, run_id="d" * 32, seed=1))
    _commit(folder, folder.root, "two")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{folder.root.parent}", str(clone))
    code, out, _ = _validate(Folder(clone / "leaderboard"), monkeypatch, capsys)
    assert code == 0 and "note: the leaderboard's git checkout is shallow" in out
    assert "shallow" not in _validate(folder, monkeypatch, capsys)[1]


# -- README.md shows entry strings as text --------------------------------------------------------

HOSTILE_DIST = "<script>alert(1)</script> | # x [click](javascript:alert(3)) *b* _c_ `d` ~~e~~ \\"
HOSTILE_VERSION = "<img src=x onerror=alert(2)>&amp;"
HOSTILE_WHO = "Eve <eve@example.org> [me](javascript:alert(4)) | x"


def _cells(line: str) -> list[str]:
    """A table row's cells, split at the pipes Markdown sees (not backslash-escaped)."""
    cells, cell, i = [], "", 1   # past the leading pipe
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cell, i = cell + line[i:i + 2], i + 2
            continue
        if line[i] == "|":
            cells, cell = cells + [cell.strip()], ""
        else:
            cell += line[i]
        i += 1
    return cells


def assert_readme_is_plain(md: str, titles: list[str], cells: list[str] = ()) -> None:
    """Parse README.md back: the intended headings only; tables of rows alone, each row as wide as
    its header; no raw HTML, no link, image or strikethrough (the README makes none); and each of
    `cells` shown, exactly, as one table cell of plain text."""
    from markdown_it import MarkdownIt
    lines = md.splitlines()
    assert [x for x in lines if x.startswith("#")] == ["# ichbench leaderboard"] + [f"## {t}" for t in titles]
    for block in md.split("\n\n"):
        rows = [x for x in block.splitlines() if x.startswith("|")]
        if rows:
            assert rows == block.splitlines() and len({len(_cells(x)) for x in rows}) == 1, block
    assert not re.search(r"<\s*/?\s*(script|img)", md, re.I)
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(md)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or ()}
    assert not kinds & {"html_inline", "html_block", "link_open", "image", "s_open"}, kinds
    assert [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"] == \
        ["ichbench leaderboard"] + titles
    plain = [c.content for t in tokens if t.type == "inline" and len(t.children) == 1
             for c in t.children if c.type == "text"]
    for text in cells:
        assert text in plain, (text, plain)


TITLES = ["Hssayeni et al. (PhysioNet ct-ich)", "Seg-CQ500", "phantom"]


def test_render_writes_hostile_strings_as_text(board):
    folder, flags, fp = board
    entry = make_entry(flags, fingerprint=fp, method="vicreg", run_id="c" * 32,
                       plugin=(HOSTILE_DIST, HOSTILE_VERSION))
    path = write_entry(folder, entry)
    volumes = [{"volume_id": r["volume_id"], "fold": r["fold"], "dice_entry": ratios(r["tp"], r["fp"], r["fn"])["dice"],
                "dice_reproduced": ratios(r["tp"], r["fp"], r["fn"])["dice"], "delta": 0.0, "has_ich": r["has_ich"],
                "fp_entry": r["fp"], "fp_reproduced": r["fp"]} for r in entry["per_volume"]]
    append(path, entry, {
        "entry_sha256": entry_sha256(entry), "who": HOSTILE_WHO, "date": "2026-12-01T00:00:00Z",
        "ichbench_version": "0.1.0", "hardware": "<b>cpu</b>",
        "folds": [{"fold": f["fold"], "numerics": {}, "model_sha256": None, "predictions_identical": True,
                   "predictions_sha256": f["predictions_sha256"]} for f in entry["folds"]],
        "tolerance": tolerance_for(sum(v["has_ich"] for v in volumes)), "volumes": volumes,
        "mean_delta": 0.0, "passed": True, "failures": []})
    out = render(folder)
    assert out.report.ok and len(out.report.reproductions) == 1, out.report.lines()
    md = folder.readme.read_text()
    assert_readme_is_plain(md, TITLES, [f"vicreg [{HOSTILE_DIST} {HOSTILE_VERSION}] · run cccccccc",
                                        f"re-scored, reproduced by {HOSTILE_WHO}, 2026-12-01"])
    row = next(x for x in md.splitlines() if "run cccccccc" in x)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| # x \\[click\\](javascript:alert(3))" in row
    assert "&lt;img src=x onerror=alert(2)&gt;&amp;amp;" in row


def test_markdown_keeps_a_newline_in_a_label_on_its_row(board):
    """Past the schema (which refuses it), a newline still cannot leave its table cell."""
    from ichbench.leaderboard.model import build
    folder, flags, fp = board
    dist = "evil\n# heading\n[x](javascript:alert(1))\n| a | b |"
    entry = make_entry(flags, fingerprint=fp, method="vicreg", run_id="c" * 32, plugin=(dist, "1"))
    md = markdown(build([], {"leaderboard/entries/phantom/x.json": entry}, {}, {}))
    shown = dist.replace("\n", "\\n")   # the newline as its escape, on the row
    assert_readme_is_plain(md, ["phantom"], [f"vicreg [{shown} 1] · run cccccccc"])


# -- no control character in any string of an entry ------------------------------------------------

def _set(path, value):
    def edit(e):
        *head, last = path
        for k in head:
            e = e[k]
        e[last] = value
    return edit


CONTROL_CASES = [
    # (field, edit, where the one line says it is, the value as it shows)
    ("distribution", _set(["plugin", "distribution"], "evil\n# heading"), "plugin/distribution",
     r"'evil\n# heading'"),
    ("version", _set(["plugin", "version"], "1.0\r"), "plugin/version", r"'1.0\r'"),
    ("hardware_escape", _set(["hardware"], "cpu\x1b[31m"), "hardware", r"'cpu\x1b[31m'"),
    ("url_line_separator", _set(["code", "url"], "https://a\u2028b"), "code/url", r"'https://a\u2028b'"),
    ("commit_bidi", _set(["code", "commit"], "dead\u202ebeef"), "code/commit", r"'dead\u202ebeef'"),
    ("ichbench_version_tab", _set(["ichbench_version"], "0.1\t"), "ichbench_version", r"'0.1\t'"),
    # a trailing newline passes a pattern anchored with $ in Python
    ("run_id_trailing_newline", _set(["mlflow_run_id"], "a" * 32 + "\n"), "mlflow_run_id", "'" + "a" * 32 + r"\n'"),
    ("date_trailing_newline", _set(["date"], "2025-01-02T03:04:05Z\n"), "date", r"'2025-01-02T03:04:05Z\n'"),
    ("config_value", _set(["config", "finetune", "note"], ["ok", "x\ny"]), "config/finetune/note/1", r"'x\ny'"),
    ("config_key", _set(["config", "a\nb"], 1), "config", r"the key 'a\nb'"),
]


@pytest.mark.parametrize("name, edit, where, shown", CONTROL_CASES, ids=[c[0] for c in CONTROL_CASES])
def test_control_characters_are_refused_on_one_line(name, edit, where, shown, board, monkeypatch, capsys):
    folder, flags, fp = board
    entry = make_entry(flags, fingerprint=fp)
    edit(entry)
    path = write_entry(folder, entry, relpath(make_entry(flags, fingerprint=fp)))
    code, out, err = _validate(folder, monkeypatch, capsys)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"REJECT leaderboard/entries/phantom/{path.name}: "
                                                   f"schema: at {where}: "), err
    assert f"{shown} holds a control character" in lines[0], lines[0]


def test_reproduce_refuses_a_newline_in_one_line(board, home, monkeypatch, capsys):
    folder, flags, fp = board
    entry = make_entry(flags, fingerprint=fp, method="vicreg", run_id="c" * 32,
                       plugin=("ichbench-vicreg\nplease\ninstall\nme", "0.3.0"))
    path = write_entry(folder, entry)
    code, out, err = _call(["leaderboard", "reproduce", str(path), "--root", str(folder.root)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert err.splitlines() == [
        f"ichbench: error: leaderboard/entries/phantom/{path.name}: not reproduced: it does not validate: "
        r"schema: at plugin/distribution: the text 'ichbench-vicreg\nplease\ninstall\nme' holds a control "
        "character (newlines included); text is one plain line"], err


def test_a_file_name_with_a_newline_is_shown_on_one_line(board, monkeypatch, capsys):
    folder, flags, fp = board
    path = folder.entries_dir / "phantom" / "evil\nname.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(make_entry(flags, fingerprint=fp)))
    code, _, err = _validate(folder, monkeypatch, capsys)
    assert code == 1 and err.splitlines() == [
        r"REJECT leaderboard/entries/phantom/evil\nname.json: misplaced: an entry for multilabel_dl on phantom "
        "from run " + "a" * 32 + " belongs at entries/phantom/multilabel_dl--aaaaaaaa.json"], err
