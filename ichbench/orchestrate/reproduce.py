"""`ichbench leaderboard reproduce ENTRY`: re-run an entry's recorded config and compare.

The entry's config is rebuilt (`recorded_config`), planned on this workspace's store of the same
dataset (its fingerprint must be the entry's, and so then is the split) and run by the same driver
as `ichbench run`, pretraining included, in a folder of its own (`$ICHBENCH_HOME/reproductions/`,
tracked in `reproductions/mlflow.db`) so that nothing of an earlier `ichbench run` is reused.
Every re-scored volume's Dice is compared with the Dice of the entry's counts: each within
`tolerance_for(n)["volume"]`, their mean within `["mean"]` (docs/leaderboard.md says how these
were measured). The comparison is appended to the records beside the entry, pass or fail.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.leaderboard import canonical as canon
from ichbench.leaderboard import reproductions
from ichbench.leaderboard.classes import reproduction_failures as class_failures
from ichbench.leaderboard.checks import check_entry
from ichbench.leaderboard.entries import ratios, row_has_ich
from ichbench.leaderboard.jsonio import read_json
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.recorded_config import ConfigNotRebuilt, rebuild
from ichbench.leaderboard.reproductions import tolerance_for

NUMERICS = ("cpu_threads", "cpu_capability", "gpu")
console = Console(stderr=True, soft_wrap=True, highlight=False)


class NotReproduced(IchbenchError):
    """The entry could not be re-run here (one line naming the entry file)."""


@dataclass
class Reproduction:
    record: dict
    path: Path      # the records file beside the entry

    @property
    def passed(self) -> bool:
        return self.record["passed"]


def who() -> str:
    """The reproducer: git's user.name <user.email>, else $USER."""
    def git(key: str) -> str:
        try:
            out = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""
    name, email = git("user.name"), git("user.email")
    if name:
        return f"{name} <{email}>" if email else name
    try:
        return os.environ.get("USER") or getpass.getuser() or "unknown"
    except (OSError, KeyError):
        return "unknown"


def _now() -> str:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def _location(folder: Folder, path: Path) -> Path | None:
    try:
        return path.resolve().relative_to(folder.root.resolve())
    except ValueError:
        return None   # a copy outside the leaderboard folder: checked, but not for its place


def _same_dist(a: str | None, b: str | None) -> bool:
    def norm(s):
        return (s or "").lower().replace("_", "-").replace(".", "-")
    return norm(a) == norm(b)


def prepare(entry_path: Path, folder: Folder, home: Path, folds: list[int] | None = None):
    """Everything refused before any training: (entry, plan, folds, filled config keys)."""
    from ichbench.methods.base import get_method
    from ichbench.orchestrate.plan import _refuse_reuse_on_damage, plan_config
    from ichbench.plugins import get_registry

    entry_path = Path(entry_path)
    shown = folder.rel(entry_path)

    def refuse(why: str):
        raise NotReproduced(f"{shown}: not reproduced: {why}")

    entry = read_json(entry_path, shown=shown)
    if not isinstance(entry, dict):
        refuse("an entry is a JSON object")
    data = canon.load(folder)
    name = entry.get("dataset", {}).get("name") if isinstance(entry.get("dataset"), dict) else None
    problems = check_entry(entry, canon.expectation(data, str(name)), _location(folder, entry_path))
    if problems:
        refuse(f"it does not validate: {problems[0]}")
    if entry.get("kind") == "external-tool":   # leaderboard.schema.EXTERNAL_TOOL
        refuse("an external tool's entry: ichbench scored its predictions but never ran its training, "
               "so there is nothing to re-run (docs/leaderboard.md, \"Three kinds of entry\")")
    method, k = entry["method"], entry["split"]["k"]
    try:
        m = get_method(method)
    except IchbenchError:
        dist = entry["plugin"]["distribution"] or "its plugin"
        version = entry["plugin"]["version"] or ""
        refuse(f"method {method!r} is not installed here (install {f'{dist} {version}'.strip()})")
    owner = get_registry().owner("methods", method)
    if not _same_dist(owner.distribution, entry["plugin"]["distribution"]):
        refuse(f"method {method!r} comes from {owner.distribution} here, but the entry's from "
               f"{entry['plugin']['distribution']}")
    filled: list[str] = []
    try:
        cfg = rebuild(entry["config"], filled)
    except ConfigNotRebuilt as exc:
        refuse(str(exc))
    for key, want in (("method", method), ("dataset", name), ("profile", entry["profile"])):
        if getattr(cfg, key) != want:
            refuse(f"its config says {key} {getattr(cfg, key)!r}, the entry {want!r}")
    chosen = sorted(set(folds)) if folds else list(range(k))
    bad = [f for f in chosen if not 0 <= f < k]
    if bad:
        refuse(f"--folds {', '.join(map(str, bad))} out of range for k = {k} (0..{k - 1})")
    plan = plan_config(m, cfg, home, folds=chosen, k=k, pretrain_chosen=True)
    if plan.store.fingerprint != entry["dataset"]["fingerprint"]:
        refuse(f"the {name} store here ({plan.store.path}, fingerprint "
               f"{plan.store.fingerprint[:12]}…) is not the one the entry was scored on "
               f"(fingerprint {entry['dataset']['fingerprint'][:12]}…)")
    if plan.split["hash"] != entry["split"]["hash"]:
        refuse(f"the {name} split for k = {k} here ({plan.split['hash'][:12]}…) is not the "
               "entry's "
               f"({entry['split']['hash'][:12]}…)")
    plan = _own_folders(plan, home, entry)
    # an earlier reproduction's finished folds are reused only on a store that still verifies
    _refuse_reuse_on_damage(plan.store, [f for f in chosen
                                         if (plan.fold_dir(f) / "result.json").exists()])
    return entry, plan, chosen, filled, owner


def _own_folders(plan, home: Path, entry: dict):
    """The plan, with every cache slot moved under reproductions/: nothing an earlier `ichbench
    run` left is reused (an earlier reproduction of the same entry is: rerunning resumes it)."""
    root = Path(home) / "reproductions" / entry["dataset"]["name"] / \
        f"{entry['method']}--{entry['mlflow_run_id'][:8]}"
    changes = {"run_dir": root / f"{plan.cfg.profile}-{plan.run_key[:12]}"}
    if plan.pretrain_dir is not None:
        changes["pretrain_dir"] = root / "pretrained" / plan.pretrain_dir.name
    if plan.icm is not None:
        changes["icm"] = dataclasses.replace(plan.icm, dir=root / "icm" / plan.icm.dir.name)
    return dataclasses.replace(plan, **changes)


def compare(entry: dict, rows: list[dict], folds: list[int]):
    """Per-volume Dice of the entry's counts against the re-run's, over the chosen folds:
    (volumes, tolerance, mean delta, failures)."""
    again = {str(r["volume_id"]): r for r in rows}
    volumes, missing = [], []
    for r in sorted(entry["per_volume"], key=lambda r: r["volume_id"]):
        if r["fold"] not in folds:
            continue
        if r["volume_id"] not in again:
            missing.append(r["volume_id"])
            continue
        mine = again[r["volume_id"]]
        tp, fp, fn = int(mine["tp"]), int(mine["fp"]), int(mine["fn"])
        a, b = ratios(r["tp"], r["fp"], r["fn"])["dice"], ratios(tp, fp, fn)["dice"]
        volumes.append({"volume_id": r["volume_id"], "fold": r["fold"], "dice_entry": a,
                        "dice_reproduced": b, "delta": b - a, "has_ich": row_has_ich(r),
                        "fp_entry": int(r["fp"]), "fp_reproduced": fp})
    tolerance = tolerance_for(sum(v["has_ich"] for v in volumes), entry)   # an entry's seed spread widens it
    mean, failures = reproductions.verdict(volumes, tolerance, missing)
    return volumes, tolerance, mean, failures


def numerics_notes(entry: dict, done: list[dict]) -> list[str]:
    """Where the re-run's numerics differ from the entry's: what to expect of the comparison."""
    claimed = {f["fold"]: f.get("numerics") or {} for f in entry.get("folds", ())}
    out = []
    for f in done:
        theirs, ours = claimed.get(f["fold"]), f["numerics"]
        if theirs is None:
            continue
        there, here = ("a GPU" if n.get("gpu") else "the CPU" for n in (theirs, ours))
        if there != here:
            out.append(f"fold {f['fold']} ran on {there} for the entry and on {here} here: across "
                       "device kinds expect differences of the order of seed-to-seed spread "
                       "(docs/leaderboard.md, \"Reproducing an entry\")")
        elif any(theirs.get(k) != ours.get(k) for k in NUMERICS):
            out.append(f"fold {f['fold']} numerics differ from the entry's ({_numerics(theirs)} "
                       f"there, {_numerics(ours)} here): compared within the tolerances")
    return out


def _numerics(n: dict) -> str:
    return ", ".join(f"{k} {n.get(k)}" for k in NUMERICS if n.get(k))


def _fold_records(entry: dict, plan, chosen: list[int]) -> list[dict]:
    """Per re-run fold: its numerics, its model and predictions digests, and whether the
    predictions are bit for bit the entry's."""
    claimed = {f["fold"]: f["predictions_sha256"] for f in entry.get("folds", ())}
    out = []
    for f in chosen:
        res = json.loads((plan.fold_dir(f) / "result.json").read_text())
        mine = res["predictions_sha256"]
        numerics = {k: res.get(k) for k in ("cpu_threads", "cpu_capability", "gpu", "device")}
        model = (res.get("model") or {}).get("sha256")
        out.append({"fold": f, "model_sha256": model, "predictions_sha256": mine,
                    "numerics": numerics,
                    "predictions_identical": claimed[f] == mine if f in claimed else None})
    return out


def reproduce(entry_path: Path, folder: Folder, home: Path, folds: list[int] | None = None,
              address: str | None = None) -> Reproduction:
    from ichbench.orchestrate.driver import Driver
    from ichbench.tracking import Tracker
    from ichbench.tracking.records import git_commit, hardware

    entry, plan, chosen, filled, owner = prepare(entry_path, folder, home, folds)
    shown = folder.rel(Path(entry_path))
    which = f"fold{'s' if len(chosen) > 1 else ''} {', '.join(map(str, chosen))}"
    console.print(f"reproducing {shown}: {entry['method']} on {entry['dataset']['name']}, "
                  f"{which} of k = {entry['split']['k']}, in {plan.run_dir}")
    if filled:
        console.print(f"the entry's config predates {len(filled)} setting(s); running with "
                      f"{', '.join(filled)}")
    root = Path(home) / "reproductions"
    root.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(f"sqlite:///{root.resolve() / 'mlflow.db'}", root)
    driver = Driver(tracker, address=address)
    outcome = driver.run(plan)
    volumes, tolerance, mean, failures = compare(entry, outcome.rows, chosen)
    folds_done = _fold_records(entry, plan, chosen)
    # HD, HD95, NSD: checked where the predictions are bit-identical (leaderboard/reproductions.py)
    failures += reproductions.surface_failures(entry, outcome.rows, folds_done)
    # per-class results (task subtypes): where the volume's label map is bit-identical (leaderboard/classes.py)
    failures += class_failures(entry, outcome.rows)
    for line in numerics_notes(entry, folds_done):
        console.print(line)
    commit = git_commit()
    record = {"entry_sha256": reproductions.entry_sha256(entry), "who": who(), "date": _now(),
              "ichbench_version": __version__,
              "ichbench_commit": None if commit == "unknown" else commit,
              "plugin_version": owner.version, "hardware": hardware(driver.resources),
              "folds": folds_done, "config_filled": filled,
              "tolerance": tolerance, "volumes": volumes, "mean_delta": mean,
              "passed": not failures, "failures": failures}
    path = reproductions.append(Path(entry_path), entry, record)
    return Reproduction(record, path)
