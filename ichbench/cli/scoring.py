"""`ichbench score`'s files: any tool's NIfTI masks against true masks, folder against folder (docs/score.md).

Cases are matched by file name. Each case is scored or refused on its own (one line naming the file
and the problem), so one bad file never costs the others their scores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ichbench.errors import IchbenchError, InputError
from ichbench.evaluate.agreement import volume_agreement
from ichbench.evaluate.classes import class_case_metrics, summarize_classes
from ichbench.evaluate.summary import CAPPED, metric_stats
from ichbench.evaluate.surface import case_metrics
# the NIfTI mask reading `leaderboard submit --predictions` shares (ichbench/export/mask_files.py)
from ichbench.export.mask_files import SUFFIXES, case_name, read_mask  # noqa: F401 - SUFFIXES re-exported

PREDICT_MASK = "mask.nii.gz"   # what `ichbench predict --output DIR` writes into DIR
# every per-case number, in the order the JSON and the table give them
CASE_KEYS = ("dice", "precision", "recall", "hd_mm", "hd95_mm", "nsd", "abs_rvd", "rvd", "pred_ml", "true_ml",
             "vol_err_ml", "abs_vol_err_ml", "tp", "fp", "fn")
SUMMARY_KEYS = ("dice", "precision", "recall", "hd_mm", "hd95_mm", "nsd", "abs_rvd", "vol_err_ml",
                "abs_vol_err_ml", "pred_ml", "true_ml")
AFFINE_ATOL_MM = 1e-3   # headers store the affine as float32: equal grids differ by ~1e-5 mm


def _nifti_files(folder: Path, what: str, predict_outputs: bool) -> tuple[dict, list]:
    """{case: path} of a folder's NIfTI files (and, for predictions, of `CASE/mask.nii.gz`
    predict outputs), and [(case, path, problem)] for names given twice."""
    if not folder.is_dir():
        raise IchbenchError(f"{what} {folder}: {'is not a folder' if folder.exists() else 'no such folder'}")
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        name = case_name(entry) if entry.is_file() else None
        if predict_outputs and entry.is_dir() and (entry / PREDICT_MASK).is_file():
            name, entry = entry.name, entry / PREDICT_MASK
        if name is not None:
            found.setdefault(name, []).append(entry)
    cases = {c: paths[0] for c, paths in found.items() if len(paths) == 1}
    twice = [(c, paths[0], f"{len(paths)} files name this case ({', '.join(p.name for p in paths)}); "
                           "keep one") for c, paths in found.items() if len(paths) > 1]
    return cases, twice


def match(pred_dir: Path, truth_dir: Path, missing_as_empty: bool = False):
    """([(case, pred path or None, truth path)], [(case, path, problem)]) for two folders."""
    preds, refused = _nifti_files(pred_dir, "--pred", predict_outputs=True)
    truths, twice = _nifti_files(truth_dir, "--truth", predict_outputs=False)
    refused += twice
    if not preds and not truths and not refused:
        raise IchbenchError(f"no NIfTI masks (*.nii.gz, *.nii) in --pred {pred_dir} or --truth {truth_dir}")
    pairs, named_twice = [], {c for c, _, _ in refused}
    for case in sorted((set(preds) | set(truths)) - named_twice):
        if case not in truths:
            refused.append((case, preds[case], f"no truth {case}.nii.gz in {truth_dir}"))
        elif case not in preds:
            if missing_as_empty:
                pairs.append((case, None, truths[case]))
            else:
                refused.append((case, truths[case], f"no prediction for this case in {pred_dir} "
                                                    "(--missing-as-empty scores it as an empty mask)"))
        else:
            pairs.append((case, preds[case], truths[case]))
    return pairs, sorted(refused, key=lambda r: r[0])


def score_case(case: str, pred_path: Path | None, truth_path: Path, nsd_mm: float,
               labels: dict[str, int] | None = None) -> dict:
    """One case's metrics (CASE_KEYS and more; with `labels`, those of the union of the classes and
    a `classes` table of each class's); InputError for anything that stops it."""
    from ichbench.datasets.nifti_io import file_spacing
    truth, t_img = read_mask(truth_path, labels)
    spacing = tuple(float(s) for s in file_spacing(t_img, truth_path))
    if pred_path is None:
        pred = np.zeros_like(truth)
    else:
        pred, p_img = read_mask(pred_path, labels)
        if pred.shape != truth.shape:
            raise InputError(pred_path, f"shape {_shape(pred.shape)} differs from the truth's {_shape(truth.shape)} "
                                        f"({truth_path})")
        if not np.allclose(p_img.affine, t_img.affine, rtol=0, atol=AFFINE_ATOL_MM):
            raise InputError(pred_path, f"affine differs from the truth's ({truth_path}): the masks are not on "
                                        "the same grid (max difference "
                                        f"{float(np.abs(p_img.affine - t_img.affine).max()):.4g} mm)")
    if labels is None:
        m = case_metrics(pred, truth, spacing, nsd_mm)
    else:
        m = class_case_metrics(pred, truth, labels, spacing, nsd_mm)
    out = {"case": case, "pred": None if pred_path is None else str(pred_path), "truth": str(truth_path),
           **_case_keys(m), "spacing_mm": list(spacing)}
    if labels is not None:
        out["classes"] = {name: _case_keys(c) for name, c in m["classes"].items()}
    return out


def _case_keys(m: dict) -> dict:
    return {**{k: m[k] for k in CASE_KEYS}, "empty": m["empty"]}


def _shape(shape) -> str:
    return " x ".join(map(str, shape))


def score_job(job) -> tuple:
    """("ok", metrics) or ("refused", case, file, problem): a pool worker's whole answer."""
    case, pred_path, truth_path, nsd_mm, labels = job
    try:
        return ("ok", score_case(case, pred_path, truth_path, nsd_mm, labels))
    except InputError as exc:
        return ("refused", case, exc.path, exc.problem)
    except (OSError, MemoryError) as exc:
        return ("refused", case, str(getattr(exc, "filename", None) or truth_path), f"{type(exc).__name__}: {exc}")


def score_pairs(pairs, nsd_mm: float, workers: int = 1, on_result=None, labels: dict[str, int] | None = None):
    """Score (case, pred, truth) pairs, in a process pool when workers > 1; results in case order."""
    jobs = [(c, p, t, nsd_mm, labels) for c, p, t in pairs]
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(score_job(job))
            if on_result:
                on_result(results[-1])
        return results
    from concurrent.futures import ProcessPoolExecutor
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
    try:
        results = []
        for r in pool.map(score_job, jobs):
            results.append(r)
            if on_result:
                on_result(r)
        return results
    finally:   # after Ctrl-C, the cases not started yet are dropped, not scored on the way out
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(cases: list[dict], n_refused: int, nsd_mm: float, hd_cap_mm: float | None) -> dict:
    """Means over the finite values and counts of the infinite ones, over all cases and over the
    cases whose truth holds hemorrhage; volume agreement (mL) over all cases."""
    groups = {"all": cases, "ich": [c for c in cases if c["true_ml"] > 0]}
    out = {"n_scored": len(cases), "n_refused": n_refused, "nsd_mm": nsd_mm, "hd_cap_mm": hd_cap_mm, "eps": 1.0}
    for name, group in groups.items():
        out[name] = {k: metric_stats([c[k] for c in group], hd_cap_mm if k in CAPPED else None)
                     for k in SUMMARY_KEYS}
    out["volume_agreement"] = volume_agreement([c["pred_ml"] for c in cases], [c["true_ml"] for c in cases])
    if cases and "classes" in cases[0]:   # --labels: per class, over all cases and where present; macro
        out.update(summarize_classes(cases, SUMMARY_KEYS,
                                     lambda v, k: metric_stats(v, hd_cap_mm if k in CAPPED else None)))
    return out


def write_atomic(path: Path, text: str) -> None:
    """Written beside, then renamed: an interrupted or failed write leaves the old file as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
