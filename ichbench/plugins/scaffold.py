"""`ichbench plugin new`: write a plugin package that installs and whose test passes unchanged.

A method plugin starts as rotation prediction (Gidaris et al. 2018), a small but real pretext: the
encoder learns to tell which of four rotations a slice was given. A dataset plugin starts as a
reader for a folder of NIfTI cases (`<case>/ct.nii.gz` + `<case>/mask.nii.gz`). Both import only
from `ichbench.api`, and each comes with a test that runs as generated, so an author changes one
working thing at a time instead of starting from a blank file.

Templates are strings here (not package data) so that they ship in every install of ichbench.
They are `string.Template`s: `$name` placeholders, and no other `$` in the generated code.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from ichbench.errors import IchbenchError

KINDS = ("method", "dataset")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def names_for(name: str) -> dict[str, str]:
    """Every spelling the package needs, from `my-method` (or `ichbench-my-method`):
    distribution `ichbench-my-method`, module `ichbench_my_method`, registered name `my_method`,
    entry-point name `my-method` and class prefix `MyMethod`."""
    raw = name.strip().lower()
    slug = raw[len("ichbench-"):] if raw.startswith("ichbench-") else raw
    if not _NAME_RE.match(slug):
        raise IchbenchError(f"plugin name {name!r} must be lowercase letters, digits and single - or _ "
                            "between them, starting with a letter (e.g. my-method)")
    snake = slug.replace("-", "_")
    return {"slug": slug.replace("_", "-"), "dist": "ichbench-" + slug.replace("_", "-"),
            "module": "ichbench_" + snake, "registered": snake,
            "camel": "".join(part.capitalize() for part in snake.split("_"))}


def scaffold(name: str, kind: str = "method", directory: Path | str = ".") -> tuple[Path, list[Path]]:
    """Write the package into `directory/ichbench-<name>/`; returns its root and the files written."""
    if kind not in KINDS:
        raise IchbenchError(f"unknown plugin kind {kind!r}; known: {', '.join(KINDS)}")
    n = names_for(name)
    root = Path(directory).expanduser().resolve() / n["dist"]
    if root.exists() and any(root.iterdir()):
        raise IchbenchError(f"{root} already exists and is not empty; choose another --dir or name")
    files = {**COMMON, **(METHOD_FILES if kind == "method" else DATASET_FILES)}
    values = {**n, "kind": kind, "hook": "register_methods" if kind == "method" else "register_datasets",
              "what": "a pretext method" if kind == "method" else "a dataset reader",
              "impl": "method" if kind == "method" else "dataset",
              "classname": n["camel"] + ("Method" if kind == "method" else "Dataset")}
    written = []
    for rel, text in files.items():
        path = root / Template(rel).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
        written.append(path)
    return root, written


# -- files every plugin has ---------------------------------------------------------------------

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$what for ichbench"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["ichbench>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is what makes the package an ichbench plugin.
[project.entry-points.ichbench]
$slug = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

PLUGIN_PY = '''\
"""The module ichbench loads through the `ichbench` entry point of this package."""

from ichbench.api import hookimpl, require_api

require_api(1)  # written against ichbench plugin API 1

from $module.$impl import $classname  # noqa: E402


@hookimpl
def $hook(register):
    register($classname())
'''

INIT_PY = '''\
"""$dist: $what for ichbench."""

from $module.$impl import $classname

__version__ = "0.1.0"
__all__ = ["$classname"]
'''

COMMON = {
    "pyproject.toml": PYPROJECT,
    "src/$module/__init__.py": INIT_PY,
    "src/$module/plugin.py": PLUGIN_PY,
}

# -- a method plugin ------------------------------------------------------------------------------

METHOD_README = '''\
# $dist

$what for ichbench, registered as `$registered`.

It starts as **rotation prediction** (Gidaris et al. 2018): every slice is rotated by 0, 90, 180
or 270 degrees and the U-Net encoder, through a small MLP on its pooled bottleneck, learns which.
The encoder is then handed to the segmentation U-Net. Replace the pretext in
`src/$module/method.py` with your idea; keep `label_needs` and `transfers` truthful, since the
benchmark checks the first and the leaderboard reports both.

```bash
pip install -e .                      # into the environment that has ichbench
pytest                                # the generated tests pass as they are
ichbench methods                      # lists $registered, from $dist
ichbench run --method $registered --dataset phantom --profile smoke
ichbench leaderboard submit --method $registered --dataset phantom
```

Profiles: `paper` (what you would publish) and `smoke` (tiny, for tests and CI); change them in
`$classname.profiles`. Settings in `params` can be overridden per run, e.g.
`--set pretrain.params.head_dims=512,128,4`.
'''

METHOD_PY = '''\
"""$registered: rotation prediction (Gidaris et al. 2018) as an ichbench pretext.

Each slice is rotated by k x 90 degrees, k drawn uniformly from {0, 1, 2, 3}; the U-Net encoder,
a global average pool of its bottleneck and an MLP predict k under cross-entropy. Only the
encoder is transferred; the MLP is discarded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ichbench.api import LabelNeeds, PooledEncoderHead, PretextMethod


def rotate_batch(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """images (B, C, S, S) each rotated by k[i] x 90 degrees, batched (no per-image loop)."""
    all_four = torch.stack([torch.rot90(images, r, dims=(2, 3)) for r in range(4)], dim=1)
    return all_four[torch.arange(len(images), device=images.device), k]


class $classname(PretextMethod):
    name = "$registered"
    description = "rotation prediction (0/90/180/270 degrees) from the pooled encoder; encoder transferred"
    paper_section = "Gidaris et al. 2018"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)   # images only, no labels
    transfers = ("encoder",)                                      # U-Net parts the pretraining hands over
    profiles = {
        # head widths as for the paper's 512-channel bottleneck; they scale with a narrower U-Net.
        # The last width is the number of classes (four rotations) and is never scaled.
        "paper": {"batch_size": 64, "params": {"head_dims": [512, 256, 4]}},
        "smoke": {"batch_size": 8, "params": {"head_dims": [512, 256, 4]}},
    }

    def build_pretext(self, unet, cfg):
        dims = [int(d) for d in self.params(cfg)["head_dims"]]
        if dims[-1] != 4:
            raise ValueError(f"head_dims must end in 4 (one output per rotation), got {dims}")
        return PooledEncoderHead(unet, dims, classes=True)

    def pretext_loss(self, model, batch, cfg, generator):
        images = batch["images"]
        where = generator.device if generator is not None else images.device
        k = torch.randint(0, 4, (len(images),), generator=generator, device=where).to(images.device)
        logits = model(rotate_batch(images, k))
        return F.cross_entropy(logits.float(), k)
'''

METHOD_TEST = '''\
"""Generated with $dist: these pass as written; keep them passing as you change the method."""

from __future__ import annotations

import importlib.metadata as md

import numpy as np
import pytest
import torch

from ichbench.api import PretrainConfig, UNet, example_batch, expand_parts, get_registry, reset_registry, resolve
from $module import $classname
from $module.method import rotate_batch


def test_declares_label_needs_and_valid_parts():
    m = $classname()
    assert m.name == "$registered" and m.has_pretext
    assert m.label_needs.unlabeled and not (m.label_needs.binary or m.label_needs.multilabel)
    assert expand_parts(UNet(base=8), m.transfers)          # raises on an unknown part name


def test_rotations():
    x = torch.arange(4.0).view(1, 1, 2, 2).repeat(2, 1, 1, 1)   # [[0, 1], [2, 3]]
    out = rotate_batch(x, torch.tensor([0, 1]))
    assert torch.equal(out[0], x[0])
    assert out[1, 0].tolist() == [[1.0, 3.0], [0.0, 2.0]]        # 90 degrees counter-clockwise


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_profiles_resolve(profile):
    cfg = resolve($classname(), "phantom", profile)
    assert cfg.pretrain.params["head_dims"][-1] == 4 and cfg.pretrain.batch_size >= 2


def test_loss_falls_on_phantom_slices():
    torch.manual_seed(0)
    m = $classname()
    cfg = PretrainConfig(image_size=64, **m.pretrain_overrides("smoke"))
    model = m.build_pretext(UNet(base=8), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = example_batch(8, size=64)
    losses = []
    for _ in range(15):
        loss = m.pretext_loss(model, batch, cfg, torch.Generator().manual_seed(0))  # fixed rotations
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_installed_package_registers_the_method(monkeypatch):
    try:
        md.distribution("$dist")
    except md.PackageNotFoundError:
        pytest.skip("not installed: pip install -e .")
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()
    try:
        reg = get_registry()
        assert "$registered" in reg.methods()
        assert reg.owner("methods", "$registered").distribution == "$dist"
    finally:
        reset_registry()
'''

METHOD_FILES = {
    "README.md": METHOD_README,
    "src/$module/method.py": METHOD_PY,
    "tests/test_$module.py": METHOD_TEST,
}

# -- a dataset plugin -----------------------------------------------------------------------------

DATASET_README = '''\
# $dist

$what for ichbench, registered as `$registered`.

It starts as a reader for a folder of NIfTI cases, one subfolder per scan:

    <source>/<case id>/ct.nii.gz      CT in Hounsfield units
    <source>/<case id>/mask.nii.gz    hemorrhage mask on the CT's voxel grid

Change `read` in `src/$module/dataset.py` to your layout. The shared ingest pipeline does the
rest (resizing, brain masks, the store); a bad file is reported with `report.skip(path, problem)`
and the ingest goes on.

```bash
pip install -e .
pytest
ichbench datasets                                  # lists $registered
ichbench data ingest $registered --source /path/to/cases
ichbench run --method unet_mixed --dataset $registered --profile smoke
```
'''

DATASET_PY = '''\
"""$registered: a folder of NIfTI cases as an ichbench segmentation dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ichbench.api import (SEGMENTATION, Dataset, IngestOptions, IngestReport, InputError, LayoutError, Volume,
                          load_ct, load_mask)

CT_NAMES = ("ct.nii.gz", "ct.nii")
MASK_NAMES = ("mask.nii.gz", "mask.nii")


def _first(folder: Path, names) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


class $classname(Dataset):
    name = "$registered"
    description = "NIfTI cases with hemorrhage masks (one folder per scan)"
    roles = (SEGMENTATION,)
    source_url = ""          # where people get the data
    licence = ""             # under which terms
    layout = "<source>/<case id>/ct.nii.gz and <source>/<case id>/mask.nii.gz (the mask on the CT's grid)"

    def cases(self, source: Path) -> list[Path]:
        return sorted(d for d in Path(source).iterdir() if d.is_dir() and _first(d, CT_NAMES))

    def check_layout(self, source: Path) -> None:
        source = Path(source)
        if not source.is_dir():
            raise LayoutError(f"expected a folder of cases at {source}; found: it does not exist")
        if not self.cases(source):
            found = ", ".join(sorted(p.name for p in source.iterdir())[:10]) or "(empty folder)"
            raise LayoutError(f"expected <case>/ct.nii.gz folders in {source}; found: {found}")

    def read(self, source: Path, role: str, options: IngestOptions, report: IngestReport) -> Iterator[Volume]:
        for case in self.cases(Path(source)):
            mask_path = _first(case, MASK_NAMES)
            if mask_path is None:
                report.skip(case, "no mask.nii.gz beside the CT")
                continue
            try:
                ct = load_ct(_first(case, CT_NAMES))
                mask = load_mask(mask_path, ct)
            except InputError as exc:
                report.skip(exc.path, exc.problem)
                continue
            yield Volume(id=case.name, hu=ct.data.astype(np.float32), spacing=ct.spacing,
                         mask=mask.astype(bool), source=str(case))
'''

DATASET_TEST = '''\
"""Generated with $dist: these pass as written; keep them passing as you change the reader."""

from __future__ import annotations

import importlib.metadata as md

import nibabel as nib
import numpy as np
import pytest

from ichbench.api import IngestOptions, LayoutError, get_registry, ingest, open_store, reset_registry, store_path
from $module import $classname

SLICES, SIZE = 6, 40


def head(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc of brain (35 HU) in a skull ring (1000 HU) in air, with a 70 HU bleed on some slices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    r = np.hypot(yy, xx)
    ct = np.full((SIZE, SIZE, SLICES), -1000.0, np.float32)
    ct[r < 17] = 1000.0
    ct[r < 15] = 35.0 + rng.normal(0, 3, (int((r < 15).sum()), SLICES))
    mask = np.zeros(ct.shape, np.uint8)
    mask[12:20, 14:22, 2:4] = 1
    ct[mask == 1] = 70.0
    return ct, mask


def write_case(folder, seed):
    folder.mkdir(parents=True)
    ct, mask = head(seed)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "mask.nii.gz"))


def test_ingests_a_folder_of_cases(tmp_path):
    source = tmp_path / "cases"
    write_case(source / "case01", 1)
    write_case(source / "case02", 2)
    broken = source / "case03"
    broken.mkdir()
    (broken / "ct.nii.gz").write_bytes(b"not a nifti file")
    (broken / "mask.nii.gz").write_bytes(b"nor this")

    [result] = ingest($classname(), tmp_path / "home", source=source, options=IngestOptions(size=32))
    store = open_store(store_path(tmp_path / "home", "$registered", "segmentation"))
    assert store.n_slices == 2 * SLICES
    assert [v["id"] for v in store.volumes] == ["case01", "case02"]
    data = store.load(["masks", "labels"])
    assert data["masks"].shape == (2 * SLICES, 32, 32)
    assert int(data["labels"][:, 1].sum()) == 4                   # two bleeding slices per case
    assert [s["file"] for s in result.report.skipped] and "case03" in result.report.skipped[0]["file"]


def test_layout_errors_say_what_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("no cases here")
    with pytest.raises(LayoutError, match="notes.txt"):
        $classname().check_layout(tmp_path)


def test_installed_package_registers_the_dataset(monkeypatch):
    try:
        md.distribution("$dist")
    except md.PackageNotFoundError:
        pytest.skip("not installed: pip install -e .")
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()
    try:
        reg = get_registry()
        assert "$registered" in reg.datasets()
        assert reg.owner("datasets", "$registered").distribution == "$dist"
    finally:
        reset_registry()
'''

DATASET_FILES = {
    "README.md": DATASET_README,
    "src/$module/dataset.py": DATASET_PY,
    "tests/test_$module.py": DATASET_TEST,
}
