"""Who an entry says its method comes from, and whether it may say so.

A built-in method's name (the paper's ten) belongs to the ichbench distribution: an entry naming
one must come from ichbench itself, or anyone could publish forged numbers under the paper's row
labels. An entry that says it comes from ichbench must name one of ichbench's methods. The page
shows the distribution beside every other method. Nor may an entry claim, under a new run id,
per-volume numbers already on the leaderboard (`duplicate_problem`; which entry was there first
is history.py's to say).
"""

from __future__ import annotations

from functools import lru_cache

from ichbench.leaderboard.entries import numbers_key, submission_id
from ichbench.leaderboard.history import FALLBACK
from ichbench.leaderboard.schema import EXTERNAL_TOOL

OWN_DIST = "ichbench"


@lru_cache(maxsize=1)
def builtin_methods() -> frozenset[str]:
    """The methods ichbench's own distribution registers (not what installed plugins add)."""
    from ichbench.methods.builtin import MODULES
    return frozenset(m.name for module in MODULES for m in module.METHODS)


def distribution_of(entry: dict) -> tuple[str | None, str | None]:
    plugin = entry.get("plugin") or {}
    return plugin.get("distribution"), plugin.get("version")


def from_ichbench(entry: dict) -> bool:
    dist, _ = distribution_of(entry)
    return (dist or "").lower() == OWN_DIST


def is_builtin(entry: dict) -> bool:
    """A built-in method as ichbench itself ran it (the page shows no distribution beside it)."""
    return entry["method"] in builtin_methods() and from_ichbench(entry)


def claim_problems(entry: dict) -> list[str]:
    method = entry["method"]
    dist, version = distribution_of(entry)
    shown = " ".join(str(x) for x in (dist, version) if x) or "an unnamed distribution"
    if entry.get("kind") == EXTERNAL_TOOL:
        return _external_problems(entry, shown)
    if method in builtin_methods() and not from_ichbench(entry):
        return [f"method {method!r} is built into ichbench, but the entry says it comes from "
                f"{shown}: a plugin's method needs a name of its own"]
    if method not in builtin_methods() and from_ichbench(entry):
        return [f"method {method!r} is not one of ichbench's built-in methods, but the entry says "
                f"it comes from {shown}: name the plugin distribution that registers it"]
    return []


def _external_problems(entry: dict, shown: str) -> list[str]:
    """An external tool's entry is never ichbench's (its numbers are self-reported: no built-in
    method's label), and its id is the digest of its predictions (`entries.submission_id`), so
    the same masks cannot come back under another id."""
    if from_ichbench(entry) or entry["method"] in builtin_methods():
        return [f"method {entry['method']!r} from {shown} is an external tool's entry: it needs a name "
                "of its own, not one of ichbench's built-in methods, and its tool is not the ichbench "
                "distribution"]
    want = submission_id(entry)
    if entry["mlflow_run_id"] != want:
        return [f"an external tool's entry is identified by the digest of its predictions, {want}, "
                f"not {entry['mlflow_run_id']!r}"]
    return []


def _numbers_of(entry) -> str | None:
    try:
        return numbers_key(entry)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def duplicate_problem(entry: dict, shown: str, candidates: dict[str, dict], order=None) -> str | None:
    """The same per-volume numbers under another MLflow run id, in an entry that was on the
    leaderboard before this one (`order`: a history.Order; by default the recorded dates, then
    the paths): one line naming the first such entry; None when there is none."""
    order = order or FALLBACK
    key = numbers_key(entry)
    mine = order.key(shown, entry)
    earlier = sorted((order.key(where, o), where) for where, o in candidates.items()
                     if where != shown and isinstance(o, dict)
                     and o.get("mlflow_run_id") != entry["mlflow_run_id"]
                     and _numbers_of(o) == key and order.key(where, o) < mine)
    if not earlier:
        return None
    where = earlier[0][1]
    run, date = candidates[where].get("mlflow_run_id"), candidates[where].get("date")
    return (f"duplicate: the same per-volume counts as {where} (MLflow run {run}, {date}), "
            "submitted under another run id")
