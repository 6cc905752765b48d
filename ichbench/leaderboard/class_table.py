"""The per-class table of a dataset on the page and in the README (entries of task subtypes).

Per entry of task subtypes (`leaderboard.classes`) and per class: Dice over the volumes whose truth
holds the class ("with it", n of them) and over all volumes (where a class absent from both masks
scores 1, the binary task's empty-case rule), and their macro means (the unweighted mean over
classes, leaving out a class no volume holds), every number re-scored from the entry's per-class
counts, in percent; an entry over several seeds from each volume's mean over them, as the binary
table. Binary entries and the paper's rows have no per-class results and are not in it.
"""

from __future__ import annotations

import numpy as np

from ichbench.evaluate.summary import _mean_std
from ichbench.leaderboard.classes import CLASS_GROUPS, is_subtypes, scored
from ichbench.leaderboard.seeds import by_seed

GROUP_TITLES = {"present": "volumes with it", "all": "all volumes"}
SHOWN = ("present", "all")   # the columns of each class, in order


def row_classes(entry: dict) -> dict | None:
    """{"names", "cells": {name: {"present"|"all": {"mean", "std", "n"}}}, "macro": {group: {"mean",
    "n_classes"}}} in percent; None for a binary entry."""
    if not is_subtypes(entry):
        return None
    names = list(entry["classes"])
    return {"names": names, **_cells(names, list((by_seed(entry) or {0: entry["per_volume"]}).values()))}


def test_set_macro(entry: dict, item: dict) -> float | None:
    """The macro Dice [%] over the volumes holding each class of an external test set's ensemble
    rows (`leaderboard.test_sets`), as the table's for the entry's own; None for a binary entry."""
    if not is_subtypes(entry):
        return None
    return _cells(list(entry["classes"]), [item["per_volume"]])["macro"]["present"]["mean"]


def _cells(names: list[str], row_sets: list[list[dict]]) -> dict:
    """Per class and its macro means from rows of the same volumes (one list per seed): each volume's
    class Dice averaged over the lists, "present" = the volumes whose truth (first list) holds it."""
    dice: dict = {n: {} for n in names}
    for rows in row_sets:
        for r in rows:
            for n in names:
                dice[n].setdefault(r["volume_id"], []).append(100.0 * scored(r["classes"][n])["dice"])
    cells = {}
    for n in names:
        values = {v: float(np.mean(x)) for v, x in dice[n].items()}
        holds = {r["volume_id"] for r in row_sets[0] if r["classes"][n]["tp"] + r["classes"][n]["fn"] > 0}
        cells[n] = {"all": {**_mean_std(list(values.values())), "n": len(values)},
                    "present": {**_mean_std([x for v, x in values.items() if v in holds]), "n": len(holds)}}
    macro = {}
    for g in CLASS_GROUPS:
        means = [cells[n][g]["mean"] for n in names if cells[n][g]["mean"] is not None]
        macro[g] = {"mean": float(np.mean(means)) if means else None, "n_classes": len(means)}
    return {"cells": cells, "macro": macro}


def table(view) -> dict | None:
    """The dataset's per-class table (plain data for the template and the README): "names" (the
    classes of its entries, in their order), "head", "rows" ({"kind", "label", "cells"}); None
    where no entry of the dataset has classes."""
    rows = [r for r in view.entries if r.classes]
    if not rows:
        return None
    names: list[str] = []
    for r in rows:
        names += [n for n in r.classes["names"] if n not in names]
    head = [{"metric": n.upper(), "group": GROUP_TITLES[g]} for n in names for g in SHOWN]
    head += [{"metric": "Macro", "group": GROUP_TITLES[g]} for g in SHOWN]
    out = []
    for r in rows:
        c = r.classes
        cells = [_cell(c["cells"].get(n, {}).get(g), g) for n in names for g in SHOWN]
        cells += [_cell({**c["macro"][g], "std": None}, g, macro=True) for g in SHOWN]
        out.append({"kind": r.kind, "label": r.label, "cells": cells})
    return {"names": names, "head": head, "rows": out}


def _cell(s: dict | None, group: str, macro: bool = False) -> dict:
    """{"value" (for sorting), "mean", "std", "note"}: "–" where the entry has no such class."""
    if s is None or s["mean"] is None:
        n = None if s is None else s.get("n")
        return {"value": "", "mean": "–", "std": None, "note": f"n = {n}" if n is not None and not macro else None}
    note = (f"{s['n_classes']} classes" if macro else f"n = {s['n']}" if group == "present" else None)
    return {"value": f"{s['mean']:.6f}", "mean": f"{s['mean']:.2f}",
            "std": None if s.get("std") is None else f"{s['std']:.2f}", "note": note}
