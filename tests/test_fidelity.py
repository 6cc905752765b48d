"""docs/fidelity.md cannot drift from the code: every row is checked against the resolved `paper`
profile of each method and dataset it names, and a changed paper value is caught by name.

Rows whose value is a behaviour rather than a setting (`check:NAME`) run the code path that
carries it (the functions in tests/fidelity_checks.py): the ε the scoring and the losses really
use, the RSNA selection the ingest really makes, what is frozen, the ICM union, ..."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import torch

from ichbench.resolve import resolve
from ichbench.models.unet import unet_for
from tests.fidelity_checks import CHECKS, DATASETS, GROUPS, PAPER_METHODS

LEDGER = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"


def ledger_rows(text: str) -> list[dict]:
    """The rows of both tables that name a key: {where, key, methods, datasets, expected}."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[2].startswith("`"):
            continue
        rows.append({"where": f"{cells[0]} / {cells[1][:60]}", "key": cells[2].strip("`"),
                     "methods": cells[3], "datasets": cells[4], "expected": json.loads(cells[5].strip("`"))})
    return rows


def _methods(scope: str) -> list[str | None]:
    if scope == "-":
        return [None]
    out = []
    for part in (p.strip() for p in scope.split(",")):
        out += GROUPS.get(part, [part])
    return out


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _code(path: str):
    """MODULE.NAME[.ATTR...]: import the longest module prefix, then walk attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)



def actual(key: str, method: str | None, dataset: str | None):
    if key.startswith("check:"):
        return _jsonable(CHECKS[key[6:]]())
    if key.startswith("code:"):
        return _jsonable(_code(key[5:]))
    if key.startswith("default:"):
        *fn, arg = key[8:].split(".")
        return inspect.signature(_code(".".join(fn))).parameters[arg].default
    if key.startswith("method:"):
        from ichbench.methods.base import get_method
        return _jsonable(getattr(get_method(method), key[7:]))
    cfg = resolve(method, dataset or "segcq500", "paper")
    if key == "unet:parameters":
        return sum(p.numel() for p in unet_for(cfg.model).parameters())
    if key == "unet:dropout":
        return sum(isinstance(m, torch.nn.Dropout) for m in unet_for(cfg.model).modules())
    value = cfg.to_dict()
    for part in key.split("."):
        value = value[part]
    return value


def mismatches(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        for method in _methods(row["methods"]):
            for dataset in DATASETS[row["datasets"]]:
                try:
                    got = actual(row["key"], method, dataset)
                except Exception as exc:   # a broken path names its row too (ε = 0 divides by zero)
                    got = f"raised {type(exc).__name__}: {exc}"
                if got != row["expected"]:
                    out.append(f"{row['where']}: {row['key']} for {method or '-'} on {dataset or '-'} "
                               f"is {got!r}, the ledger says {row['expected']!r}")
    return out


@pytest.fixture(scope="module")
def rows():
    found = ledger_rows(LEDGER.read_text())
    assert len(found) > 60, "the ledger's tables were not parsed"
    return found


def test_every_ledger_row_matches_the_resolved_paper_profile(rows, registry):
    assert mismatches(rows) == []


def test_every_paper_method_and_both_datasets_are_covered(rows):
    named = {m for r in rows for m in _methods(r["methods"])}
    assert set(PAPER_METHODS) <= named
    assert {d for r in rows for d in DATASETS[r["datasets"]]} >= {"hssayeni", "segcq500"}


def _profile_adds(mp, extra: dict) -> None:
    import ichbench.config as config
    import ichbench.resolve as resolve_module
    original = config.profile_settings
    for module in (config, resolve_module):   # both resolve() and resolve_icm() read the profile
        mp.setattr(module, "profile_settings", lambda profile, dataset: {**original(profile, dataset), **extra})


@pytest.mark.parametrize("change, row_pattern", [
    # a paper value changed in the config: the ledger test names the row
    (lambda mp: mp.setitem(__import__("ichbench.config", fromlist=["x"]).PAPER_FINETUNE["hssayeni"], "epochs", 90),
     r"2\.5\.3 / .100 epochs.*finetune\.epochs for unet_ich_only on hssayeni is 90"),
    (lambda mp: _profile_adds(mp, {"icm": {"bone_window": (100.0, 650.0)}}),
     r"2\.3\.3 / .One U-Net trained on slices rescaled with a bone window.*icm\.bone_window"),
    (lambda mp: mp.setitem(
        __import__("ichbench.methods.multilabel", fromlist=["x"]).MultilabelCE.profiles["paper"]["params"],
        "pos_weight", "auto"),
     r"pretrain\.params\.pos_weight for multilabel_ce on hssayeni is 'auto'"),
])
def test_a_changed_paper_value_fails_the_ledger(rows, registry, monkeypatch, change, row_pattern):
    change(monkeypatch)
    found = mismatches(rows)
    assert found and any(re.search(row_pattern, m) for m in found), found


AUTHORS = re.compile(r"\bauthors['’]|\bthe authors\b", re.IGNORECASE)
CODE_REF = re.compile(r"`code/[\w./-]+\.(?:py|json):\d+(?:[-,]\d+)*`")


def unreferenced_citations(text: str) -> list[str]:
    """Rows and notes of the ledger that cite the authors' code without a `code/PATH:LINE` reference."""
    out = []
    for line in text.splitlines():
        item = line.strip()
        if (item.startswith("|") or item.startswith("- ")) and AUTHORS.search(item) and not CODE_REF.search(item):
            out.append(item[:100])
    return out


def test_every_citation_of_the_authors_code_names_its_file_and_line():
    """A justification such as "the authors' config does X" names the line that does X, in one fixed
    format, so a reader (or the next review) can check it rather than trust it."""
    assert unreferenced_citations(LEDGER.read_text()) == []
    assert unreferenced_citations("| x | as the authors' config does | `k` | - | - | `1` |")
    assert not unreferenced_citations("| x | as the authors' config does (`code/a/b.json:12-14`) | `k` | - | - | `1` |")


def _freezing_transfer(mp) -> None:
    """Fine-tuning that keeps the transferred encoder frozen (what "without freezing them" rules out)."""
    import ichbench.train.engine as engine
    original = engine.transfer_parts

    def transfer(state, dst, parts):
        copied = original(state, dst, parts)
        for p in dst.encoder.parameters():
            p.requires_grad_(False)
        return copied
    mp.setattr(engine, "transfer_parts", transfer)


def _without_default(fn, old, new):
    return tuple(new if d == old else d for d in fn.__defaults__)


@pytest.mark.parametrize("change, key, row_pattern", [
    # scoring a run's fold with an ε of its own (ε = 0: a healthy volume's recall is 0/0)
    (lambda mp: mp.setattr("ichbench.train.predict.per_volume_row",
                           functools.partial(__import__("ichbench.evaluate.summary", fromlist=["x"]).per_volume_row,
                                             eps=0.0)),
     "check:metric_eps", r"^2\.4 / \(the ε each scoring path.*raised ZeroDivisionError"),
    (lambda mp: mp.setattr("ichbench.leaderboard.entries.EPS", 2.0),
     "check:metric_eps", r"^2\.4 / .*'leaderboard': \[0\.666667, 0\.666667, 1\.0\]"),
    (lambda mp: mp.setattr(__import__("ichbench.losses.dice", fromlist=["x"]).dice_loss, "__kwdefaults__",
                           {"eps": 0.5, "empty_weight": 1.0}),
     "check:loss_eps", r"^\(the ε every Dice loss uses\) / .*'dice_loss': 0\.666667"),
    (lambda mp: mp.setattr(__import__("ichbench.datasets.base", fromlist=["x"]).IngestOptions.__init__, "__defaults__",
                           _without_default(__import__("ichbench.datasets.base", fromlist=["x"]).IngestOptions.__init__,
                                            5000, 4000)),
     "check:rsna_selection", r"^2\.2\.3, 2\.6 / .*'held out': 4000"),
    (lambda mp: mp.setattr(__import__("ichbench.methods.nets.local", fromlist=["x"]).LocalContrastiveModel, "train",
                           torch.nn.Module.train),
     "check:local_contrastive_step", r"^2\.6\.1\.3 / .froze the encoder.*'encoder': True"),
    (_freezing_transfer, "check:finetune_frozen", r"^2\.6 / .The pre-trained weights.*'encoder\.0\.0\.weight'"),
    (lambda mp: mp.setattr(__import__("ichbench.icm.masker", fromlist=["x"]).IcmUNets, "__call__",
                           lambda self, hu, t=0.5: ((self.probabilities(hu)["tissue"] > t)
                                                    & (self.probabilities(hu)["bone"] > t)).numpy()),
     "check:icm_union", r"^2\.3\.3 / .The final intracranial cavity mask.*'tissue only': False"),
])
def test_a_changed_behaviour_fails_its_row(rows, registry, monkeypatch, change, key, row_pattern):
    """A `check:` row measures the code path, not a setting: break the path and the row is named."""
    change(monkeypatch)
    found = mismatches([r for r in rows if r["key"] == key])
    assert found and any(re.search(row_pattern, m) for m in found), found


HEADERS = (["§", "the paper's words"], ["choice", "what we chose and why (source)"])


def test_no_table_line_of_the_ledger_is_skipped():
    """A row the parser cannot read (a stray `|` in a cell splits it) would never be checked: every
    table line is a header, a separator, a parsed row or a row that names no key (`-`)."""
    text = LEDGER.read_text()
    parsed = {r["where"] for r in ledger_rows(text)}
    skipped = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(line) <= set("|- ") or cells[:2] in HEADERS:
            continue
        if len(cells) != 6 or (cells[2] != "-" and f"{cells[0]} / {cells[1][:60]}" not in parsed):
            skipped.append(line[:80])
    assert skipped == []
