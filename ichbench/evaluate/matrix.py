"""The train × test matrix of one method: rows the dataset it trained on, columns the dataset it
was scored on. The diagonal is the run's cross-validation (each fold model on its held-out
volumes); an off-diagonal cell is the fold ensemble of that run on the whole other dataset
(`ichbench run --test-on`, `orchestrate.external`). Built from `ichbench runs` rows and, on the
leaderboard page, from entries; one builder for both."""

from __future__ import annotations


def cell(dice, kind: str, n=None, **extra) -> dict:
    return {"dice_all": dice, "kind": kind, "n": n, **extra}


def train_test_matrix(items) -> dict[str, dict[str, dict[str, dict]]]:
    """{method: {train dataset: {test dataset: cell}}} from (method, train dataset, diagonal cell,
    {test dataset: cell}) items; the first item of a (method, train dataset) wins (newest first)."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for method, train, diagonal, external in items:
        rows = out.setdefault(method, {})
        if train in rows:
            continue
        rows[train] = {train: diagonal, **{t: c for t, c in sorted((external or {}).items()) if t != train}}
    return out


def from_runs(rows: list[dict]) -> dict:
    """The matrix of `ichbench runs --json` rows (newest first): Dice as fractions."""
    items = []
    for r in rows:
        if r.get("kind", "parent") != "parent" or r.get("dice_all") is None:
            continue
        ext = {ds: cell(e["ensemble"]["dice_all"], "external ensemble", e["ensemble"].get("n"),
                        fold_mean=e["folds"]["dice_all"], run_id=r["run_id"])
               for ds, e in (r.get("external") or {}).items()}
        items.append((r["method"], r["dataset"], cell(r["dice_all"], "cross-validation", run_id=r["run_id"]), ext))
    return train_test_matrix(items)
