"""BHSD (Wu et al. 2023, MLMI): 192 head CTs with voxel labels of five hemorrhage classes, built from
RSNA 2019 scans, plus about 2,000 unlabelled volumes.

Layouts (`--source` is the folder holding one of them, or a folder up to 2 levels above it):

    release (label_192.zip)          nnU-Net copies
    images/ID_..._ID_....nii.gz      imagesTr/<case>_0000.nii.gz   (and imagesTs/ with labelsTs/)
    ground truths/ID_..._ID_....nii.gz   labelsTr/<case>.nii.gz
                                     dataset.json                  "labels": names -> values

Label values (the release): 0 background, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH. They are stored as the
project's class ids, k = SUBTYPES[k-1] + 1 (1 iph, 2 ivh, 3 sah, 4 sdh, 5 edh), the order of the
store's slice labels; an nnU-Net copy's dataset.json says which value is which, by name.

Unlabelled volumes (`--unlabelled DIR`, the same as `-o unlabelled=DIR`, or an `unlabelled/` folder
in `--source`): any .nii/.nii.gz below DIR becomes the `pretraining` store, so a pretext can
pretrain in-domain. A volume whose name is also a labelled one is left out of it (pretraining must
not see a scored volume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ichbench import SUBTYPES
from ichbench.datasets.base import (PRETRAINING, SEGMENTATION, Dataset, IngestOptions, IngestReport, Volume, find_below,
                                    folder_listing, locate_root)
from ichbench.datasets.nifti_pairs import NIFTI_RE, nifti_files, pair, read_images, read_pairs, warn_count
from ichbench.errors import IchbenchError, LayoutError
from ichbench.plugins import hookimpl

EXPECTED_VOLUMES = 192
RELEASE = ("images", "ground truths")
NNUNET = (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"))
CHANNEL = "_0000"
DATASET_JSON = "dataset.json"
UNLABELLED = "unlabelled"
# the release's label values, and the names (lower case) a dataset.json may give each subtype
RELEASE_LABELS = {1: "edh", 2: "iph", 3: "ivh", 4: "sah", 5: "sdh"}
ALIASES = {"edh": "edh", "epidural": "edh", "iph": "iph", "intraparenchymal": "iph", "ivh": "ivh",
           "intraventricular": "ivh", "sah": "sah", "subarachnoid": "sah", "sdh": "sdh", "subdural": "sdh"}


def store_ids(labels: dict[int, str]) -> dict[int, int]:
    """Label value -> store class id (SUBTYPES order, 1-based), background 0."""
    return {0: 0, **{value: SUBTYPES.index(name) + 1 for value, name in labels.items()}}


def find_root(source: Path) -> Path | None:
    """The folder holding images/ + ground truths/ or imagesTr/ + labelsTr/, at or below `source`."""
    def holds(p: Path) -> bool:
        return all((p / d).is_dir() for d in RELEASE) or all((p / d).is_dir() for d in NNUNET[0])
    return find_below(source, holds, "BHSD folder")


def dataset_json_labels(path: Path) -> dict[int, str]:
    """{label value: subtype} from an nnU-Net dataset.json (v2 {"EDH": 1}, or v1 {"1": "EDH"})."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8-sig"))["labels"]
        pairs = ([(int(k), v) for k, v in labels.items()] if all(str(k).isdigit() for k in labels)
                 else [(v, k) for k, v in labels.items()])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LayoutError(f"{path}: no usable \"labels\" object ({type(exc).__name__}); expected e.g. "
                          '{"background": 0, "EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}') from None
    out = {}
    for value, name in pairs:
        key = str(name).strip().lower()
        if not isinstance(value, int) or isinstance(value, bool):
            raise LayoutError(f"{path}: label {name!r} has value {value!r}; BHSD labels are single integers")
        if key == "background" and value == 0:
            continue
        if key not in ALIASES:
            raise LayoutError(f"{path}: label {name!r} is none of BHSD's classes "
                              "(EDH, IPH, IVH, SAH, SDH or their full names)")
        out[value] = ALIASES[key]
    if sorted(out.values()) != sorted(RELEASE_LABELS.values()):
        raise LayoutError(f"{path}: labels name {', '.join(sorted(out.values()))}; BHSD has edh, iph, ivh, sah, sdh")
    return out


class BhsdDataset(Dataset):
    name = "bhsd"
    description = ("BHSD (Wu et al. 2023): 192 head CTs with voxel labels of five hemorrhage subtypes (EDH, IPH, "
                   "IVH, SAH, SDH), plus ~2,000 unlabelled volumes for pretraining; built from RSNA 2019 scans")
    roles = (SEGMENTATION, PRETRAINING)
    pretraining_labelled = False   # the ~2,000 extra volumes come without slice labels
    class_names = SUBTYPES
    source_url = "https://huggingface.co/datasets/WuBiao/BHSD (label_192.zip; code: github.com/White65534/BHSD)"
    licence = ("non-commercial: the repository says MIT, but the images derive from the RSNA 2019 challenge data "
               "(non-commercial research use, no redistribution)")
    layout = (
        "--source is the unpacked label_192 folder (or a folder up to 2 levels above it):\n"
        "  images/ID_..._ID_....nii.gz          CT (HU after scl_slope/scl_inter), 192 volumes\n"
        "  ground truths/ID_..._ID_....nii.gz   labels on the CT grid: 0 none, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH\n"
        "or an nnU-Net copy: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz (imagesTs/ + labelsTs/ too), "
        "dataset.json\n"
        "unlabelled volumes (pretraining store): --unlabelled DIR, or unlabelled/ inside --source")

    def check_layout(self, source: Path) -> None:
        expected = (f"expected images/ and 'ground truths'/ (the label_192 release) or imagesTr/ and labelsTr/ "
                    f"(an nnU-Net copy) under {source}")
        root = locate_root(source, find_root, expected)
        images = self._pairs_dirs(root)[0][0]
        if not nifti_files(images):
            raise LayoutError(f"{expected}; found: no .nii.gz files in {images} (it holds: {folder_listing(images)})")

    @staticmethod
    def _pairs_dirs(root: Path) -> list[tuple[Path, Path, str]]:
        """(images folder, labels folder, suffix the image names carry) of a layout root."""
        if all((root / d).is_dir() for d in RELEASE):
            return [(root / RELEASE[0], root / RELEASE[1], "")]
        return [(root / i, root / lab, CHANNEL) for i, lab in NNUNET if (root / i).is_dir() and (root / lab).is_dir()]

    def _labels(self, root: Path, report: IngestReport) -> dict[int, str]:
        if all((root / d).is_dir() for d in RELEASE):
            return RELEASE_LABELS
        if not (root / DATASET_JSON).is_file():
            report.warn(f"{root}: no {DATASET_JSON}; label values read as the release's "
                        "(1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH)")
            return RELEASE_LABELS
        return dataset_json_labels(root / DATASET_JSON)

    # -- the unlabelled volumes ----------------------------------------------------------------------
    @staticmethod
    def unlabelled_dir(source: Path, options: IngestOptions) -> Path | None:
        given = options.extra.get("unlabelled")
        if given is not None:
            folder = Path(str(given)).expanduser()
            if not folder.is_dir():
                raise IchbenchError(f"--unlabelled {given}: not a folder (BHSD's unlabelled volumes)")
            return folder
        return Path(source) / UNLABELLED if (Path(source) / UNLABELLED).is_dir() else None

    def default_roles(self, source: Path, options: IngestOptions) -> tuple[str, ...]:
        return self.roles if self.unlabelled_dir(source, options) is not None else (SEGMENTATION,)

    def store_settings(self, options: IngestOptions) -> dict:
        # where the unlabelled volumes lie is no part of either store's content
        settings = options.settings()
        return {**settings, "extra": {k: v for k, v in settings["extra"].items() if k != "unlabelled"}}

    def read(self, source: Path, role: str, options: IngestOptions, report: IngestReport) -> Iterator[Volume]:
        root = find_root(Path(source))
        if root is None:
            self.check_layout(Path(source))
        if role == PRETRAINING:
            yield from self._read_unlabelled(Path(source), root, options, report)
            return
        ids = store_ids(self._labels(root, report))
        pairs = []
        for images, labels, suffix in self._pairs_dirs(root):
            found = nifti_files(images, suffix)
            for case, path in found.items():
                if suffix and not NIFTI_RE.match(path.name).group(1).endswith(suffix):
                    report.skip(path, f"not an nnU-Net channel-0 image (<case>{suffix}.nii.gz); ignored")
            found = {c: p for c, p in found.items() if not suffix or NIFTI_RE.match(p.name).group(1).endswith(suffix)}
            pairs += pair(found, nifti_files(labels), labels, report)
        report.expect(volumes=len(pairs))
        n = 0
        for vol in read_pairs(pairs, ids, report, keep_classes=True):
            n += 1
            yield vol
        warn_count(report, n, EXPECTED_VOLUMES, "labelled volumes", root)

    def _read_unlabelled(self, source: Path, root: Path, options: IngestOptions,
                         report: IngestReport) -> Iterator[Volume]:
        folder = self.unlabelled_dir(source, options)
        if folder is None:
            raise LayoutError(f"bhsd pretraining store: no unlabelled volumes; pass --unlabelled DIR or unpack them "
                              f"into {source / UNLABELLED}")
        labelled = {c for images, _, suffix in self._pairs_dirs(root) for c in nifti_files(images, suffix)}
        files: dict[str, Path] = {}
        for p in sorted(q for q in folder.rglob("*") if q.is_file() and NIFTI_RE.match(q.name)):
            case = NIFTI_RE.match(p.name).group(1)
            if case in labelled:
                report.skip(p, "also a labelled volume; left out so pretraining never sees a scored volume")
            elif case in files:
                report.skip(p, f"same volume name as {files[case]}; ignored")
            else:
                files[case] = p
        if not files:
            raise LayoutError(f"{folder}: no .nii/.nii.gz volumes (it holds: {folder_listing(folder)})")
        report.expect(volumes=len(files))
        yield from read_images(files.items(), report)


@hookimpl
def register_datasets(register):
    register(BhsdDataset())
