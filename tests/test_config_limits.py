"""Every size, count, duration and rate of the run config has an upper bound (issue 26 §5): a
value above it is refused in one line naming the setting and the bound, the bound itself is
accepted, and a setting added without a bound fails `test_every_number_in_the_schema_has_a_maximum`.
A batch larger than the slices it is drawn from is said, in one line, before anything trains.
"""

import json

import pytest

from ichbench.config import SECTIONS, json_schema
from tests.cli import call as _call

DRY = ["finetune", "-m", "unet_mixed_icm", "-d", "phantom", "--fold", "0", "--profile", "smoke", "--dry-run"]

# (setting, a value at the bound, one above it, what the one line says, other settings it needs)
LIMITS = [
    ("model.base_channels", "256", "257", "model.base_channels must be <= 256", []),
    ("model.depth", "10", "11", "model.depth must be <= 10",
     ["pretrain.image_size=512", "finetune.image_size=512"]),   # depth 10 pools 9 times
    *[(f"{sec}.{name}", at, above, f"{sec}.{name} must be <= {bound}", [])
      for sec in ("pretrain", "finetune")
      for name, at, above, bound in [("epochs", "10000", "10001", 10000),
                                     ("batch_size", "4096", "100000000", 4096),
                                     ("lr", "1", "1e24", 1),
                                     ("lr_decay", "1", "1.5", 1),
                                     ("weight_decay", "1", "2", 1),
                                     ("image_size", "2048", "4096", 2048),
                                     ("steps_per_epoch", "1000000", "1000001", 1000000),
                                     ("seed", "4294967295", "4294967296", 4294967295)]],
    ("pretrain.holdout", "1000000", "1000001", "pretrain.holdout must be <= 1000000", []),
    ("finetune.empty_weight", "100", "101", "finetune.empty_weight must be <= 100", []),
    ("finetune.nonich_ratio", "1000", "1e6", "finetune.nonich_ratio must be <= 1000", []),
    ("finetune.threshold", "0.999", "1", "finetune.threshold must be < 1", []),
    ("finetune.labeled_fraction", "1", "2", "finetune.labeled_fraction must be <= 1", []),
    ("finetune.head_prior", "0.999", "1", "finetune.head_prior must be < 1", []),
    ("finetune.augment.translate", "0.999", "1", "finetune.augment.translate must be < 1", []),
    ("finetune.augment.rotate", "180", "181", "finetune.augment.rotate must be <= 180", []),
    ("finetune.augment.scale", "4,4", "1,5", "finetune.augment.scale.1 must be <= 4", []),
    ("finetune.augment.hflip", "1", "1.1", "finetune.augment.hflip must be <= 1", []),
    *[(f"icm.{name}", at, above, f"icm.{name} must be {bound}", [])
      for name, at, above, bound in [("epochs", "10000", "10001", "<= 10000"),
                                     ("batch_size_tissue", "4096", "4097", "<= 4096"),
                                     ("batch_size_bone", "4096", "4097", "<= 4096"),
                                     ("lr", "1", "10", "<= 1"),
                                     ("lr_decay", "1", "1.5", "<= 1"),
                                     ("weight_decay", "1", "2", "<= 1"),
                                     ("image_size", "2048", "4096", "<= 2048"),
                                     ("steps_per_epoch", "1000000", "1000001", "<= 1000000"),
                                     ("base_channels", "256", "257", "<= 256"),
                                     ("holdout", "0.5", "0.6", "<= 0.5"),
                                     ("threshold", "0.999", "1", "< 1"),
                                     ("seed", "4294967295", "4294967296", "<= 4294967295")]],
    ("icm.tissue_window", "-32768,32767", "0,40000", "icm.tissue_window.1 must be <= 32767", []),
    ("icm.bone_window", "-32768,32767", "0,1e9", "icm.bone_window.1 must be <= 32767", []),
    ("data.shuffle_shards", "100000", "100001", "data.shuffle_shards must be <= 100000", []),
    ("eval.nsd_mm", "1000", "1001", "eval.nsd_mm must be <= 1000", []),
    ("eval.hd_cap_mm", "1000", "1e9", "eval.hd_cap_mm must be <= 1000", []),
    ("input.context", "8", "9", "input.context must be <= 8", []),
    ("input.windows", "[[-32768,32767]]", "[[0,40000]]", "input.windows.0.1 must be <= 32767", []),
]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.mark.parametrize("key, at, above, says, extra", LIMITS, ids=[row[0] for row in LIMITS])
def test_above_the_bound_is_one_line_naming_setting_and_bound(key, at, above, says, extra, home,
                                                             monkeypatch, capsys):
    code, out, err = _call(DRY + _sets([*extra, f"{key}={above}"]), monkeypatch, capsys)
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("ichbench: error: ") and says in line, line


@pytest.mark.parametrize("key, at, above, says, extra", LIMITS, ids=[row[0] for row in LIMITS])
def test_at_the_bound_is_accepted(key, at, above, says, extra, home, monkeypatch, capsys):
    code, out, err = _call(DRY + _sets([*extra, f"{key}={at}"]), monkeypatch, capsys)
    assert code in (0, None), err
    value = json.loads(out)
    for part in key.split("."):
        value = value[part]
    expected = json.loads(f"[{at}]")   # "4,4" is a pair; "[[a,b]]" a JSON list as written
    assert value == (expected[0] if at.startswith("[") or "," not in at else expected)


def _numbers(schema: dict, where: str):
    """(path, subschema) of every number or integer in `schema`, through anyOf, items and tuples."""
    if schema.get("type") in ("integer", "number"):
        yield where, schema
    for sub in schema.get("anyOf", []):
        yield from _numbers(sub, where)
    for i, sub in enumerate(schema.get("prefixItems", [])):
        yield from _numbers(sub, f"{where}.{i}")
    if isinstance(schema.get("items"), dict):
        yield from _numbers(schema["items"], f"{where}.*")


def _schema_numbers():
    defs = json_schema()["$defs"]
    return {path: sub for name, d in defs.items() for prop, s in d.get("properties", {}).items()
            for path, sub in _numbers(s, f"{name}.{prop}")}


def test_every_number_in_the_schema_has_a_maximum():
    numbers = _schema_numbers()
    assert len(numbers) > 40   # the walk reaches the settings
    unbounded = [path for path, sub in numbers.items() if "maximum" not in sub and "exclusiveMaximum" not in sub]
    assert unbounded == [], f"give these settings an upper bound (le=...) in ichbench/config/: {unbounded}"


def test_the_table_covers_every_bounded_setting():
    """A new bounded setting gets a row above, so its refusal and its bound are checked too."""
    defs = {"augment": "Augment", **{sec: cls.__name__ for sec, cls in SECTIONS.items()}}
    covered = set()
    for key, *_ in LIMITS:
        parts = key.split(".")
        prop = f"{defs[parts[-2]]}.{parts[-1]}"
        covered |= {p for p in _schema_numbers() if p == prop or p.startswith(prop + ".")}
    assert sorted(set(_schema_numbers()) - covered) == []


def test_a_batch_larger_than_the_training_set_is_said_in_one_line(phantom_home, monkeypatch, capsys):
    run = ["run", "-m", "unet_mixed", "-d", "phantom", "--profile", "smoke", "--dry-run"]
    code, out, err = _call(run, monkeypatch, capsys)
    assert code in (0, None) and "clamped" not in err
    code, out, err = _call(run + ["--set", "finetune.batch_size=4096"], monkeypatch, capsys)
    assert code in (0, None), err
    [line] = [x for x in err.splitlines() if "batch_size" in x]
    # 15 phantom volumes of 16 slices, k=5: 12 training volumes per fold
    assert line == ("ichbench: finetune.batch_size=4096 is more than the 192 slices of the training volumes "
                    "of fold 0: batches are clamped to the slices there are"), line
    assert json.loads(out)[0]["config"]["finetune"]["batch_size"] == 4096   # the run's identity is as given
