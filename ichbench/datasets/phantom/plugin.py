"""The `phantom` dataset plugin: generate the files, then read them like any real dataset.

`prepare` writes a segmentation set (DICOM series + NIfTI masks + labels.csv) and an RSNA-shaped
pretraining set; `read` ingests the first with the shared DICOM/NIfTI readers and the second
through the rsna reader itself, so the phantom exercises the same code paths as the real data.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from ichbench import LABEL_ORDER, SUBTYPES
from ichbench.datasets.base import PRETRAINING, SEGMENTATION, Dataset, IngestOptions, IngestReport, Volume
from ichbench.datasets.phantom import files
from ichbench.errors import IchbenchError, InputError, LayoutError
from ichbench.plugins import hookimpl

# Defaults: 60 volumes, so that each of the five folds trains on 48 and scores 12 (36 ICH volumes,
# every subtype in every fold's training set). With 20 volumes (ichbench 0.1) a fold trained on 16
# and scored 4: one demo run's fold means ranged from 18 to 83 (docs/architecture.md,
# "Determinism"). Training cost does not grow with the volume count (the smoke profile trains a
# fixed number of steps); generating and ingesting both stores took 44 s on a loaded 2-core box.
DEFAULTS = {"volumes": 60, "slices": 24, "native_size": 128, "pretrain_volumes": 20,
            "ich_fraction": 0.6}
_INT_KEYS = {"volumes": 1, "slices": 4, "native_size": 32, "pretrain_volumes": 1, "seed": 0}


def phantom_settings(options: IngestOptions, defaults: dict = DEFAULTS, shift: int | None = None) -> dict:
    """The generation options from IngestOptions.extra, validated, with `defaults` filled in
    (`shift`: phantom_shifted's SHIFT_VERSION, recorded so that its folder is regenerated when it changes)."""
    extra = dict(options.extra or {})
    unknown = set(extra) - set(defaults) - {"seed"}
    if unknown:
        raise IchbenchError(f"unknown phantom option(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted([*defaults, 'seed']))}")
    out = {**defaults, "seed": options.seed, **extra}
    for key, low in _INT_KEYS.items():
        low = min(low, defaults.get(key, low))   # phantom_shifted makes no pretraining volumes
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise IchbenchError(f"phantom option {key} must be an integer >= {low}, got {v!r}")
    f = out["ich_fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
        raise IchbenchError(f"phantom option ich_fraction must be a number in [0, 1], got {f!r}")
    from ichbench.datasets.phantom.generator import GENERATOR_VERSION  # scipy: only when generating
    return {"generator": GENERATOR_VERSION, **({"shift": shift} if shift is not None else {}),
            **{k: out[k] for k in sorted(out)}}


def _pretrain_seed(seed: int) -> int:
    # The pretraining volumes are other patients than the segmentation volumes, as RSNA is
    # disjoint from Seg-CQ500/Hssayeni in the paper: pretraining on the evaluation volumes would
    # leak them and overstate what pretraining buys.
    return int(np.random.SeedSequence([int(seed), 0x5254]).generate_state(1)[0])


def _volumes(n: int, seed: int, s: dict, prefix: str):
    from ichbench.datasets.phantom.generator import cohort_plan, generate_volume
    for vid, vseed, subs in cohort_plan(n, seed=seed, ich_fraction=s["ich_fraction"], prefix=prefix):
        yield generate_volume(vseed, vol_id=vid, slices=s["slices"], size=s["native_size"], subtypes=subs)


def read_labels(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """labels.csv -> {SOPInstanceUID: (volume id, (7,) uint8 labels in LABEL_ORDER)}."""
    if not path.is_file():
        raise InputError(path, "missing per-slice label table")
    out: dict[str, tuple[str, np.ndarray]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != files.LABELS_HEADER:
            raise InputError(path, f"expected header {','.join(files.LABELS_HEADER)}, got {header}")
        for lineno, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise InputError(path, f"line {lineno}: expected {len(header)} fields, got {len(row)}")
            try:
                flags = [int(v) for v in row[3:]]
            except ValueError:
                raise InputError(path, f"line {lineno}: labels must be 0 or 1, got {row[3:]}") from None
            if any(v not in (0, 1) for v in flags):
                raise InputError(path, f"line {lineno}: labels must be 0 or 1, got {row[3:]}")
            if row[2] in out:
                raise InputError(path, f"line {lineno}: duplicate SOPInstanceUID {row[2]}")
            anyich = flags[0]
            out[row[2]] = (row[0], np.array([1 - anyich, anyich, *flags[1:]], np.uint8))
    if not out:
        raise InputError(path, "label table has no rows")
    return out


def _count_any(path: Path) -> tuple[int, int]:
    """(images, ICH images) from the `_any` rows of an RSNA label CSV (the rsna reader reports
    any problem in it; this count only sizes the hold-out)."""
    n = n_ich = 0
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if len(row) == 2 and row[0].endswith("_any"):
                    n += 1
                    n_ich += row[1].strip() == "1"
    return n, n_ich


class PhantomDataset(Dataset):
    name = "phantom"
    description = "Seeded synthetic head CT (skull, brain, ventricles, five ICH subtypes), built in"
    roles = (SEGMENTATION, PRETRAINING)
    ships_brain_masks = True   # the generator's ground-truth cavity
    class_names = SUBTYPES     # each volume's subtype class map (generator.class_map)
    source_url = "built in: generated by ichbench (no download)"
    licence = "Apache-2.0 (generated data)"
    layout = ("phantom.json; segmentation/<VOLID>/dicom/IM*.dcm, segmentation/<VOLID>/ICH_mask.nii.gz, "
              "segmentation/<VOLID>/ICH_classes.nii.gz (0 none, k = SUBTYPES[k-1]), "
              "segmentation/<VOLID>/brain.nii.gz, segmentation/labels.csv; "
              "pretraining/stage_2_train/ID_*.dcm, pretraining/stage_2_train.csv. Options (-o key=value): "
              + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items()) + ", seed")

    def prepare(self, source: Path, options: IngestOptions) -> None:
        """Generate the files unless the folder already holds exactly these options' output."""
        settings = phantom_settings(options)
        manifest = files.read_manifest(source)
        if manifest is not None and manifest.get("options") == settings:
            return
        seed = settings["seed"]
        files.build_source(source, settings,
                           _volumes(settings["volumes"], seed, settings, "PH"),
                           _volumes(settings["pretrain_volumes"], _pretrain_seed(seed), settings, "PT"))

    def check_layout(self, source: Path) -> None:
        source = Path(source)
        expected = {files.MANIFEST: False, f"{files.SEG_DIR}/{files.LABELS_NAME}": False,
                    f"{files.PRE_DIR}/stage_2_train": True, f"{files.PRE_DIR}/stage_2_train.csv": False}
        missing = [name for name, is_dir in expected.items()
                   if not ((source / name).is_dir() if is_dir else (source / name).is_file())]
        seg = source / files.SEG_DIR
        if seg.is_dir() and not any(p.is_dir() for p in seg.iterdir()):
            missing.append(f"{files.SEG_DIR}/<VOLID>/ folders")
        if missing:
            found = sorted(p.name for p in source.iterdir()) if source.is_dir() else []
            raise LayoutError(f"{source}: phantom layout incomplete; missing {', '.join(missing)}; "
                              f"found: {', '.join(found) or '(nothing)'}. Expected: {self.layout}")

    def read(self, source: Path, role: str, options: IngestOptions,
             report: IngestReport) -> Iterator[Volume]:
        source = Path(source)
        if role != SEGMENTATION:
            raise IchbenchError(f"dataset 'phantom' has no {role!r} store")
        root = source / files.SEG_DIR
        labels = read_labels(root / files.LABELS_NAME)
        vdirs = sorted(p for p in root.iterdir() if p.is_dir())
        report.expect(volumes=len(vdirs))
        for vdir in vdirs:
            try:
                vol = self._read_volume(vdir, labels)
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                continue
            yield vol

    def plan(self, source: Path, role: str, options: IngestOptions, report: IngestReport, pool):
        """The pretraining store through the rsna reader itself, so the phantom exercises the real
        RSNA path (the segmentation store is read volume by volume, `read`).

        The validation hold-out is capped at 10% of the selected slices: the default (5,000, the
        paper's RSNA figure, about 2% there) would take half of a phantom's few hundred slices."""
        from ichbench.datasets import rsna

        if role != PRETRAINING:
            return None
        root = Path(source) / files.PRE_DIR
        n, n_ich = _count_any(root / "stage_2_train.csv")
        n_selected = n if options.selection == "all" else n_ich + min(n_ich, n - n_ich)
        cap = n_selected // 10
        if options.holdout > cap:
            # said only when someone asked for a hold-out: the default is RSNA's, never the phantom's
            if options.holdout != IngestOptions().holdout:
                report.warn(f"phantom: validation hold-out capped at {cap} slices (10% of the "
                            f"{n_selected} selected), not {options.holdout}")
            options = dataclasses.replace(options, holdout=cap)
        return rsna.RsnaDataset().plan(root, PRETRAINING, options, report, pool)

    def _read_volume(self, vdir: Path, labels: dict) -> Volume:
        from ichbench.datasets.dicom_io import read_slice, stack_series
        dcm_dir = vdir / "dicom"
        paths = sorted(dcm_dir.glob("*.dcm"))
        if not paths:
            raise InputError(dcm_dir, "no DICOM slices (expected dicom/*.dcm)")
        hu, spacing, ordered = stack_series([read_slice(p) for p in paths], dcm_dir)
        mask_path = vdir / files.MASK_NAME
        if not mask_path.is_file():
            raise InputError(mask_path, "missing hemorrhage mask")
        mask = files.read_nifti_mask(mask_path)
        if mask.shape != hu.shape:
            raise InputError(mask_path, f"mask shape {mask.shape} differs from the CT series shape {hu.shape}")
        classes_path = vdir / files.CLASSES_NAME
        if not classes_path.is_file():
            raise InputError(classes_path, "missing subtype class map")
        classes = files.read_nifti_classes(classes_path, len(SUBTYPES))
        if classes.shape != hu.shape:
            raise InputError(classes_path, f"class map shape {classes.shape} differs from the CT series shape "
                                           f"{hu.shape}")
        brain_path = vdir / files.BRAIN_NAME
        brain = files.read_nifti_mask(brain_path) if brain_path.is_file() else None
        if brain is not None and brain.shape != hu.shape:
            raise InputError(brain_path, f"brain mask shape {brain.shape} differs from the CT series shape {hu.shape}")
        label_path = vdir.parent / files.LABELS_NAME
        rows = []
        for s in ordered:
            entry = labels.get(s.sop_uid)
            if entry is None:
                raise InputError(label_path, f"no row for slice {s.path.name} of {vdir.name} "
                                             f"(SOPInstanceUID {s.sop_uid})")
            if entry[0] != vdir.name:
                raise InputError(label_path, f"slice {s.path.name} of {vdir.name} is listed under volume {entry[0]}")
            rows.append(entry[1])
        lab = np.stack(rows)
        subtypes = [name for j, name in enumerate(LABEL_ORDER) if name in SUBTYPES and lab[:, j].any()]
        return Volume(id=vdir.name, hu=hu, spacing=spacing, mask=mask, brain=brain, labels=lab,
                      subtypes=subtypes, source=str(vdir), classes=classes)


class PhantomShiftedDataset(PhantomDataset):
    """An external test set for phantom runs: other patients, as another scanner shows them
    (`phantom.shifted`; `ichbench run --test-on phantom_shifted`)."""
    name = "phantom_shifted"
    description = ("The phantom from another site (wider field of view, HU scale/offset, more noise, "
                   "older blood, thicker slices), built in")
    roles = (SEGMENTATION,)
    layout = PhantomDataset.layout.split(" Options")[0] + " Options (-o key=value): volumes=20, slices=16, seed"

    def prepare(self, source: Path, options: IngestOptions) -> None:
        from ichbench.datasets.phantom.shifted import DEFAULTS as SHIFTED, SEED_SALT, SHIFT_VERSION, shift_volume
        settings = phantom_settings(options, SHIFTED, SHIFT_VERSION)
        manifest = files.read_manifest(source)
        if manifest is not None and manifest.get("options") == settings:
            return
        seed = int(np.random.SeedSequence([settings["seed"], SEED_SALT]).generate_state(1)[0])
        vols = (shift_volume(v) for v in _volumes(settings["volumes"], seed, settings, "PS"))
        files.build_source(source, settings, vols, iter(()))


@hookimpl
def register_datasets(register):
    register(PhantomDataset())
    register(PhantomShiftedDataset())
