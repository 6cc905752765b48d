"""External test sets in leaderboard entries (`ichbench run --test-on`, `orchestrate.external`).

An entry of schema version 3 may carry `external`: per test dataset its name and store
fingerprint, the fold ensemble's per-volume rows (`per_volume`, no fold), each fold model's rows
(`fold_rows`, `fold` = the fold model) and the two summaries they give (`summary`: the ensemble;
`fold_mean`: the mean over fold models, pooled over (fold model, volume)). Like the main rows,
the rows hold counts: validation recomputes both summaries from them (to 1e-9) and checks that
every fold model scored the same volumes as the ensemble, each once, with the entry's folds.
An entry of task subtypes keeps its rows' per-class results (`classes`, `pred_labels_sha256`),
checked by the rules of its own rows (`leaderboard.classes`).
The page shows them as the train × test matrix (`evaluate.matrix`), a subtypes entry's cells
with its macro Dice over classes.
"""

from __future__ import annotations

import copy

MAX_TEST_SETS = 20


def schema(row_schema: dict, name: dict, hex64: dict, group: dict, surface_keys) -> dict:
    """The JSON Schema of `external`, from the entry schema's own parts (schema.py); its rows
    carry the surface metrics, as every row of a version 3 entry does."""
    row = copy.deepcopy(row_schema)
    row["required"] = [k for k in row["required"] if k != "fold"] + list(surface_keys)
    ens_row = copy.deepcopy(row)
    ens_row["properties"].pop("fold")
    summary = {"type": "object", "additionalProperties": False, "required": ["all", "ich"],
               "properties": {"all": group, "ich": group}}
    return {"type": "array", "minItems": 1, "maxItems": MAX_TEST_SETS,
            "description": "ichbench run --test-on: the run's fold models and their ensemble on other datasets",
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["dataset", "per_volume", "fold_rows", "summary", "fold_mean"],
                      "properties": {
                          "dataset": {"type": "object", "additionalProperties": False,
                                      "required": ["name", "fingerprint"],
                                      "properties": {"name": name, "fingerprint": hex64}},
                          "per_volume": {"type": "array", "minItems": 1, "maxItems": 20_000, "items": ens_row},
                          "fold_rows": {"type": "array", "minItems": 1, "maxItems": 200_000,
                                        "items": {**row, "required": [*row["required"], "fold"]}},
                          "summary": summary, "fold_mean": summary}}}


def _pooled(fold_rows: list[dict]) -> list[dict]:
    # one row per (fold model, volume), as orchestrate.external.summaries pools them
    return [dict(r, volume_id=f"{r['volume_id']}@fold{r['fold']}") for r in fold_rows]


def build(dataset: str, fingerprint: str, artifact: dict) -> dict:
    """The `external` item of one test set from the run's `external/<D2>.json` artifact."""
    from ichbench.leaderboard.classes import row_fields
    from ichbench.leaderboard.entries import entry_row, rescore

    def row(r: dict, fold: int) -> dict:   # a subtypes run's rows keep their classes, as the entry's own do
        return {**entry_row(dict(r, fold=fold)), **row_fields(r)}

    ens = sorted((row(r, 0) for r in artifact["ensemble"]), key=lambda r: r["volume_id"])
    for r in ens:
        r.pop("fold")   # the ensemble is every fold model at once
    folds = sorted((row(r, int(f)) for f, rows in artifact["folds"].items() for r in rows),
                   key=lambda r: (r["fold"], r["volume_id"]))
    return {"dataset": {"name": dataset, "fingerprint": fingerprint}, "per_volume": ens, "fold_rows": folds,
            "summary": rescore(ens), "fold_mean": rescore(_pooled(folds))}


def problems(entry: dict) -> list[str]:
    """Reasons to reject an entry's `external` (after the schema passed)."""
    from ichbench.leaderboard.entries import rescore, summary_differences
    out = []
    seen = set()
    folds = {int(f["fold"]) for f in entry.get("folds") or []}
    for item in entry.get("external") or []:
        name = item["dataset"]["name"]
        where = f"external {name}"
        if name == entry["dataset"]["name"]:
            out.append(f"{where}: the entry's own dataset is its cross-validation, not an external test set")
        if name in seen:
            out.append(f"{where}: listed twice")
        seen.add(name)
        ids = [r["volume_id"] for r in item["per_volume"]]
        twice = sorted({v for v in ids if ids.count(v) > 1})
        if twice:
            out.append(f"{where}: volume(s) {', '.join(twice[:5])} scored twice by the ensemble")
            continue
        by_fold: dict[int, list[str]] = {}
        for r in item["fold_rows"]:
            by_fold.setdefault(int(r["fold"]), []).append(r["volume_id"])
        if folds and set(by_fold) != folds:
            out.append(f"{where}: fold rows of fold models {sorted(by_fold)}, but the entry has folds {sorted(folds)}")
        bad = [f for f, v in sorted(by_fold.items()) if sorted(v) != sorted(ids)]
        if bad:
            out.append(f"{where}: fold model(s) {bad} did not score exactly the ensemble's volumes, each once")
            continue
        out += [f"{where} ensemble: {p}" for p in summary_differences(item["summary"], rescore(item["per_volume"]))]
        out += [f"{where} fold mean: {p}" for p in summary_differences(item["fold_mean"],
                                                                        rescore(_pooled(item["fold_rows"])))]
    return out


def matrix_items(entries: dict) -> list:
    """(method, train dataset, diagonal cell, {test dataset: cell}) of the accepted entries of the
    methods with external results, those with them first, then newest first: the input of
    `evaluate.matrix.train_test_matrix` for the page."""
    from ichbench.evaluate.matrix import cell
    from ichbench.leaderboard.class_table import row_classes, test_set_macro
    tested = {e["method"] for e in entries.values() if e.get("external")}
    out = []
    for path, e in sorted(entries.items(), key=lambda kv: (bool(kv[1].get("external")), kv[1].get("date", "")),
                          reverse=True):
        if e["method"] not in tested:
            continue
        # a subtypes entry's cells add the macro Dice over classes [%] (class_table), None for a binary one
        ext = {i["dataset"]["name"]: cell(i["summary"]["all"]["dice"]["mean"], "external ensemble",
                                          i["summary"]["all"]["n"], fold_mean=i["fold_mean"]["all"]["dice"]["mean"],
                                          entry=path, macro_dice_pct=test_set_macro(e, i))
               for i in e.get("external") or []}
        own = row_classes(e)
        diag = cell(e["summary"]["all"]["dice"]["mean"], "cross-validation", e["summary"]["all"]["n"], entry=path,
                    macro_dice_pct=own and own["macro"]["present"]["mean"])
        out.append((e["method"], e["dataset"]["name"], diag, ext))
    return out


def from_run(client, run, tmp: str, where: str) -> list[dict] | None:
    """The `external` of a parent run with --test-on results (its `test_on` tag), else None."""
    from pathlib import Path

    from ichbench.leaderboard.jsonio import read_json
    from ichbench.tracking.mlflow_store import TAG
    names = [n for n in (run.data.tags.get(f"{TAG}test_on") or "").split(",") if n]
    out = []
    for name in names:
        try:
            local = client.download_artifacts(run.info.run_id, f"external/{name}.json", tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            from ichbench.leaderboard.submit import SubmitRejected
            raise SubmitRejected(where, [f"artifact external/{name}.json missing (tag {TAG}test_on names it)"]) \
                from None
        art = read_json(Path(local), shown=f"{where}/external/{name}.json")
        out.append(build(name, art["store_fingerprint"], art))
    return out or None
