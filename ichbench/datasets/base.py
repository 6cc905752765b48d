"""The dataset plugin surface.

A dataset reads its raw layout and yields `Volume`s: groups of axial slices in HU at native
resolution, with whatever labels the source has. The shared ingest pipeline
(`ichbench.ingest`) does the rest — resizing, brain masks, fingerprinting and the atomic
write — so a reader stays a small module that only knows its file layout.

A slice-level source too large to pass every slice through one process (RSNA: 752k files) may
instead return a `SlicePlan` from `plan`: every store row known before any pixel is decoded, so
decoding workers write whole shards of the store themselves (`ichbench.ingest.planned`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ichbench import LABEL_ORDER, SUBTYPES, UNKNOWN_LABEL
from ichbench.errors import IchbenchError, InputError, LayoutError, UnknownNameError

SEGMENTATION = "segmentation"
PRETRAINING = "pretraining"


@dataclass
class Volume:
    """Consecutive axial slices of one scan (or one slice of it, for slice-level sources).

    hu: (S, H, W) Hounsfield units (float32, or int16 from a reader that resampled already),
        head pointing up (anterior at the top rows).
    spacing: (z, y, x) in mm at native resolution.
    mask: (S, H, W) bool hemorrhage mask, or None where the source has no segmentation.
    brain: (S, H, W) bool intracranial mask, or None to have it computed at ingest.
    labels: (S, 7) uint8 in LABEL_ORDER, UNKNOWN_LABEL where unknown; None derives
        [no_ich, any] from the mask with subtypes unknown.
    subtypes: volume-level subtypes present (names from SUBTYPES), None if unknown.
    classes: (S, H, W) uint8 per-voxel class ids, 0 background and k the dataset's
        class_names[k-1]; None for a binary dataset. Where given, the mask is `classes > 0`, and the
        per-slice subtype labels follow from it.
    spacing is always the native one; a reader that resamples slices itself (to the store size,
    in its decoding workers) says so with native_shape, so the stored spacing is still right.
    Yielding several Volumes with the same id appends their slices to one volume.
    """

    id: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None = None
    brain: np.ndarray | None = None
    labels: np.ndarray | None = None
    subtypes: list[str] | None = None
    source: str = ""
    native_shape: tuple[int, int] | None = None  # set when a reader already resized `hu` (in its workers)
    has_ich: bool | None = None                  # volume-level ICH where slices carry no label (CQ500)
    classes: np.ndarray | None = None            # per-voxel class ids (see above)

    def resolved_labels(self, class_names=SUBTYPES) -> np.ndarray:
        """(S, 7) labels: the reader's, else derived from the class map (whose id k is
        class_names[k-1]) or the mask."""
        if self.labels is not None:
            return np.asarray(self.labels, dtype=np.uint8)
        n = self.hu.shape[0]
        out = np.full((n, len(LABEL_ORDER)), UNKNOWN_LABEL, dtype=np.uint8)
        if self.mask is not None:
            anyich = self.mask.reshape(n, -1).any(axis=1)
            out[:, 0] = ~anyich
            out[:, 1] = anyich
            if self.classes is not None:   # a class map knows every slice's subtypes
                flat = self.classes.reshape(n, -1)
                for j, name in enumerate(SUBTYPES, start=2):
                    ids = [k for k, c in enumerate(class_names, start=1) if c == name]
                    out[:, j] = np.logical_or.reduce([(flat == k).any(axis=1) for k in ids]) if ids else UNKNOWN_LABEL
                out[~anyich, 2:] = 0
                return out
            for j, name in enumerate(SUBTYPES, start=2):
                # a subtype cannot be present on a slice without hemorrhage
                out[~anyich, j] = 0
                if self.subtypes is not None and name not in self.subtypes:
                    out[:, j] = 0
        return out


@dataclass
class SlicePlan:
    """A slice-level source's store rows in store order, known before decoding.

    paths[r]: the file of row r. decode(path): (int16 slice at the store size, native (H, W), None),
    or (None, None, problem) when its pixels cannot be decoded; a top-level function (it is sent to
    worker processes). labels: (N, 7) uint8 in LABEL_ORDER. group: (N,) the rows of one store
    volume are consecutive and share a value. volume(r): the Volume fields (id, native spacing,
    subtypes) of row r's volume, as a Volume without pixels; a row that fails to decode is skipped,
    and the volume's stored geometry comes from its first row that decodes, as in `read`.
    """
    paths: Sequence[str]
    decode: Callable[[str], tuple]
    labels: np.ndarray
    group: np.ndarray
    volume: Callable[[int], "Volume"]

    def __len__(self) -> int:
        return len(self.labels)


SIZE_RANGE = (4, 4096)   # store slice sizes: tests use a few pixels; 4096 is 8x a CT slice


@dataclass
class IngestOptions:
    size: int = 256              # slices are resampled to size x size
    strict: bool = False         # stop at the first bad input instead of skipping it
    workers: int = 1             # parallel decoding processes, where a reader supports them
    selection: str = "paper"     # pretraining sources: "paper" (ICH + equal non-ICH) or "all"
    holdout: int = 5000          # pretraining: slices held out for validation (seeded)
    seed: int = 0
    extra: dict = field(default_factory=dict)  # dataset-specific options (e.g. phantom counts)

    def check(self) -> None:
        """IchbenchError for settings no ingest can use, named as `ichbench data ingest`'s flags
        (a size of 0 divided by zero in the writer)."""
        lo, hi = SIZE_RANGE
        if not lo <= self.size <= hi:
            raise IchbenchError(f"--size {self.size}: slices are resampled to SIZE x SIZE pixels; "
                                f"use {lo} to {hi}")
        if self.workers < 1:
            raise IchbenchError(f"--workers {self.workers}: need at least 1 decoding process")
        if self.holdout < 0:
            raise IchbenchError(f"holdout {self.holdout}: the number of held-out slices is >= 0")

    def settings(self) -> dict:
        """What goes into the fingerprint: everything that changes the store's content."""
        return {"size": self.size, "selection": self.selection, "holdout": self.holdout,
                "seed": self.seed, "extra": self.extra}


class IngestReport:
    """Skipped inputs and warnings, kept as JSON beside the store and summarised on stderr."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.skipped: list[dict] = []
        self.warnings: list[str] = []
        # what the reader expects to yield, for the progress bar's total (readers say it when
        # they know it: slice-level sources the slices, volume-level ones the volumes)
        self.expected_slices: int | None = None
        self.expected_volumes: int | None = None

    def expect(self, *, slices: int | None = None, volumes: int | None = None) -> None:
        """A reader announces how much it will yield (a progress bar total, not a promise)."""
        if slices is not None:
            self.expected_slices = int(slices)
        if volumes is not None:
            self.expected_volumes = int(volumes)

    def skip(self, path, problem: str) -> None:
        from ichbench.errors import InputError
        if self.strict:
            raise InputError(path, problem)
        self.skipped.append({"file": str(path), "problem": problem})

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def as_json(self) -> dict:
        return {"skipped": self.skipped, "warnings": self.warnings}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2))

    def summarise(self, stream=sys.stderr, limit: int = 10) -> None:
        for w in self.warnings:
            print(f"warning: {w}", file=stream)
        for item in self.skipped[:limit]:
            print(f"skipped {item['file']}: {item['problem']}", file=stream)
        if len(self.skipped) > limit:
            print(f"... and {len(self.skipped) - limit} more skipped (see the ingest report)", file=stream)


class Dataset:
    """Base class for dataset plugins. Subclasses set the class attributes and implement `read`."""

    name: str = ""
    description: str = ""
    roles: tuple[str, ...] = (SEGMENTATION,)
    source_url: str = ""
    licence: str = ""
    layout: str = ""             # the expected folder layout, shown by `ichbench datasets`
    # hand-labelled intracranial cavity masks come with the data (Volume.brain): they can train
    # the ICM U-Nets (`ichbench icm train`) and serve as `icm.source=shipped`
    ships_brain_masks: bool = False
    # per-voxel classes of the segmentation volumes: the names of class ids 1..C (Volume.classes);
    # the built-in multi-class datasets use SUBTYPES, so id k is SUBTYPES[k-1] in every store
    class_names: tuple[str, ...] | None = None
    # whether the pretraining store's slices carry ICH/subtype labels; False (bhsd's unlabelled
    # volumes): pretexts that need slice labels default to RSNA's (`resolve.default_pretrain_dataset`)
    pretraining_labelled: bool = True

    def default_source(self, home: Path) -> Path:
        from ichbench.names import inside
        return inside(home, "raw", self.name)

    def prepare(self, source: Path, options: IngestOptions) -> None:
        """Make the raw files exist (the phantom generates them); real datasets do nothing."""

    def check_layout(self, source: Path) -> None:
        """Raise LayoutError naming what was expected where and what was found."""

    def default_roles(self, source: Path, options: IngestOptions) -> tuple[str, ...]:
        """The roles `ichbench data ingest` builds when none is named (a role whose optional files
        are absent may be left out)."""
        return self.roles

    def store_settings(self, options: IngestOptions) -> dict:
        """The settings a store's fingerprint covers: everything that changes its content (an
        option that only says where files are can be left out)."""
        return options.settings()

    def source_files(self, source: Path) -> list[Path]:
        """Every file whose change should trigger a re-ingest."""
        return sorted(p for p in Path(source).rglob("*") if p.is_file())

    def read(self, source: Path, role: str, options: IngestOptions,
             report: IngestReport) -> Iterator[Volume]:
        raise NotImplementedError

    def plan(self, source: Path, role: str, options: IngestOptions, report: IngestReport,
             pool) -> SlicePlan | None:
        """The store rows of a slice-level `role`, for decoding workers that write shards
        themselves (None: the role is read through `read`). `pool` (an OrderedPool) may serve a
        header pass; the ingest decodes with it afterwards."""
        return None

    def where_to_get(self, source: Path) -> str:
        """Two lines for a missing-data error: where the data comes from, under which licence,
        what must be found in `source`, and where the full instructions are."""
        licence = re.split(r"[,;(]", self.licence)[0].strip() or "see its page"
        if len(licence) > 70:
            licence = licence[:69] + "…"
        lines = [ln.strip() for ln in self.layout.splitlines() if ln.strip() and not ln.strip().startswith("--source")]
        expected = re.sub(r"\s{2,}", " — ", lines[0]) if lines else "the files of its layout"
        return (f"  get it from {self.source_url} (licence: {licence}) and unpack it at {source}: {expected}\n"
                f"  full layout and ingest options: docs/datasets.md, section {self.name} (or `ichbench datasets`)")

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "roles": list(self.roles),
                "source_url": self.source_url, "licence": self.licence, "layout": self.layout,
                "ships_brain_masks": self.ships_brain_masks,
                "class_names": list(self.class_names) if self.class_names is not None else None}


def folder_listing(folder: Path, limit: int = 12) -> str:
    """What a folder holds, for layout errors ("expected X under Y; found: a, b/, ...")."""
    if not folder.is_dir():
        return "(folder does not exist)"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "(empty folder)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def find_below(source: Path, holds: Callable[[Path], bool], what: str, max_depth: int = 2) -> Path | None:
    """The folder `holds` recognises nearest to `source` (itself, then 1..max_depth levels below);
    a LayoutError when one level holds several (which one was meant is not ours to guess)."""
    for depth in range(max_depth + 1):
        candidates = [source] if depth == 0 else source.glob("/".join(["*"] * depth))
        hits = sorted(p for p in candidates if p.is_dir() and holds(p))
        if len(hits) > 1:
            raise LayoutError(f"expected one {what} under {source}; found several: "
                              + ", ".join(str(h) for h in hits))
        if hits:
            return hits[0]
    return None


def locate_root(source: Path, find: Callable[[Path], Path | None], expected: str) -> Path:
    """The folder `find` recognises at or below `source`; a LayoutError saying what was expected
    and what is there otherwise."""
    source = Path(source)
    if not source.is_dir():
        raise LayoutError(f"{expected}; found: {source} does not exist or is not a folder")
    root = find(source)
    if root is None:
        raise LayoutError(f"{expected}; found: {folder_listing(source)}")
    return root


def open_csv(path: Path):
    """A source CSV opened for the csv module (a UTF-8 byte-order mark tolerated); InputError
    naming the file when it cannot be opened."""
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None


def get_dataset(name: str) -> Dataset:
    from ichbench.plugins import get_registry
    known = get_registry().datasets()
    if name not in known:
        raise UnknownNameError("dataset", name, known)
    return known[name]


def require_role(dataset: Dataset, role: str | None) -> str:
    role = role or dataset.roles[0]
    if role not in dataset.roles:
        raise IchbenchError(f"dataset {dataset.name!r} has no {role!r} store; it has: {', '.join(dataset.roles)}")
    return role
