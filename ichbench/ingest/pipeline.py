"""The shared ingest pipeline: dataset reader -> checks -> resize -> brain mask -> store."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ichbench import SUBTYPES, UNKNOWN_LABEL, __version__
from ichbench.console import progress_bar
from ichbench.datasets.base import SEGMENTATION, Dataset, IngestOptions, IngestReport, SlicePlan, Volume
from ichbench.errors import InputError, LayoutError
from ichbench.ingest import planned
from ichbench.parallel import OrderedPool
from ichbench.preprocess.brain import ClassicalBrainMasker
from ichbench.preprocess.resize import class_ids, resize_classes, resize_mask, resize_slices, resized_spacing
from ichbench.store import atomic
from ichbench.store import store_path
from ichbench.store.location import Location
from ichbench.store.reader import SliceStore
from ichbench.store.writer import StoreWriter

REPORT_NAME = "ingest_report.json"


@dataclass
class IngestResult:
    dataset: str
    role: str
    path: Location        # a local folder or a store URL (`ICHBENCH_STORE_ROOT`)
    fingerprint: str
    skipped_as_unchanged: bool
    report: IngestReport
    shard_writers: dict[int, int] | None = None   # process id -> shards it wrote (None: store reused)


def source_key(dataset: Dataset, source: Path, role: str, options: IngestOptions) -> str:
    """Cheap identity of the raw input: file names, sizes and mtimes, plus the settings."""
    h = hashlib.sha256()
    h.update(json.dumps({"dataset": dataset.name, "role": role, "settings": options.settings()},
                        sort_keys=True).encode())
    files = [(p, p.relative_to(source)) for p in dataset.source_files(source)]
    # files and folders named by dataset options (-o reads=/elsewhere/reads.csv, -o unlabelled=DIR)
    # count as sources too
    for v in options.extra.values():
        if isinstance(v, str) and Path(v).is_file():
            files.append((Path(v), Path(v)))
        elif isinstance(v, str) and Path(v).is_dir():
            files += [(p, p) for p in sorted(Path(v).rglob("*")) if p.is_file()]
    for p, name in files:
        st = p.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def check_volume(vol: Volume, role: str, class_names=None) -> str | None:
    """Generic sanity checks every reader gets for free. Returns the problem, or None.
    class_names: the dataset's (ids 1..C), for a segmentation store that keeps a class map."""
    if vol.hu.ndim != 3 or vol.hu.shape[0] == 0:
        return f"expected a stack of 2-D axial slices, got an array of shape {vol.hu.shape}"
    if vol.hu.dtype.kind == "f" and not np.isfinite(vol.hu).all():   # integers are finite
        return "CT contains NaN or infinite voxels"
    sp = np.asarray(vol.spacing, dtype=float)
    if sp.shape != (3,) or not np.isfinite(sp).all() or (sp <= 0).any():
        return f"invalid voxel spacing {tuple(vol.spacing)}"
    for name in ("mask", "brain"):
        arr = getattr(vol, name)
        if arr is not None and arr.shape != vol.hu.shape:
            return f"{name} shape {arr.shape} differs from the CT shape {vol.hu.shape}"
    if role == SEGMENTATION and vol.mask is None:
        return "segmentation volume without a hemorrhage mask"
    if vol.labels is not None and np.asarray(vol.labels).shape != (vol.hu.shape[0], 7):
        return f"labels shape {np.asarray(vol.labels).shape}, expected ({vol.hu.shape[0]}, 7)"
    if vol.subtypes is not None and set(vol.subtypes) - set(SUBTYPES):
        return f"unknown subtypes {sorted(set(vol.subtypes) - set(SUBTYPES))}"
    if role == SEGMENTATION and class_names is not None:
        return _class_problem(vol, len(class_names))
    return None


def _class_problem(vol: Volume, n_classes: int) -> str | None:
    if vol.classes is None:
        return "segmentation volume without a class map (the dataset keeps per-voxel classes)"
    if vol.classes.shape != vol.hu.shape:
        return f"class map shape {vol.classes.shape} differs from the CT shape {vol.hu.shape}"
    low, top = (int(vol.classes.min()), int(vol.classes.max())) if vol.classes.size else (0, 0)
    if vol.classes.dtype.kind not in "ui" or low < 0 or top > n_classes:
        return f"class map values must be whole numbers 0..{n_classes}, found {low}..{top}"
    disagree = int(((vol.classes > 0) != vol.mask).sum())
    if disagree:
        return f"class map and hemorrhage mask disagree on {disagree} voxels"
    return None


def _lost_classes(native: np.ndarray, stored: np.ndarray, class_names) -> list[str]:
    """Classes of the native map that no stored pixel kept (too small for the store size)."""
    ids = set(class_ids(native)) - set(class_ids(stored))
    return [class_names[i - 1] for i in sorted(ids)]


def volume_has_ich(vol: Volume, labels: np.ndarray) -> bool | None:
    """A volume's ICH flag: from its native-resolution mask where it has one (a tiny bleed lost
    when resampling to the store size still counts), else from its slice labels, else the
    reader's volume-level flag (CQ500's reads)."""
    if vol.mask is not None:
        return bool(np.asarray(vol.mask).any())
    return labels_have_ich(labels, vol.has_ich)


def labels_have_ich(labels: np.ndarray, otherwise: bool | None = None) -> bool | None:
    """Any slice labelled ICH, where any label is known; else `otherwise`."""
    known = labels[:, 1] != UNKNOWN_LABEL
    return bool((labels[known, 1] == 1).any()) if known.any() else otherwise


def _advance(progress, task, report: IngestReport, volumes: int, slices: int) -> None:
    """Slices out of the reader's expected slices, else volumes out of its expected volumes."""
    if report.expected_slices is not None:
        progress.update(task, completed=slices, total=report.expected_slices, info="slices")
    elif report.expected_volumes is not None:
        progress.update(task, completed=volumes, total=report.expected_volumes, info=f"volumes ({slices} slices)")
    else:
        progress.update(task, completed=slices, info="slices")


def _unchanged(final: Location, key: str, dataset: Dataset, role: str) -> IngestResult | None:
    """The existing store when it was built from the same raw files and settings."""
    try:
        existing = SliceStore(final)
        if existing.attrs.get("source_key") != key:
            return None
        report = IngestReport()
        rp = existing.root / REPORT_NAME
        if rp.exists():
            data = json.loads(rp.read_text())
            report.skipped, report.warnings = data.get("skipped", []), data.get("warnings", [])
        return IngestResult(dataset.name, role, final, existing.fingerprint, True, report)
    except Exception:  # noqa: BLE001 - an unreadable old store is simply rebuilt
        return None


def volume_meta(vol_id: str, spacing, native, subtypes, has_ich: bool | None, size: int) -> dict:
    """A volumes-table entry: the spacing at the store size, subtypes in SUBTYPES order."""
    return {"id": vol_id,
            "spacing": list(resized_spacing(spacing, native, size)),
            "native_shape": list(native),
            "subtypes": [t for t in SUBTYPES if t in subtypes] if subtypes is not None else None,
            "has_ich": has_ich}


def _store_arrays(vol: Volume, writer: StoreWriter, masker: ClassicalBrainMasker, size: int):
    """A checked volume resampled to the store size: (meta, images, labels, masks, brain, classes)."""
    images = resize_slices(vol.hu, size)
    brain = None
    if "brain" in writer.arrays:  # shipped masks, else the classical extraction
        brain = (resize_mask(vol.brain, size) if vol.brain is not None
                 else masker(images.astype(np.float32)).astype(np.uint8))
    masks = resize_mask(vol.mask, size) if vol.mask is not None else None
    names = writer.class_names
    labels = vol.resolved_labels(*([names] if names is not None else []))
    classes = resize_classes(vol.classes, size, masks) if names is not None else None
    if masks is not None:
        # labels follow the stored mask, so a hemorrhage lost to resampling is not "any"
        anyich = masks.reshape(len(masks), -1).any(axis=1)
        labels[:, 0], labels[:, 1] = ~anyich, anyich
        labels[~anyich, 2:] = 0  # and no subtype on a slice without hemorrhage
    if classes is not None:
        # and the subtypes of a slice are the classes its stored pixels have
        stored = Volume(vol.id, classes, vol.spacing, mask=masks.astype(bool), classes=classes)
        labels[:, 2:] = stored.resolved_labels(names)[:, 2:]
    native = tuple(vol.native_shape or vol.hu.shape[1:])
    subtypes = vol.subtypes
    if subtypes is None and classes is not None:   # the native map's classes, as has_ich is the native mask's
        subtypes = [names[i - 1] for i in class_ids(vol.classes)]
    meta = volume_meta(vol.id, vol.spacing, native, subtypes, volume_has_ich(vol, labels), size)
    if brain is not None:   # which cavity mask the store holds: only shipped ones train the ICM
        meta["brain"] = "shipped" if vol.brain is not None else "classical"
    return meta, images, labels, masks, brain, classes


def _write_volumes(dataset: Dataset, source: Path, role: str, options: IngestOptions, report: IngestReport,
                   writer: StoreWriter) -> None:
    """Every volume the reader yields, checked, resampled and appended, with a progress bar."""
    masker = ClassicalBrainMasker()
    with progress_bar() as progress:
        task = progress.add_task(f"ingest {dataset.name}/{role}", total=None, info="slices")
        n_read = 0
        for vol in dataset.read(source, role, options, report):
            n_read += 1
            problem = check_volume(vol, role, writer.class_names)
            if problem:
                report.skip(vol.source or vol.id, problem)
                continue
            if role == SEGMENTATION and writer.volume_index(vol.id) is not None:
                report.skip(vol.source or vol.id, f"duplicate volume id {vol.id!r}")
                continue
            meta, images, labels, masks, brain, classes = _store_arrays(vol, writer, masker, options.size)
            if classes is not None:
                lost = _lost_classes(vol.classes, classes, writer.class_names)
                if lost:   # the volumes table keeps them (native); say that no stored pixel does
                    report.warn(f"{vol.source or vol.id}: {', '.join(lost)} present in the source but on no pixel "
                                f"at {options.size}x{options.size} (too small to survive resampling)")
            idx = writer.volume_index(vol.id)
            if idx is not None and meta["has_ich"]:
                writer.volumes[idx]["has_ich"] = True
            writer.add(meta, images, labels, masks=masks, brain=brain, classes=classes)
            _advance(progress, task, report, n_read, writer.n_slices)
    _require_slices(writer, source, role, report)


def _write_planned(plan: SlicePlan, dataset: Dataset, source: Path, role: str, options: IngestOptions,
                   report: IngestReport, writer: StoreWriter, pool: OrderedPool) -> None:
    """A slice plan's rows: decoding workers write the image shards (`planned`), with progress."""
    def meta(fields: dict, native, labels: np.ndarray) -> dict:
        return volume_meta(fields["id"], fields["spacing"], native, fields["subtypes"], labels_have_ich(labels),
                           options.size)

    with progress_bar() as progress:
        task = progress.add_task(f"ingest {dataset.name}/{role}", total=len(plan), info="slices")
        planned.write_plan(plan, writer, pool, report, meta,
                           lambda done: progress.update(task, completed=done,
                                                        info=f"slices ({writer.n_slices} stored)"))
    _require_slices(writer, source, role, report)


def _require_slices(writer: StoreWriter, source: Path, role: str, report: IngestReport) -> None:
    if writer.n_slices == 0:
        first = report.skipped[0]["file"] + ": " + report.skipped[0]["problem"] if report.skipped else "none"
        raise InputError(source, f"no usable {role} slices were found "
                                 f"({len(report.skipped)} inputs skipped; first: {first})")


def ingest_role(dataset: Dataset, home: Path, source: Path, role: str, options: IngestOptions,
                force: bool = False) -> IngestResult:
    """One role's store: reused when the raw files and settings are unchanged, else built beside
    the old one and published atomically (the old store stays until the new one is complete)."""
    final = store_path(home, dataset.name, role)
    atomic.recover(final)
    key = source_key(dataset, source, role, options)
    if final.exists() and not force:
        unchanged = _unchanged(final, key, dataset, role)
        if unchanged is not None:
            return unchanged
    report = IngestReport(strict=options.strict)
    tmp = atomic.tmp_path(final)
    atomic.discard(tmp)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resizing one volume at a time: one thread is faster than two here
    # `workers` processes compress, hash and write the shards; for a slice plan they also read the
    # headers and decode: the fork server then imports the reader and torch's resize once for them
    # all (never a script's __main__, which the fork server would run again)
    preload = ["ichbench.store.writer"]
    if type(dataset).plan is not Dataset.plan:
        reader = type(dataset).__module__
        preload += ["ichbench.ingest.planned", "ichbench.preprocess.resize"]
        preload += [reader] if reader != "__main__" else []
    pool = OrderedPool(options.workers, preload=preload)
    try:
        plan = dataset.plan(source, role, options, report, pool)
        # Intracranial masks serve the _icm methods at fine-tuning; pretraining stores (752k RSNA
        # slices) skip them: no pretext uses them and they were 60% of the ingest time.
        writer = StoreWriter(tmp, size=options.size, with_masks=role == SEGMENTATION,
                             with_brain=role == SEGMENTATION, pool=pool,
                             external=("images",) if plan is not None else (),
                             class_names=dataset.class_names if role == SEGMENTATION else None)
        if plan is None:
            _write_volumes(dataset, source, role, options, report, writer)
        else:
            _write_planned(plan, dataset, source, role, options, report, writer, pool)
        fp = writer.close({"dataset": dataset.name, "role": role, "source_key": key,
                           "source": str(source), "ichbench_version": __version__,
                           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "brain_mask": "classical-or-shipped", "report": REPORT_NAME},
                          {"dataset": dataset.name, "role": role, **dataset.store_settings(options)})
        report.write(tmp / REPORT_NAME)
    except BaseException:
        pool.close()   # no worker may still be writing into the folder being removed
        atomic.discard(tmp)
        raise
    finally:
        pool.close()
        torch.set_num_threads(threads)
    atomic.publish(tmp, final)
    return IngestResult(dataset.name, role, final, fp, False, report, dict(writer.shard_writers))


def ingest(dataset: Dataset, home: Path, source: Path | None = None, roles=None,
           options: IngestOptions | None = None, force: bool = False) -> list[IngestResult]:
    options = options or IngestOptions()
    options.check()
    source = Path(source) if source else dataset.default_source(home)
    dataset.prepare(source, options)
    if not source.exists():   # prepare() made nothing: a dataset to download
        raise LayoutError(f"no raw {dataset.name} data at {source}\n{dataset.where_to_get(source)}")
    dataset.check_layout(source)
    roles = roles or dataset.default_roles(source, options)
    return [ingest_role(dataset, home, source, role, options, force) for role in roles]
