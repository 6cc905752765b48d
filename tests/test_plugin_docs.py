"""docs/plugins.md is tested by its own code: the blocks marked ```python file=PATH (or toml) are
written into two packages, which must equal what `ichbench plugin new` writes, and are then used
the way the tutorial says, through `ichbench.api` in this process — the method registered with a
fresh registry, resolved, built on a U-Net and trained on `example_batch()`, listed by `ichbench
methods --json`; the dataset ingesting a generated folder. The reference tables must name every
field of the types they document. If the page's code or tables are wrong, these fail."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ichbench.api as api
from ichbench.plugins.scaffold import scaffold

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+) file=(\S+)\n(.*?)^```$", re.M | re.S)
METHOD_PKG, DATA_PKG = "ichbench-my-method", "ichbench-my-data"
EXPECTED = {f"{METHOD_PKG}/pyproject.toml", f"{METHOD_PKG}/src/ichbench_my_method/plugin.py",
            f"{METHOD_PKG}/src/ichbench_my_method/method.py", f"{METHOD_PKG}/src/ichbench_my_method/pretext.py",
            f"{DATA_PKG}/src/ichbench_my_data/plugin.py", f"{DATA_PKG}/src/ichbench_my_data/dataset.py"}


def doc_files() -> dict[str, str]:
    files = {}
    for _lang, path, body in FENCE.findall(DOC.read_text()):
        assert path not in files, f"docs/plugins.md shows {path} twice"
        files[path] = body
    return files


def section(title: str) -> str:
    """The text of the docs section whose heading line starts with `title`, up to the next heading."""
    text = DOC.read_text()
    m = re.search(rf"^#+ {re.escape(title)}.*?$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert m, f"no section {title!r} in docs/plugins.md"
    return m.group(1)


def test_the_marked_blocks_are_the_two_example_packages():
    assert set(doc_files()) == EXPECTED     # a lost marker would silently leave a file untested


def test_the_docs_show_what_the_scaffold_writes(tmp_path):
    scaffold("my-method", "method", tmp_path)
    scaffold("my-data", "dataset", tmp_path)
    for rel, text in doc_files().items():
        assert (tmp_path / rel).read_text() == text, f"docs/plugins.md's {rel} differs from the scaffold's"


@pytest.fixture
def docs_packages(tmp_path, monkeypatch):
    """The two packages written from the docs' blocks, their src folders on sys.path."""
    root = tmp_path / "from-docs"
    for rel, text in doc_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for pkg in (METHOD_PKG, DATA_PKG):
        monkeypatch.syspath_prepend(str(root / pkg / "src"))
    for name in [m for m in sys.modules if m.startswith(("ichbench_my_method", "ichbench_my_data"))]:
        monkeypatch.delitem(sys.modules, name)
    return root


def register_from_docs(registry, root: Path, pkg: str) -> str:
    """Register the package through the entry point its pyproject declares, as an install would."""
    meta = tomllib.loads((root / METHOD_PKG / "pyproject.toml").read_text())["project"]
    [(ep_name, target)] = meta["entry-points"]["ichbench"].items()
    if pkg == DATA_PKG:   # the dataset's pyproject is the method's with the names changed (§7)
        ep_name, target = "my-data", target.replace("my_method", "my_data")
    module = importlib.import_module(target)
    assert registry.add_plugin(module, ep_name, distribution=pkg, version=meta["version"])
    return ep_name


def test_the_docs_method_runs_through_the_api(docs_packages, registry):
    assert register_from_docs(registry, docs_packages, METHOD_PKG) == "my-method"
    m = api.get_method("my_method")
    assert m.has_pretext and m.label_needs.describe() == ["segmentation", "unlabeled"]
    owner = registry.owner("methods", "my_method")
    assert (owner.name, owner.distribution, owner.version, owner.builtin) == ("my-method", METHOD_PKG, "0.1.0", False)

    cfg = api.resolve(m, "phantom", "smoke")
    assert cfg.pretrain.params["head_dims"] == [512, 256, 4] and cfg.pretrain.batch_size == 8
    torch.manual_seed(0)
    unet = api.UNet(base=cfg.model.base_channels)
    model = m.build_pretext(unet, cfg.pretrain)
    assert model.unet is unet and model.dims == [128, 64, 4]          # widths scaled to the 8-channel U-Net
    batch = api.example_batch(8, size=cfg.pretrain.image_size)
    assert model(batch["images"]).shape == (8, 4) and model.features(batch["images"]).shape == (8, 128)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = m.pretext_loss(model, batch, cfg.pretrain, torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    saved = api.part_state(model.unet, m.transfers)
    assert saved and all(k.split(".")[0] in ("encoder", "bottleneck") for k in saved)

    from ichbench.cli.main import app
    out = CliRunner().invoke(app, ["methods", "--json"])
    assert out.exit_code == 0, out.output
    row = {r["name"]: r for r in json.loads(out.stdout)}["my_method"]
    assert (row["plugin"], row["distribution"], row["transfers"]) == ("my-method", METHOD_PKG, ["encoder"])


def test_the_docs_method_registers_without_torch(docs_packages):
    """What the docs recommend, kept by their own example: the entry point's import is light."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(docs_packages / METHOD_PKG / "src"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", "import sys, ichbench_my_method.plugin; print('torch' in sys.modules)"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def write_case(folder: Path, seed: int, slices: int = 6, size: int = 40) -> None:
    """A disc of brain in a skull ring, a 70 HU bleed on slices 2 and 3 (file axes x, y, z)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    r = np.hypot(*(np.mgrid[:size, :size] - size / 2))
    ct = np.full((size, size, slices), -1000.0, np.float32)
    ct[r < 17] = 1000.0
    ct[r < 15] = 35.0 + rng.normal(0, 3, (int((r < 15).sum()), slices))
    mask = np.zeros(ct.shape, np.uint8)
    mask[12:20, 14:22, 2:4] = 1
    ct[mask == 1] = 70.0
    folder.mkdir(parents=True)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "mask.nii.gz"))


def test_the_docs_dataset_ingests_a_generated_folder(docs_packages, registry, home, tmp_path):
    register_from_docs(registry, docs_packages, DATA_PKG)
    ds = api.get_dataset("my_data")
    assert ds.roles == (api.SEGMENTATION,) and registry.owner("datasets", "my_data").distribution == DATA_PKG
    source = tmp_path / "cases"
    write_case(source / "case01", 1)
    write_case(source / "case02", 2)
    (source / "case03").mkdir()
    (source / "case03" / "ct.nii.gz").write_bytes(b"not a nifti file")

    # what the reference says load_ct returns: (S, H, W) with the file's z first, spacing (z, y, x)
    ct = api.load_ct(source / "case01" / "ct.nii.gz")
    assert isinstance(ct, api.NiftiVolume) and ct.data.shape == (6, 40, 40) and ct.data.dtype == np.float32
    assert ct.spacing == (5.0, 0.5, 0.5) and list(ct.slice_index) == list(range(6)) and ct.file_shape == (40, 40, 6)
    assert api.load_mask(source / "case01" / "mask.nii.gz", ct).dtype == bool

    [result] = api.ingest(ds, home, source=source, options=api.IngestOptions(size=32))
    assert isinstance(result, api.IngestResult) and (result.dataset, result.role) == ("my_data", "segmentation")
    assert result.path == api.store_path(home, "my_data", "segmentation") and not result.skipped_as_unchanged
    assert re.fullmatch(r"[0-9a-f]{64}", result.fingerprint)
    [skipped] = result.report.skipped
    assert "case03" in skipped["file"] and skipped["problem"]
    store = api.open_store(result.path)
    assert [v["id"] for v in store.volumes] == ["case01", "case02"] and store.fingerprint == result.fingerprint
    labels = store.load(["labels"])["labels"]
    assert labels.shape == (12, 7) and int(labels[:, 1].sum()) == 4      # two bleeding slices per case
    [again] = api.ingest(ds, home, source=source, options=api.IngestOptions(size=32))
    assert again.skipped_as_unchanged and again.fingerprint == result.fingerprint


@pytest.mark.parametrize("title, names", [
    ("`Volume`", [f.name for f in dataclasses.fields(api.Volume)]),
    ("Reading files", [f.name for f in dataclasses.fields(api.NiftiVolume)]
                      + [f.name for f in dataclasses.fields(api.DicomSlice)]),
    ("Ingest", [f.name for f in dataclasses.fields(api.IngestResult)]
               + [f.name for f in dataclasses.fields(api.IngestOptions)] + ["skip", "warn", "skipped", "warnings"]),
    ("`Dataset`", [n for n in vars(api.Dataset) if not n.startswith("_")]),
    ("2. Write the method", ["forward", "features", "dims", "unet", "mlp"]),
    ("8. A method that fine-tunes by itself",
     [f.name for f in dataclasses.fields(api.Fold) if not f.name.startswith("_")]
     + [f.name for f in dataclasses.fields(api.FoldVolume)]
     + [f.name for f in dataclasses.fields(api.FoldOutput)]
     + ["volumes", "report_epoch", "split_hash", "fold_task", "finetune_fold",
        "finetune_overrides", "owns_finetuning"]),
    ("API reference", ["methods", "datasets", "owner", "plugins", "problems", "add_plugin"]
                      + [f.name for f in dataclasses.fields(__import__("ichbench.plugins.manager",
                                                                        fromlist=["PluginInfo"]).PluginInfo)]),
])
def test_the_reference_names_every_field(title, names):
    text = section(title)
    missing = [n for n in names if not re.search(rf"[`.]{re.escape(n)}[`(]", text)]   # `name`, `x.name(`
    assert not missing, f"docs/plugins.md, section {title!r}, does not document {missing}"


EXAMPLE = re.compile(r"^```python example=(\S+)\n(.*?)^```$", re.M | re.S)


def test_the_docs_multi_class_dataset_ingests_class_maps(docs_packages, registry, home, tmp_path):
    """§7's multi-class example, as the page shows it, beside the scaffold's reader: class maps stored,
    subtypes counted from them, a label image with a value outside the classes named and skipped."""
    import nibabel as nib
    [(rel, code)] = EXAMPLE.findall(DOC.read_text())
    (docs_packages / DATA_PKG / "src" / rel).write_text(code)
    from ichbench_my_data.subtypes import MyDataSubtypes

    class Plugin:   # what `register(MyDataSubtypes())` in plugin.py does
        @api.hookimpl
        def register_datasets(self, register):
            register(MyDataSubtypes())
    assert registry.add_plugin(Plugin(), "my-data-subtypes", distribution=DATA_PKG, version="0.1.0")
    ds = api.get_dataset("my_data_subtypes")
    source = tmp_path / "cases"
    want = {"case01": {2: 2, 3: 5}, "case02": {2: 1, 3: 1}, "case03": {2: 3, 3: 7}}   # slice -> class id
    for seed, (case, by_slice) in enumerate(want.items(), start=1):
        write_case(source / case, seed)
        labels = np.zeros((40, 40, 6), np.uint8)
        for z, k in by_slice.items():
            labels[12:20, 14:22, z] = k
        nib.save(nib.Nifti1Image(labels, np.diag([0.5, 0.5, 5.0, 1.0])), str(source / case / "labels.nii.gz"))
    [result] = api.ingest(ds, home, source=source, options=api.IngestOptions(size=40))
    [skipped] = result.report.skipped
    assert "case03" in skipped["file"] and "7" in skipped["problem"]            # 7 is no class of SUBTYPES
    store = api.open_store(result.path)
    assert [(v["id"], v["subtypes"]) for v in store.volumes] == [("case01", ["ivh", "edh"]), ("case02", ["iph"])]
    data = store.load(["classes", "masks"])
    assert sorted(np.unique(data["classes"][2:4]).tolist()) == [0, 2, 5]       # case01's slices 2 and 3
    assert (data["masks"] == (data["classes"] > 0)).all() and int((data["classes"] == 1).sum()) == 2 * 64
