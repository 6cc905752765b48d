"""docs/fidelity.md cannot drift from the code: every row is checked against the resolved `paper`
profile of each method and dataset it names, and a changed paper value is caught by name."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from ichbench.resolve import resolve
from ichbench.models.unet import unet_for

LEDGER = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
PAPER_METHODS = ["unet_ich_only", "unet_ich_only_icm", "unet_mixed", "unet_mixed_icm", "context_restoration",
                 "global_contrastive", "local_contrastive", "binary_classification", "multilabel_ce", "multilabel_dl"]
GROUPS = {
    "all": PAPER_METHODS,
    "baselines": PAPER_METHODS[:4],
    "pretexts": PAPER_METHODS[4:],
    "+ICM": ["unet_ich_only_icm", "unet_mixed_icm"],
    "non-contrastive": ["context_restoration", "binary_classification", "multilabel_ce", "multilabel_dl"],
}
DATASETS = {"both": ["hssayeni", "segcq500"], "hssayeni": ["hssayeni"], "segcq500": ["segcq500"], "-": [None]}


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
    value = cfg.to_dict()
    for part in key.split("."):
        value = value[part]
    return value


def mismatches(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        for method in _methods(row["methods"]):
            for dataset in DATASETS[row["datasets"]]:
                got = actual(row["key"], method, dataset)
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
