"""The subtypes task (finetune.task=subtypes, issue 23 §2): its loss, head, transfer, the class
maps' resampling for training, per-class scoring and summaries, and what MLflow, runs --json and
the results table show of them. Tiny tensors and arrays; the one store is the session phantom."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ichbench.config.models import FinetuneConfig, finetune_dict
from ichbench.errors import IchbenchError
from ichbench.evaluate.summary import summarize
from ichbench.losses import dice_loss
from ichbench.losses.multiclass import multiclass_dice_loss
from ichbench.models.unet import UNet, part_state
from ichbench.orchestrate.class_report import class_rows
from ichbench.tracking.records import classes_from_metrics, summary_metrics
from ichbench.train import task
from ichbench.train.data import SliceArrays, _at_size
from ichbench.train.predict import scored_row

NAMES = ["iph", "ivh", "sah", "sdh", "edh"]


def test_one_class_is_the_binary_loss_and_absent_classes_count():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, generator=g)
    target = torch.zeros(4, 8, 8)
    target[0, 2:5, 2:5] = 1
    target[1, 0, :] = 1     # slices 2 and 3 empty: eq. 5's alpha applies to them
    # softmax over two outputs is the sigmoid of their difference: C = 1 is eqs. 4-5 exactly
    for alpha in (0.2, 1.0):
        want = dice_loss(logits[:, 1:] - logits[:, :1], target[:, None], empty_weight=alpha)
        got = multiclass_dice_loss(logits, target[:, None], empty_weight=alpha)
        assert torch.allclose(got, want, atol=1e-6)
    # C = 2: the union's term and the mean over the classes (background not a class term; a class
    # absent from the slice counts)
    three = torch.randn(2, 3, 8, 8, generator=g)
    ids = torch.zeros(2, 8, 8, dtype=torch.long)
    ids[0, :4] = 2
    p = torch.softmax(three, 1)
    from ichbench.losses.dice import soft_dice_per_sample
    classes = (soft_dice_per_sample(p[:, 1], ids == 1) + soft_dice_per_sample(p[:, 2], ids == 2)) / 2
    per = (soft_dice_per_sample(1 - p[:, 0], ids > 0) + classes) / 2   # the union's term and the classes'
    want = (per[0] + 0.5 * per[1]) / 2
    assert torch.allclose(multiclass_dice_loss(three, ids, empty_weight=0.5), want, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        multiclass_dice_loss(three, ids[:, :4])


def test_the_task_is_out_of_the_identity_while_binary():
    assert "task" not in finetune_dict(FinetuneConfig())
    assert finetune_dict(FinetuneConfig(task="subtypes"))["task"] == "subtypes"


class _Store:   # what task.class_names reads of a store (a real one: test_subtypes_phantom_*)
    def __init__(self, names):
        self.class_names, self.path = names, Path("/s/segmentation.zarr")


class _Cfg:
    def __init__(self, t):
        self.finetune = FinetuneConfig(task=t)


def test_a_subtypes_run_needs_a_class_map():
    assert task.class_names(_Cfg("binary"), _Store(NAMES)) is None
    assert task.class_names(_Cfg("subtypes"), _Store(NAMES)) == NAMES
    with pytest.raises(IchbenchError, match=r"finetune.task=subtypes: /s/segmentation.zarr has no class map"):
        task.class_names(_Cfg("subtypes"), _Store(None))


def test_head_prior_is_the_union_probability_and_pretrained_parts_skip_the_head():
    net = UNet(base=4, depth=3, out_channels=task.head_outputs(NAMES))
    task.init_head_prior(net, 0.01, NAMES)
    p = torch.softmax(net.head.bias.detach(), 0)
    assert math.isclose(1 - float(p[0]), 0.01, rel_tol=1e-4) and torch.allclose(p[1:], p[1])
    # a binary pretraining's every part but the head transfers into a subtypes U-Net
    pre = UNet(base=4, depth=3)
    parts = task.transferable(net, ["all"], NAMES)
    assert "head" not in parts and "encoder.0" in parts
    from ichbench.models.unet import transfer_parts
    head_before = net.head.weight.detach().clone()
    copied = transfer_parts(pre.state_dict(), net, parts)
    assert len(copied) == len(part_state(pre, parts)) and torch.equal(net.head.weight, head_before)
    assert task.transferable(net, ["all"], None) == ["all"]   # binary: as the method declares


def test_class_maps_resized_for_training_keep_their_ids():
    classes = np.zeros((1, 8, 8), np.uint8)
    classes[0, :, :4], classes[0, :, 4:] = 2, 5
    assert set(np.unique(_at_size("classes", classes, 4))) == {2, 5}
    assert set(np.unique(_at_size("masks", classes, 4))) == {1}   # the mask rule would merge them


def _arrays(truth: np.ndarray) -> SliceArrays:
    n = truth.shape[0]
    return SliceArrays(images=torch.zeros(truth.shape, dtype=torch.int16),
                       labels=torch.zeros((n, 7), dtype=torch.uint8),
                       volume=torch.zeros(n, dtype=torch.int64), masks=torch.from_numpy((truth > 0).astype(np.uint8)),
                       brain=None, volumes=[{"id": "v", "spacing": [5.0, 1.0, 1.0], "has_ich": True,
                                              "subtypes": ["iph", "sdh"]}],
                       fingerprint="f", path=Path("/s"), rows=torch.arange(n), classes=torch.from_numpy(truth))


def test_a_label_map_scores_its_union_at_the_top_and_each_class_below():
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 1:4, 1:4], truth[1, 5:7, 5:7] = 1, 4
    pred = truth.copy()
    pred[1, 5:7, 5:7] = 2    # right place, wrong class: the union is perfect, sdh is missed
    row = scored_row(_arrays(truth), "v", pred, classes=NAMES)
    binary = scored_row(_arrays(truth), "v", pred > 0)
    assert row["dice"] == binary["dice"] == 1.0 and row["pred_sha256"] == binary["pred_sha256"]
    assert row["classes"]["iph"]["dice"] == 1.0 and row["classes"]["sdh"]["tp"] == 0
    assert row["classes"]["sdh"]["fn"] == 4 and row["classes"]["sdh"]["dice"] < 0.21   # eq. 1's eps alone
    assert row["classes"]["ivh"]["fp"] == 4 and row["classes"]["sah"]["dice"] == 1.0   # absent from both: 1
    assert row["pred_labels_sha256"] != scored_row(_arrays(truth), "v", truth, classes=NAMES)["pred_labels_sha256"]
    assert "classes" not in binary
    # summaries: every class over all volumes and over those holding it, and the macro mean
    s = summarize([row, {**scored_row(_arrays(truth), "v", truth, classes=NAMES), "volume_id": "w"}])
    assert s["all"]["dice"]["mean"] == 1.0
    assert s["classes"]["sdh"]["present"]["dice"]["n"] == 2 and s["classes"]["sdh"]["all"]["dice"]["mean"] < 0.61
    assert s["classes"]["ivh"]["present"]["dice"]["n"] == 0
    assert s["macro"]["present"]["dice"]["n_classes"] == 2   # iph and sdh are in some truth
    assert math.isclose(s["macro"]["all"]["dice"]["mean"],
                        np.mean([s["classes"][n]["all"]["dice"]["mean"] for n in NAMES]))
    # MLflow's names, read back for runs --json, and the console rows
    m = summary_metrics(s)
    assert m["dice_class_sdh_present_mean"] == s["classes"]["sdh"]["present"]["dice"]["mean"]
    back = classes_from_metrics(m)
    assert back["sdh"]["dice_present"] == m["dice_class_sdh_present_mean"]
    assert back["macro"]["hd95_mm_present"] == s["macro"]["present"]["hd95_mm"]["mean"]
    assert classes_from_metrics(summary_metrics(summarize([binary]))) is None
    rows = class_rows(s)
    assert [r[0] for r in rows] == [*NAMES, "macro"] and rows[3][1] == "2"
    assert class_rows(summarize([binary])) == []


def test_every_pretext_checkpoint_loads_into_a_subtypes_unet_but_its_head(tmp_path):
    """context_restoration transfers "all", its 1-output head included: a subtypes U-Net takes the
    rest, and its head keeps the prior it is then given."""
    from ichbench.methods.base import get_method
    from ichbench.models.unet import unet_for
    from ichbench.resolve import resolve
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import _load_pretrained_into

    cfg = resolve("context_restoration", "phantom", "smoke", ["finetune.task=subtypes"])
    pre = unet_for(cfg.model)
    path = ckpt.save_atomic({"kind": "pretrained", "method": "context_restoration", "transfers": ["all"],
                             "state": pre.state_dict(), "model": cfg.model.model_dump()}, tmp_path / "pre.pt")
    net = unet_for(cfg.model, out_channels=len(NAMES) + 1)
    info = _load_pretrained_into(net, get_method("context_restoration"), path, cfg, NAMES)
    assert "head" not in info["parts"] and info["tensors"] == len(pre.state_dict()) - 2   # head weight, bias
    assert torch.equal(net.encoder[0][0].weight, pre.encoder[0][0].weight)


@pytest.mark.slow   # trains: 1 epoch of 4 steps on the session phantom (~5 s of CPU)
def test_a_subtypes_fold_trains_scores_and_saves_its_classes(phantom_store, tmp_path):
    from ichbench.resolve import resolve
    from ichbench.splits import split_for_store
    from ichbench.store import open_store
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import finetune

    split = split_for_store(open_store(phantom_store), 5)
    cfg = resolve("unet_mixed", "phantom", "smoke",
                  ["finetune.task=subtypes", "finetune.epochs=1", "finetune.steps_per_epoch=4"])
    result = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "fold_0", device="cpu", progress=False)
    assert result["classes"] == NAMES and result["config"]["finetune"]["task"] == "subtypes"
    row = result["volumes"][0]
    assert set(row["classes"]) == set(NAMES) and "pred_labels_sha256" in row
    assert set(result["summary"]["classes"]) == set(NAMES) and "macro" in result["summary"]
    model = ckpt.load_model(result["model"]["path"])
    assert model["classes"] == NAMES and model["state"]["head.weight"].shape[0] == len(NAMES) + 1


def test_label_needing_pretexts_on_bhsd_default_to_rsna():
    """bhsd's pretraining store is its unlabelled volumes: the classification pretexts would be
    refused there, so they default to RSNA's; the image-only pretexts pretrain in-domain."""
    from ichbench.resolve import resolve
    assert resolve("multilabel_dl", "bhsd", "smoke").pretrain_dataset == "rsna"
    assert resolve("binary_classification", "bhsd", "smoke").pretrain_dataset == "rsna"
    assert resolve("context_restoration", "bhsd", "smoke").pretrain_dataset == "bhsd"
    assert resolve("multilabel_dl", "phantom", "smoke").pretrain_dataset == "phantom"   # labelled


def test_the_results_table_adds_the_class_table_and_instances_reference_row():
    from ichbench.orchestrate.report import result_table
    from tests.test_console_output import outcome, render

    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 1:4, 1:4], truth[1, 5:7, 5:7] = 1, 4
    o = outcome("unet_mixed")
    o.summary = summarize([scored_row(_arrays(truth), "v", truth, classes=NAMES)])
    for width in (80, 200):
        lines = render(result_table([o]), width)
        text = "\n".join(lines)
        assert "unet_mixed, per class" in text and max(map(len, lines)) <= width and "…" not in text
        [sdh] = [line for line in lines if "│ sdh " in line]
        assert [c.strip() for c in sdh.split("│")[2:5]] == ["1", "100.0", "100.0"]   # n present, Dice all, present
        assert any("│ macro " in line for line in lines)
    text = "\n".join(render(result_table([outcome("unet_mixed", "instance2022")]), 200))
    assert "challenge winner, challenge test set (not these folds)" in text and "69.2" in text
    assert "per class" not in text   # a binary run's summary has no classes
