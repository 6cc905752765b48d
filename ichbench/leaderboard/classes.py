"""Per-class results in leaderboard entries: the subtypes task (`finetune.task=subtypes`, issue 23 §2).

An entry of schema version 3 may say `task: "subtypes"` (absent: the paper's binary task). Then it
names its classes (`classes`: the store's class names in id order, class k being id k) and every
row carries `classes`: per class the counts and volumes of that class's own mask (prediction == id
against truth == id: TP, FP, FN, pred_ml, true_ml) with, where the run scored them, its surface
metrics (SURFACE_KEYS), and may carry `pred_labels_sha256`, the digest of the predicted label map
(`evaluate.digest.label_map_digest`). The row's own counts stay the union's (any class), the paper's
binary mask, so every binary check, re-score and number of the page holds for it unchanged.

`class_summary` holds per class its Dice, precision and recall over all volumes and over the volumes
whose truth holds the class ("present"), as `evaluate.classes.summarize_classes` takes them; like
the binary summary, validation recomputes it from the counts (to 1e-9). What the counts fix is
checked too (`problems`, one line per rule and class, naming the volumes):
- every row scores exactly the entry's classes, and those are the dataset's (where ichbench knows
  its dataset) and the task is the one the entry's config ran;
- one class per voxel (a label map): the classes' true voxels are the union's, sum_c (TP_c + FN_c) =
  TP + FN, and so are their predicted ones, sum_c (TP_c + FP_c) = TP + FP; a voxel of the right
  class is in the union's TP, so sum_c TP_c <= TP;
- a class's mL are its voxel counts at the union's voxel volume;
- a class's surface metrics follow its counts by the union's rules (`surface_checks`: the
  empty-case rule, HD95 <= HD, NSD against nsd_mm, the volume metrics from its mL);
- the rows of its external test sets (`--test-on`, `leaderboard.test_sets`) by the same rules, and
  the test set's classes (where ichbench knows it) are the entry's in id order.
`leaderboard reproduce` compares each class's counts, mL and surface metrics with the re-run's where
the volume's predicted label map is bit-identical (`reproduction_failures`).
"""

from __future__ import annotations

import math

from ichbench.evaluate.metrics import METRIC_EPS, ratios

SUBTYPES = "subtypes"
MAX_CLASSES = 16
COUNTS = ("tp", "fp", "fn", "pred_ml", "true_ml")
CLASS_GROUPS = ("all", "present")
TOL = 1e-9
EXTERNAL_ROWS = ("per_volume", "fold_rows")   # an external test set's ensemble and fold-model rows


def extend(entry_schema: dict, *, count: dict, ml: dict, surface: dict, hex64: dict, group: dict,
           one_line: dict, v3: dict) -> None:
    """Add the optional per-class keys to the entry schema (schema.py), before `seeds` copies its
    row schema: an entry, its rows and its other seeds' rows may carry them, for task subtypes only."""
    name = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,31}$", **one_line}   # evaluate.classes
    record = {"type": "object", "additionalProperties": False, "required": list(COUNTS),
              "properties": {"tp": count, "fp": count, "fn": count, "pred_ml": ml, "true_ml": ml, **surface},
              # a class's surface metrics come all together (as the run scored them) or not at all
              "dependentRequired": {k: [o for o in surface if o != k] for k in surface}}
    fields = {"classes": {"type": "object", "minProperties": 1, "maxProperties": MAX_CLASSES, "propertyNames": name,
                          "additionalProperties": record,
                          "description": "per class: its own mask's counts, mL and surface metrics"},
              "pred_labels_sha256": {**hex64, "description": "evaluate.digest.label_map_digest of the predicted map"}}
    entry_schema["properties"]["per_volume"]["items"]["properties"].update(fields)
    # an external test set's rows (leaderboard.test_sets, copied from the row schema before this): the same keys
    ext = entry_schema["properties"]["external"]["items"]["properties"]
    for key in EXTERNAL_ROWS:
        ext[key]["items"]["properties"].update(fields)
    props = entry_schema["properties"]
    props["task"] = {"enum": ["binary", SUBTYPES],
                     "description": "binary (absent: the same) or subtypes: rows carry per-class results"}
    props["classes"] = {"type": "array", "minItems": 1, "maxItems": MAX_CLASSES, "uniqueItems": True,
                        "items": name, "description": "the class names in id order (class k is id k)"}
    props["class_summary"] = {"type": "object", "maxProperties": MAX_CLASSES, "propertyNames": name,
                              "additionalProperties": {"type": "object", "additionalProperties": False,
                                                       "required": list(CLASS_GROUPS),
                                                       "properties": {g: group for g in CLASS_GROUPS}}}
    keys = ("task", "classes", "class_summary")
    rows_need = {"items": {"required": ["classes"]}}
    # `not {}` rather than `false`: jsonschema names the key of a failed `not`, never of a `false`
    rows_lack = {"items": {"properties": {k: {"not": {}} for k in ("classes", "pred_labels_sha256")}}}
    entry_schema["allOf"] += [
        {"if": v3, "else": {"allOf": [{"not": {"required": [k]}} for k in keys]}},
        {"if": {"required": ["task"], "properties": {"task": {"const": SUBTYPES}}},
         "then": {"required": ["classes", "class_summary"], "properties": _rows_of(rows_need)},
         "else": {"allOf": [{"not": {"required": [k]}} for k in keys[1:]], "properties": _rows_of(rows_lack)}},
    ]


def _rows_of(rule: dict) -> dict:
    """`rule` for every list of rows of an entry: its own, its other seeds' and its test sets'."""
    return {"per_volume": rule, "seeds": {"properties": {"per_volume": rule}},
            "external": {"items": {"properties": {key: rule for key in EXTERNAL_ROWS}}}}


def is_subtypes(entry: dict) -> bool:
    return entry.get("task") == SUBTYPES


def configured_task(config: dict) -> str:
    """The task a recorded config ran: its finetune.task (a config records it only where it is not
    "binary", `config.models.finetune_dict`)."""
    section = config.get("finetune")
    task = section.get("task") if isinstance(section, dict) else None
    return "binary" if task is None else str(task)


def _inf_text(x):
    from ichbench.leaderboard.entries import _inf_text as text
    return text(x)


def row_fields(r: dict) -> dict:
    """What an entry row keeps of a run row's `classes` (and its label map digest); {} for a binary row."""
    if "classes" not in r:
        return {}
    from ichbench.leaderboard.schema import SURFACE_KEYS
    out = {"classes": {str(name): {**{k: int(c[k]) for k in COUNTS[:3]}, **{k: float(c[k]) for k in COUNTS[3:]},
                                   **{k: str(c[k]) if k == "empty" else _inf_text(c[k])
                                      for k in SURFACE_KEYS if k in c}}
                       for name, c in r["classes"].items()}}
    if r.get("pred_labels_sha256") is not None:
        out["pred_labels_sha256"] = str(r["pred_labels_sha256"])
    return out


def entry_fields(rows: list[dict]) -> dict:
    """The entry-level keys of rows with classes (task, class names in the rows' order, summary); {}
    for binary rows."""
    if not rows or "classes" not in rows[0]:
        return {}
    names = list(rows[0]["classes"])
    return {"task": SUBTYPES, "classes": names, "class_summary": summary(names, rows)}


def run_problems(rows: list[dict], logged: dict, config) -> list[str]:
    """`submit`: what a run's per_volume.json, summary.json and config.json must agree on for its
    entry to be of the task it ran: rows with classes exactly for finetune.task=subtypes, each row
    the same classes with their counts, and the per-class means summary.json logged those the
    counts give."""
    task = configured_task(config) if isinstance(config, dict) else "binary"
    carry = [r["volume_id"] for r in rows if "classes" in r]
    if (task == SUBTYPES) != bool(carry) or 0 < len(carry) < len(rows):
        which = "none of" if not carry else "some of" if len(carry) < len(rows) else "all of"
        return [f"config.json ran finetune.task = {task}, but {which} per_volume.json's rows carry per-class results"]
    if not carry:
        return []
    names = list(rows[0]["classes"]) if isinstance(rows[0]["classes"], dict) else []
    for r in rows:
        got = list(r["classes"]) if isinstance(r["classes"], dict) else []
        if got != names:
            odd = [f"class {c} is not" for c in got if c not in names] or \
                [f"class {c} is not scored, though it is" for c in names if c not in got] or ["the classes are not"]
            return [f"per_volume.json row {r['volume_id']}: {odd[0]} among row {rows[0]['volume_id']}'s classes, "
                    f"in their order ({', '.join(names)})"]
        lack = [f"{n} {k}" for n, c in r["classes"].items() for k in COUNTS if not isinstance(c, dict) or k not in c]
        if lack:
            return [f"per_volume.json row {r['volume_id']} lacks class results {', '.join(lack[:5])}"]
    from ichbench.leaderboard.schema import METRICS
    want = summary(names, [row_fields(r) for r in rows])
    out = []
    for n in names:
        for g in CLASS_GROUPS:
            for m in METRICS:
                a, b = _at(logged, "classes", n, g, m, "mean"), want[n][g][m]["mean"]
                if isinstance(a, (int, float)) and b is not None and abs(float(a) - b) > TOL:
                    out.append(f"summary.json classes.{n}.{g}.{m}.mean = {a} but per_volume.json gives {b}")
    return out


def _at(node, *keys):
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def scored(record: dict) -> dict:
    """A class record with its ratios, recomputed from its counts (eqs. 1-3, the paper's ε)."""
    return {**record, **ratios(int(record["tp"]), int(record["fp"]), int(record["fn"]), METRIC_EPS)}


def summary(names: list[str], rows: list[dict]) -> dict:
    """{name: {"all"|"present": {"n", metric: {"mean", "std"}}}} from the rows' class counts
    (`evaluate.classes.summarize_classes`, present = the class's true voxels > 0)."""
    from ichbench.evaluate.classes import summarize_classes
    from ichbench.evaluate.summary import _mean_std
    from ichbench.leaderboard.schema import METRICS
    cases = [{"classes": {n: {**scored(r["classes"][n]), "true_ml": _present(r["classes"][n])} for n in names}}
             for r in rows]
    per = summarize_classes(cases, METRICS, lambda values, key: {**_mean_std(values), "n": len(values)})["classes"]
    return {n: {g: {"n": per[n][g][METRICS[0]]["n"], **{m: {"mean": per[n][g][m]["mean"], "std": per[n][g][m]["std"]}
                                                        for m in METRICS}} for g in CLASS_GROUPS} for n in names}


def _present(record: dict) -> int:
    """The class's true voxels: "present" as the counts say it (validation ties true_ml to them)."""
    return int(record["tp"]) + int(record["fn"])


def known_classes(dataset: str) -> tuple | None:
    """The class names of a dataset ichbench knows (built in or installed), () for a binary one, None
    for one it does not know (a plugin not installed here: not checked)."""
    from ichbench.errors import IchbenchError
    try:
        from ichbench.datasets import get_dataset
        return tuple(get_dataset(dataset).class_names or ())
    except IchbenchError:
        return None


# the rules of `problems`, worded for a REJECT line (each followed by its volumes)
RULES = {
    "unknown": "is not one of the entry's classes ({names})",
    "missing": "has no results though it is one of the entry's classes",
    "truth": "the classes' TP + FN do not sum to the union's TP + FN (one class per voxel: the classes' true "
             "voxels are the union's)",
    "pred": "the classes' TP + FP do not sum to the union's TP + FP (one class per voxel: the classes' "
            "predicted voxels are the union's)",
    "tp": "the classes' TP sum to more than the union's TP (a voxel of the right class is a union TP)",
    "ml": "pred_ml or true_ml is not its voxel counts at the union's voxel volume",
}


def problems(entry: dict) -> list[str]:
    """Reasons to reject an entry's per-class results (after the schema passed); [] for a binary
    entry. One line per broken rule and class, naming the volumes."""
    task = entry.get("task", "binary")
    if task != configured_task(entry["config"]):
        return [f"task {task} but its config ran finetune.task = {configured_task(entry['config'])}"]
    if not is_subtypes(entry):
        return []
    names = entry["classes"]
    out = []
    known, ds = known_classes(entry["dataset"]["name"]), entry["dataset"]["name"]
    if known is not None:
        have = ", ".join(known) if known else "none: a binary dataset"
        out += [f"class {n} is not a class of dataset {ds} ({have})" for n in names if n not in known]
        out += [f"class {n} of dataset {ds} is not among the entry's classes" for n in known if n not in names]
    from ichbench.leaderboard.seeds import by_seed
    seeds = by_seed(entry)
    groups = {"": entry["per_volume"]} if not seeds else {f"seed {s} ": rows for s, rows in seeds.items()}
    broken: dict[tuple, list[str]] = {}
    for where, rows in groups.items():
        for r in rows:
            for rule, cls in _row_breaks(r, names, float(entry["nsd_mm"])):
                broken.setdefault((rule, cls), []).append(f"{where}volume {r['volume_id']}" if where else
                                                          r["volume_id"])
    lines, structural = _lines(broken, names)
    out += lines + _external_problems(entry, names)
    if structural:
        return out   # re-scoring needs each class once per row
    from ichbench.leaderboard.entries import summary_differences
    return out + summary_differences(entry["class_summary"], summary(names, entry["per_volume"]),
                                     groups={n: CLASS_GROUPS for n in names}, name="class_summary")


def _lines(broken: dict, names: list[str], head: str = "") -> tuple[list[str], bool]:
    """(one line per (rule, class) of `broken` naming its volumes, whether a row lacks or adds a class)."""
    from ichbench.leaderboard.checks import few
    from ichbench.leaderboard.surface_checks import RULES as SURFACE_RULES
    out, structural = [], False
    for (rule, cls), ids in broken.items():
        text = RULES.get(rule) or f"surface metrics: {SURFACE_RULES[rule]}"
        structural |= rule in ("unknown", "missing")
        which = f"class {cls}" if cls else f"classes ({', '.join(names)})"
        out.append(f"{head}{which}: {text.format(names=', '.join(names))}: {few(ids)}")
    return out, structural


def _external_problems(entry: dict, names: list[str]) -> list[str]:
    """An external test set's rows (`--test-on`, leaderboard.test_sets) by the rules of the entry's
    own, named by test set, fold model or ensemble, volume and class; the test set's classes (where
    ichbench knows it) are the entry's, in id order, as `orchestrate.external` required to score it."""
    out = []
    for item in entry.get("external") or []:
        name = item["dataset"]["name"]
        known = known_classes(name)
        if known is not None and list(known) != list(names):
            have = ", ".join(known) if known else "none: a binary dataset"
            out.append(f"external {name}: its classes ({have}) are not the entry's ({', '.join(names)}) in id order")
        broken: dict[tuple, list[str]] = {}
        rows = [("ensemble", r) for r in item["per_volume"]] + [(f"fold {r['fold']}", r) for r in item["fold_rows"]]
        for who, r in rows:
            for rule, cls in _row_breaks(r, names, float(entry["nsd_mm"])):
                broken.setdefault((rule, cls), []).append(f"{who} volume {r['volume_id']}")
        out += _lines(broken, names, f"external {name}: ")[0]
    return out


def _row_breaks(r: dict, names: list[str], nsd_mm: float) -> list[tuple[str, str | None]]:
    """(rule, class or None for a rule of all classes) this row breaks."""
    from ichbench.leaderboard.entries import surface_values
    from ichbench.leaderboard.surface_checks import _close, _row_breaks as surface_breaks
    got = r["classes"]
    out = [("unknown", c) for c in got if c not in names] + [("missing", c) for c in names if c not in got]
    if out:
        return out
    tp, fp, fn = int(r["tp"]), int(r["fp"]), int(r["fn"])
    if sum(c["tp"] + c["fn"] for c in got.values()) != tp + fn:
        out.append(("truth", None))
    if sum(c["tp"] + c["fp"] for c in got.values()) != tp + fp:
        out.append(("pred", None))
    if sum(c["tp"] for c in got.values()) > tp:
        out.append(("tp", None))
    voxel = r["true_ml"] / (tp + fn) if tp + fn else r["pred_ml"] / (tp + fp) if tp + fp else None
    for name in names:
        c = got[name]
        if voxel is not None and not (_close(c["pred_ml"], (c["tp"] + c["fp"]) * voxel)
                                      and _close(c["true_ml"], (c["tp"] + c["fn"]) * voxel)):
            out.append(("ml", name))
        elif voxel is None and (c["pred_ml"] or c["true_ml"]):
            out.append(("ml", name))
        if "hd_mm" in c:
            out += [(rule, name) for rule in surface_breaks(c, surface_values(c), nsd_mm) if rule != "ml"]
    return out


def reproduction_failures(entry: dict, rows: list[dict]) -> list[str]:
    """Per-class counts, mL and surface metrics of the entry against the re-run's, for each volume
    whose predicted label map is bit-identical to the entry's (the same `pred_labels_sha256`): the
    same map on the same store scores the same. One failure per volume that differs; volumes whose
    maps differ (or an entry row without a digest) are not compared: their classes move with the
    model's last bits as the union's Dice does, which the binary comparison already bounds."""
    if not is_subtypes(entry):
        return []
    from ichbench.leaderboard.reproductions import SURFACE_REL
    again = {str(r["volume_id"]): r for r in rows}
    out = []
    for r in sorted(entry["per_volume"], key=lambda r: r["volume_id"]):
        theirs = again.get(r["volume_id"])
        digest = r.get("pred_labels_sha256")
        if digest is None or theirs is None or theirs.get("pred_labels_sha256") != digest:
            continue
        other = row_fields(theirs).get("classes", {})
        wrong = []
        for name, mine in r["classes"].items():
            re_run = other.get(name)
            if re_run is None:
                wrong.append(f"{name} not scored by the re-run")
                continue
            keys = [k for k in mine if k not in re_run or not _same(mine[k], re_run[k], SURFACE_REL)]
            wrong += [f"{name} {k} {mine[k]} in the entry, {re_run.get(k)} re-run" for k in keys]
        if wrong:
            out.append(f"per-class results of volume {r['volume_id']} (fold {r['fold']}), from a label map "
                       f"bit-identical to the entry's: {'; '.join(wrong)}")
    return out


def _same(a, b, rel: float) -> bool:
    if a == b:
        return True
    if isinstance(a, str) or isinstance(b, str) or isinstance(a, int) and isinstance(b, int):
        return False
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9)
