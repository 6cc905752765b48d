"""`ichbench leaderboard submit --predictions DIR`: an entry from another tool's masks.

The tool trained on the canonical folds (`ichbench data export-folds`) and predicted each volume
with the fold model that held it out. ichbench checks the masks against the canonical split and the
store's grid, scores them with the code runs are scored with (`evaluate.summary.per_volume_row` on
the store's masks and spacing, so the rows carry counts and the schema-v3 surface metrics) and
writes an entry of kind "external-tool", shown as "self-reported, external tool": its numbers are
ichbench's, its training is not. Nothing is written unless every volume passes and the entry
validates; each refusal is one line naming the volume (docs/leaderboard.md, "Entries from any
tool's predictions").

Layout of DIR: `fold_<i>/<volume id>.nii.gz` (or nnU-Net's `fold_<i>/validation/...`), the folder
naming the fold that predicted it; or flat `<volume id>.nii.gz`, each volume then predicted by the
fold of `--split FILE` (the folds.json or splits_final.json the tool trained from), else by its
canonical fold. `.nii` too. Masks are 0/1, on the store's grid (shape and spacing of the exported
image; axis flips and permutations are undone, nothing is resampled). With `--task subtypes` (a
store with classes) each file is a label map instead: 0 background, k the store's class k (the ids
`ichbench data export-folds --task subtypes` wrote), scored per class as a subtypes run is.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from ichbench.errors import IchbenchError, InputError
from ichbench.evaluate.digest import fold_digest, volume_digest
from ichbench.evaluate.summary import NSD_MM, per_volume_row
from ichbench.export.folds import TASKS
from ichbench.leaderboard.classes import SUBTYPES
from ichbench.leaderboard.entries import build_entry, submission_id
from ichbench.leaderboard.paths import Folder
from ichbench.leaderboard.schema import EXTERNAL_TOOL
from ichbench.leaderboard.submit import SubmitRejected, write_checked

FOLD_DIR = re.compile(r"^fold_(\d{1,2})$")
NNUNET_SUBDIR = "validation"   # nnU-Net writes a fold's held-out predictions there
SHOWN = 5                      # volumes named in one line


def _few(ids) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def find_predictions(pred_dir: Path) -> tuple[dict, list[str]]:
    """({volume id: (path, fold or None)}, problems): the masks of DIR by the layout above."""
    from ichbench.export.mask_files import case_name
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise IchbenchError(f"--predictions {pred_dir}: {'is not a folder' if pred_dir.exists() else 'no such folder'}")
    found: dict[str, list[tuple[Path, int | None]]] = {}

    def scan(folder: Path, fold: int | None) -> None:
        for p in sorted(folder.iterdir()):
            name = case_name(p) if p.is_file() else None
            if name is not None:
                found.setdefault(name, []).append((p, fold))

    scan(pred_dir, None)
    for sub in sorted(p for p in pred_dir.iterdir() if p.is_dir() and FOLD_DIR.match(p.name)):
        fold = int(FOLD_DIR.match(sub.name).group(1))
        scan(sub, fold)
        if (sub / NNUNET_SUBDIR).is_dir():
            scan(sub / NNUNET_SUBDIR, fold)
    problems = [f"volume {vid}: predicted {len(paths)} times "
                f"({', '.join(str(p.relative_to(pred_dir)) for p, _ in paths)}); keep one"
                for vid, paths in sorted(found.items()) if len(paths) > 1]
    # a volume given twice is named once, as such (not also as missing); its problem stops the submission
    return {vid: paths[0] if len(paths) == 1 else (paths[0][0], None) for vid, paths in found.items()}, problems


def read_split_file(path: Path) -> list[dict]:
    """[{"fold", "train", "test"}] from ichbench's folds.json or nnU-Net's splits_final.json."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable split file ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict) and isinstance(data.get("folds"), list):
        folds = data["folds"]
    elif isinstance(data, list):   # nnU-Net: per fold {"train", "val"}
        folds = [{"fold": i, "train": f.get("train"), "test": f.get("val")} if isinstance(f, dict) else None
                 for i, f in enumerate(data)]
    else:
        folds = None
    ok = isinstance(folds, list) and folds and all(
        isinstance(f, dict) and all(isinstance(f.get(key), list) and all(isinstance(v, str) for v in f[key])
                                    for key in ("train", "test")) for f in folds)
    if not ok:
        raise InputError(path, "not a split file: expected ichbench's folds.json ({\"folds\": [{\"fold\", "
                               "\"train\", \"test\"}]}) or nnU-Net's splits_final.json ([{\"train\", \"val\"}])")
    return [{"fold": int(f.get("fold", i)), "train": f["train"], "test": f["test"]} for i, f in enumerate(folds)]


def split_problems(given: list[dict], canonical: dict, shown: str) -> list[str]:
    """Where the split a tool trained from is not the canonical one: one line per volume (the
    first few), or one for a different number of folds."""
    k = canonical["k"]
    if sorted(f["fold"] for f in given) != list(range(k)):
        return [f"{shown}: folds {sorted(f['fold'] for f in given)}, but the canonical split has k = {k} "
                f"(folds 0..{k - 1}; --k picks another canonical k)"]
    canon_fold = {v: f["fold"] for f in canonical["folds"] for v in f["test"]}
    held: dict[str, list[int]] = {}
    for f in given:
        for v in f["test"]:
            held.setdefault(v, []).append(f["fold"])
    out = []
    for vid in sorted(set(held) | set(canon_fold)):
        got, want = sorted(held.get(vid, [])), canon_fold.get(vid)
        if want is None:
            out.append(f"volume {vid}: {shown} holds it out, but it is not a volume of the canonical split")
        elif got != [want]:
            where = f"in fold{'s' if len(got) > 1 else ''} {', '.join(map(str, got))}" if got else "in no fold"
            out.append(f"volume {vid}: {shown} holds it out {where}, the canonical split (k = {k}, "
                       f"{canonical['hash'][:12]}…) in fold {want}")
    if not out:   # the held-out sets are canonical: each fold trains on every other volume, none held out
        for f in sorted(given, key=lambda f: f["fold"]):
            test, train = set(f["test"]), set(f["train"])
            for vid in sorted(train ^ (set(canon_fold) - test)):
                why = ("trains on it and holds it out" if vid in test else "trains on it, not a volume of "
                       "the canonical split" if vid not in canon_fold else "does not train on it")
                out.append(f"volume {vid}: {shown} {why} in fold {f['fold']} (a canonical fold trains on "
                           "every volume it does not hold out)")
    return out[:SHOWN] + ([f"{shown}: {len(out) - SHOWN} more volumes differ from the canonical split"]
                          if len(out) > SHOWN else [])


def layout_problems(found: dict, canonical: dict, given_fold: dict | None, pred_dir: Path) -> list[str]:
    """Every canonical volume predicted exactly once, nothing else, each by its canonical fold."""
    fold_of = {v: f["fold"] for f in canonical["folds"] for v in f["test"]}
    out = []
    missing, extra = sorted(set(fold_of) - set(found)), sorted(set(found) - set(fold_of))
    if missing:
        out.append(f"no prediction for volume{'s' if len(missing) > 1 else ''} {_few(missing)} "
                   f"({len(missing)} of {len(fold_of)}): every volume of the dataset needs one")
    if extra:
        out.append(f"volume{'s' if len(extra) > 1 else ''} {_few(extra)} not in the dataset's canonical split "
                   f"(files {_few(str(found[v][0].name) for v in extra)}): predict the dataset's volumes only")
    for vid in sorted(set(found) & set(fold_of)):
        path, fold = found[vid]
        if fold is None and given_fold is not None:
            fold = given_fold.get(vid)
        if fold is not None and fold != fold_of[vid]:
            out.append(f"volume {vid}: predicted by fold {fold} ({path.relative_to(pred_dir)}), but fold "
                       f"{fold_of[vid]} holds it out in the canonical split (k = {canonical['k']}): each volume "
                       "comes from the fold model that held it out")
    return out


def score_predictions(store, found: dict, canonical: dict, nsd_mm: float = NSD_MM, on_volume=None,
                      class_names: list[str] | None = None):
    """(rows, problems): each volume's per-volume row against the store's mask, with its fold and
    `pred_sha256`; one problem line per volume whose mask cannot be scored. With `class_names` (the
    subtypes task) each file is a label map (0 background, k the store's class k) scored as runs
    score theirs: the union at the top, then per class (`evaluate.classes.class_row_fields`)."""
    from ichbench.evaluate.classes import class_row_fields
    from ichbench.export.folds import volume_rows
    from ichbench.export.nifti import read_mask_on_grid
    labels = {name: k for k, name in enumerate(class_names, start=1)} if class_names else None
    fold_of = {v: f["fold"] for f in canonical["folds"] for v in f["test"]}
    meta = {v["id"]: v for v in store.volumes}
    where = volume_rows(store)
    size = tuple(store["masks"].shape[1:])
    rows, problems = [], []
    for vid in sorted(fold_of):
        spacing = tuple(float(s) for s in meta[vid]["spacing"])
        try:
            pred = read_mask_on_grid(found[vid][0], (len(where[vid]), *size), spacing, labels)
        except InputError as exc:
            problems.append(f"volume {vid}: {exc.path}: {exc.problem}")
            continue
        finally:
            if on_volume:
                on_volume(vid)
        truth = store.read("masks", where[vid]) > 0
        union = pred > 0
        row = per_volume_row(vid, union, truth, spacing, meta[vid].get("subtypes"),
                             has_ich=meta[vid].get("has_ich"), nsd_mm=nsd_mm)
        if labels:
            row.update(class_row_fields(pred, store.read("classes", where[vid]), class_names, spacing, nsd_mm))
        rows.append({**row, "fold": fold_of[vid], "pred_sha256": volume_digest(union)})
    return rows, problems


def entry_from_predictions(home: Path, pred_dir: Path, dataset: str, method: str, code_url: str | None,
                           k: int | None = None, split_file: Path | None = None, tool: str | None = None,
                           tool_version: str | None = None, on_volume=None, task: str = "binary") -> dict:
    """The entry of `pred_dir`'s masks (`task` "binary"), or label maps of the store's classes
    (`task` "subtypes": an entry of that task, `leaderboard.classes`)."""
    from ichbench import __version__
    from ichbench.export.folds import canonical_split
    from ichbench.store import open_store, store_path
    from ichbench.tracking.records import git_commit

    where = f"predictions {pred_dir}"
    path = store_path(home, dataset, "segmentation")
    if not path.exists():
        raise IchbenchError(f"{dataset}/segmentation: no store yet at {path} (`ichbench data ingest {dataset}`): "
                            "external predictions are scored against it")
    store = open_store(path)
    if task not in TASKS:
        raise IchbenchError(f"--task {task}: not a task; choose {' or '.join(TASKS)}")
    class_names = list(store.class_names or []) if task == SUBTYPES else None
    if task == SUBTYPES and not class_names:
        raise IchbenchError(f"--task subtypes: {path} has no class map (a binary store): label maps are scored "
                            f"against the store's classes; submit {dataset}'s masks without --task")
    given = read_split_file(split_file) if split_file else None
    if given is not None and k is None:
        k = len(given)
    canonical = canonical_split(store, dataset, k)
    problems = split_problems(given, canonical, f"--split {split_file}") if given else []
    if problems:   # the folds the masks came from are not the canonical ones: nothing else to say
        raise SubmitRejected(where, problems)
    found, twice = find_predictions(pred_dir)
    given_fold = {v: f["fold"] for f in given for v in f["test"]} if given else None
    problems += twice + layout_problems(found, canonical, given_fold, Path(pred_dir))
    if problems:
        raise SubmitRejected(where, problems)
    rows, problems = score_predictions(store, found, canonical, NSD_MM, on_volume, class_names)
    if problems:
        raise SubmitRejected(where, problems)
    folds = [{"fold": f["fold"], "model_sha256": None, "numerics": {},
              "predictions_sha256": fold_digest([r for r in rows if r["fold"] == f["fold"]])}
             for f in canonical["folds"]]
    ident = submission_id({"dataset": {"name": dataset}, "split": {"k": canonical["k"]}, "folds": folds})
    commit = git_commit()
    entry = build_entry(
        method=method, plugin_dist=tool, plugin_version=tool_version, dataset=dataset,
        fingerprint=store.fingerprint, split_hash=canonical["hash"], k=canonical["k"], profile="external",
        # a subtypes entry's config says its task, as a run's does (validation ties the two)
        config={"finetune": {"task": SUBTYPES}} if class_names else {}, per_volume=rows,
        ichbench_version=__version__, hardware=None, gpu_hours=None, run_id=ident,
        date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        code_url=code_url, code_commit=None, nsd_mm=NSD_MM,
        ichbench_commit=None if commit == "unknown" else commit, folds=folds)
    return {**entry, "kind": EXTERNAL_TOOL}


def submit_predictions(folder: Folder, home: Path, pred_dir: Path, dataset: str, method: str,
                       code_url: str | None, **kwargs) -> Path:
    """Check, score and write an external tool's entry; SubmitRejected (nothing written) else."""
    entry = entry_from_predictions(home, pred_dir, dataset, method, code_url, **kwargs)
    return write_checked(folder, entry, f"predictions {pred_dir}")
