"""A dataset plugin with only a segmentation role: without an RSNA pretraining store in the
workspace its pretexts pretrain on its own segmentation slices (said on the console, recorded in
the config); with one, on RSNA as in the paper; a pretext that needs slice labels is refused there,
since those labels come from the masks of the volumes the folds test on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ichbench.resolve import resolve
from ichbench.datasets.base import PRETRAINING, SEGMENTATION, IngestOptions, Volume
from ichbench.errors import IchbenchError
from ichbench.orchestrate.plan import plan_method
from ichbench.plugins import hookimpl
from ichbench.store import open_store, store_path
from ichbench.ingest import ingest
from tests.synthetic import SyntheticDataset, make_volume

FAST = ["pretrain.epochs=1", "pretrain.steps_per_epoch=2"]
NOTE = "pretraining on segonly's own slices: no rsna pretraining store; ingest rsna or pass --pretrain-dataset"


class SegOnly(SyntheticDataset):
    name = "segonly"


class NoSubtypes(SyntheticDataset):
    """Masks only: every volume's subtypes are unknown."""
    name = "nosubtypes"

    def read(self, source, role, options, report):
        for vol in super().read(source, role, options, report):
            vol.subtypes = None
            yield vol


class FakeRsna(SyntheticDataset):
    """A pretraining store under the name `rsna` (slice labels, no masks)."""
    name = "rsna"
    roles = (PRETRAINING,)

    def read(self, source, role, options, report):
        for i in range(self.n):
            v = make_volume(100 + i, ich=i % 2 == 0)
            anyich = v.mask.reshape(len(v.mask), -1).any(1)
            labels = np.zeros((len(anyich), 7), np.uint8)
            labels[:, 0], labels[:, 1], labels[:, 2] = ~anyich, anyich, anyich
            yield Volume(id=f"R{i}", hu=v.hu, spacing=v.spacing, labels=labels)


class Plugin:
    @hookimpl
    def register_datasets(self, register):
        register(SegOnly())
        register(NoSubtypes())


@pytest.fixture
def seg_home(home, registry):
    assert registry.add_plugin(Plugin(), "segonly-plugin")
    ingest(SegOnly(n=10), home, source=home, options=IngestOptions(size=32))
    return home


def test_pretrains_on_its_own_segmentation_slices_without_an_rsna_store(seg_home):
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import pretrain

    plan = plan_method("global_contrastive", "segonly", "smoke", seg_home, k=2, overrides=FAST)
    cfg = plan.cfg
    assert (cfg.pretrain_dataset, cfg.pretrain_role) == ("segonly", SEGMENTATION)
    assert {"pretrain_dataset": "segonly", "pretrain_role": "segmentation"}.items() <= cfg.to_dict().items()
    assert plan.notes == [NOTE]
    assert plan.pretrain_store.path == plan.store.path == store_path(seg_home, "segonly", SEGMENTATION)
    # the role is part of the pretraining's identity, so its cache slot is its own
    usual = resolve("global_contrastive", "segonly", "smoke", FAST, pretrain_dataset="segonly")
    usual.pretrain_role = PRETRAINING
    assert cfg.hash() != usual.hash()
    # and the engine trains on it: every slice (their labels come from the masks of the volumes the
    # folds test on, so they select nothing: tests/test_blind_folds.py), a tenth held out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = pretrain(plan.method, plan.pretrain_store.path, cfg, plan.pretrain_dir, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    pre = ckpt.load_pretrained(path)
    labels = open_store(plan.store.path).load(["labels"])["labels"]
    selected = len(labels)                          # 50 slices, 10 of them ICH
    assert 0 < int(labels[:, 1].sum()) < selected // 2
    assert pre["store_fingerprint"] == plan.store.fingerprint
    assert (pre["n_train_slices"], pre["n_holdout_slices"]) == (selected - selected // 10, selected // 10)
    assert pre["config"]["pretrain_role"] == "segmentation" and len(pre["history"]) == 1


def test_an_rsna_store_keeps_the_papers_default(seg_home):
    ingest(FakeRsna(n=4), seg_home, source=seg_home, options=IngestOptions(size=32))
    plan = plan_method("global_contrastive", "segonly", "smoke", seg_home, k=2, overrides=FAST)
    assert (plan.cfg.pretrain_dataset, plan.cfg.pretrain_role) == ("rsna", PRETRAINING)
    assert plan.pretrain_store.path == store_path(seg_home, "rsna", PRETRAINING) and not plan.notes
    # without a workspace (a plugin's own tests) the default stays rsna
    assert resolve("global_contrastive", "segonly", "smoke").pretrain_dataset == "rsna"


def test_pretexts_that_need_labels_are_refused_on_own_slices(seg_home):
    with pytest.raises(IchbenchError, match="binary_classification cannot pretrain on segonly's own slices: their "
                                            "ICH labels come from the masks of the volumes it is tested on; "
                                            "ingest rsna .* and pass --pretrain-dataset"):
        plan_method("binary_classification", "segonly", "smoke", seg_home, k=2)
    # named explicitly, the same store is refused for the same reason
    with pytest.raises(IchbenchError, match="multilabel_dl cannot pretrain on segonly's own slices"):
        plan_method("multilabel_dl", "segonly", "smoke", seg_home, k=2, pretrain_dataset="segonly")


def test_multilabel_refusal_says_why_a_segmentation_store_lacks_subtypes(seg_home):
    ingest(NoSubtypes(n=6), seg_home, source=seg_home, options=IngestOptions(size=32))
    with pytest.raises(IchbenchError) as exc:
        plan_method("multilabel_dl", "segonly", "smoke", seg_home, k=2, pretrain_dataset="nosubtypes")
    msg = str(exc.value)
    assert "labeled slices have unknown subtypes (255) (a segmentation store knows subtypes only where its " \
           "reader gave Volume.subtypes or Volume.labels; masks alone say ICH or not)" in msg
    assert msg.endswith("multi-label pretraining needs all five subtype labels; pretrain on a store that has "
                        "them (--pretrain-dataset rsna)") and "\n" not in msg


def test_run_says_so_in_one_line_and_the_plan_records_it(seg_home):
    from ichbench.cli.main import app
    out = CliRunner().invoke(app, ["run", "--method", "global_contrastive,context_restoration", "--dataset",
                                   "segonly", "--profile", "smoke", "--k", "2", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.stderr.strip().splitlines() == [f"ichbench: {NOTE}"]       # once for both methods
    plans = json.loads(out.stdout)
    assert [(p["config"]["pretrain_dataset"], p["config"]["pretrain_role"]) for p in plans] == \
        [("segonly", "segmentation")] * 2
    # a baseline has no pretext: nothing to say
    out = CliRunner().invoke(app, ["run", "--method", "unet_mixed", "--dataset", "segonly", "--profile", "smoke",
                                   "--k", "2", "--dry-run"])
    assert out.exit_code == 0 and out.stderr == ""
