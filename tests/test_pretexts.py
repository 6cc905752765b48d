"""The paper's six pretext methods (§2.6): label needs, transferred parts, heads, corruption,
region correspondence, frozen encoder, and that every pretext's loss falls on phantom slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ichbench import LABEL_ORDER
from ichbench.config import PretrainConfig
from ichbench.datasets.phantom.generator import generate_volume
from ichbench.errors import UnknownNameError
from ichbench.methods import (binary_classification, context_restoration, global_contrastive, local_contrastive,
                              multilabel)
from ichbench.models.unet import UNet, expand_parts, part_names
from ichbench.preprocess.window import window
from tests.test_pretext_nets import smooth_field

MODULES = (context_restoration, global_contrastive, local_contrastive, binary_classification, multilabel)
METHODS = {m.name: m for mod in MODULES for m in mod.METHODS}
ENCODER = ["encoder.0", "encoder.1", "encoder.2", "encoder.3", "bottleneck"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one intra-op thread is several times faster than two on a shared 2-core box
    (OpenMP threads otherwise wait on each other while other processes hold the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smoke_cfg(method) -> PretrainConfig:
    return PretrainConfig(image_size=64, **method.pretrain_overrides("smoke"))


def test_the_six_methods():
    assert sorted(METHODS) == sorted(["context_restoration", "global_contrastive", "local_contrastive",
                                      "binary_classification", "multilabel_ce", "multilabel_dl"])


# The paper's Table 2: (segmentation, unlabeled, binary, multi-label).
TABLE_2 = {
    "multilabel_dl": (True, False, False, True),
    "multilabel_ce": (True, False, False, True),
    "binary_classification": (True, False, True, False),
    "local_contrastive": (True, True, False, False),
    "global_contrastive": (True, True, False, False),
    "context_restoration": (True, True, False, False),
}


@pytest.mark.parametrize("name", sorted(TABLE_2))
def test_label_needs_are_table_2(name):
    n = METHODS[name].label_needs
    assert (n.segmentation, n.unlabeled, n.binary, n.multilabel) == TABLE_2[name]


TRANSFERS = {
    "context_restoration": part_names(UNet(base=4)),           # the whole model, head included
    "global_contrastive": ENCODER,
    "local_contrastive": ENCODER + ["decoder.0", "decoder.1", "decoder.2"],
    "binary_classification": ENCODER,
    "multilabel_ce": ENCODER,
    "multilabel_dl": ENCODER,
}


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_transfers_name_valid_parts(name):
    m = METHODS[name]
    assert m.has_pretext
    assert expand_parts(UNet(base=4), m.transfers) == TRANSFERS[name]


def test_local_contrastive_starts_from_global():
    assert METHODS["local_contrastive"].init_from == "global_contrastive"
    assert all(METHODS[n].init_from is None for n in METHODS if n != "local_contrastive")


AUG = {"translate": 0.1, "rotate": 15.0, "scale": (0.9, 1.1), "hflip": 0.5}   # §2.3.2, by hand
PAPER = {
    "context_restoration": {"batch_size": 32, "augment": AUG, "params": {"n_swaps": 20, "patch": 20}},
    "global_contrastive": {"batch_size": 60, "params": {"tau": 0.1, "proj_dims": [512, 512, 128]}},
    "local_contrastive": {"batch_size": 24, "params": {"tau": 0.1, "proj_dims": [64, 128, 32],
                                                       "n_regions": 20, "region": 3}},
    "binary_classification": {"batch_size": 64, "augment": AUG, "params": {"mlp_dims": [512, 1024, 256, 2]}},
    "multilabel_ce": {"batch_size": 64, "augment": AUG,
                      "params": {"mlp_dims": [512, 1024, 256, 7], "pos_weight": "selection_frequency"}},
    "multilabel_dl": {"batch_size": 64, "augment": AUG, "params": {"mlp_dims": [512, 1024, 256, 7]}},
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_profile_numbers(name):
    m = METHODS[name]
    assert m.pretrain_overrides("paper") == PAPER[name]
    cfg = PretrainConfig(**m.pretrain_overrides("paper"))
    # the shared pretext settings of §2.6 stay the config's defaults
    assert (cfg.epochs, cfg.lr, cfg.lr_decay, cfg.weight_decay, cfg.image_size) == (50, 1e-3, 0.96, 1e-6, 256)
    smoke = m.pretrain_overrides("smoke")
    assert set(smoke["params"]) == set(PAPER[name]["params"])
    with pytest.raises(UnknownNameError, match="unknown profile 'huge'"):
        m.pretrain_overrides("huge")


@pytest.mark.parametrize("name", ["context_restoration", "binary_classification", "multilabel_ce", "multilabel_dl"])
@pytest.mark.parametrize("dataset", ["segcq500", "hssayeni"])
def test_non_contrastive_pretexts_augment_in_the_paper_profile(registry, name, dataset):
    """§2.3.2 augments "upon data loading"; only the contrastive pretexts use other transforms."""
    from ichbench.resolve import resolve
    cfg = resolve(name, dataset, "paper")
    assert cfg.pretrain.augment == AUG
    assert cfg.to_dict()["pretrain"]["augment"] == {**AUG, "scale": [0.9, 1.1]}


@pytest.mark.parametrize("name", ["global_contrastive", "local_contrastive"])
def test_contrastive_pretexts_use_only_their_view_transforms(registry, name):
    from ichbench.resolve import resolve
    assert resolve(name, "segcq500", "paper").pretrain.augment == {}


def test_multilabel_ce_paper_profile_uses_the_authors_weights(registry):
    """§2.6.2.2's "weighted binary cross-entropy" with the authors' weights: (N − n_pos) / n_pos
    per class over the selection's labels, fixed once; "none" stays the plain BCE."""
    from ichbench.errors import IchbenchError
    from ichbench.resolve import resolve
    m = METHODS["multilabel_ce"]
    cfg = resolve(m, "segcq500", "paper").pretrain
    assert cfg.params["pos_weight"] == "selection_frequency"
    model = m.build_pretext(UNet(base=4), cfg).train()
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0, 1]], dtype=torch.uint8)
    images = torch.rand(3, 1, 32, 32)
    batch = {"images": images, "labels": labels}
    with pytest.raises(IchbenchError, match="pretext_setup"):
        m.pretext_loss(model, batch, cfg, None)   # never a silent unweighted loss
    # a selection of 8 slices: 2 without ICH, 6 with; iph 3, ivh 1, sah 2 (of 7 known), sdh 0, edh 8
    selection = np.array([[1, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 1]] +
                         [[0, 1, int(i < 3), int(i == 0), int(i in (1, 2)), 0, 1] for i in range(6)], np.uint8)
    selection[7, 4] = 255                          # an unknown entry is not counted
    setup = m.pretext_setup(model, selection, cfg)
    want = [6 / 2, 2 / 6, 5 / 3, 7 / 1, 5 / 2, 1.0, 0.0]   # sdh: no positive -> 1; edh: all -> 0
    assert setup["pos_weight"]["values"] == pytest.approx(want)
    assert setup["pos_weight"]["n_positive"] == [2, 6, 3, 1, 2, 0, 8]
    assert setup["pos_weight"]["classes"] == list(LABEL_ORDER)
    loss = m.pretext_loss(model, batch, cfg, None)
    expected = F.binary_cross_entropy_with_logits(model(images), labels.float(), pos_weight=torch.tensor(want))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert model.label_pos.sum() == 0          # fixed: no running counts
    assert "fixed_pos_weight" not in model.state_dict()   # recomputed at every start, not a weight
    model.eval()                               # validation batches: the same weights
    with torch.no_grad():
        expected = F.binary_cross_entropy_with_logits(model(images), labels.float(), pos_weight=torch.tensor(want))
        assert torch.allclose(m.pretext_loss(model, batch, cfg, None), expected, atol=1e-6)
    model.train()
    # "none": the plain BCEWithLogitsLoss
    cfg = resolve(m, "segcq500", "paper", ["pretrain.params.pos_weight=none"]).pretrain
    assert m.pretext_setup(model, selection, cfg) == {}
    plain = F.binary_cross_entropy_with_logits(model(images), labels.float())
    assert torch.allclose(m.pretext_loss(model, batch, cfg, None), plain, atol=1e-6)


def test_profile_resolves_through_the_config(registry):
    from ichbench.resolve import resolve
    cfg = resolve(METHODS["context_restoration"], "phantom", "smoke", ["pretrain.params.n_swaps=12"])
    assert (cfg.pretrain.batch_size, cfg.pretrain.image_size, cfg.model.base_channels) == (8, 64, 8)
    assert cfg.pretrain.params == {"n_swaps": 12, "patch": 5}
    cfg = resolve(METHODS["multilabel_ce"], "phantom", "paper", ["pretrain.params.pos_weight=1,1,5,7,5,4,68"])
    assert cfg.pretrain.batch_size == 64
    assert METHODS["multilabel_ce"].fixed_weights(cfg.pretrain.params["pos_weight"]).tolist() == [1, 1, 5, 7, 5, 4, 68]


def test_overrides_are_copies():
    m = METHODS["global_contrastive"]
    m.pretrain_overrides("paper")["params"]["tau"] = 5.0
    assert m.pretrain_overrides("paper")["params"]["tau"] == 0.1


# -- heads --------------------------------------------------------------------------------------

@pytest.mark.parametrize("base, dims", [
    (32, {"global_contrastive": [512, 512, 128], "binary_classification": [512, 1024, 256, 2],
          "multilabel_ce": [512, 1024, 256, 7], "multilabel_dl": [512, 1024, 256, 7]}),
    (8, {"global_contrastive": [128, 128, 32], "binary_classification": [128, 256, 64, 2],
         "multilabel_ce": [128, 256, 64, 7], "multilabel_dl": [128, 256, 64, 7]}),
])
def test_pooled_heads_follow_the_paper_and_scale_with_width(base, dims):
    x = torch.rand(2, 1, 16, 16)
    for name, expected in dims.items():
        m = METHODS[name]
        model = m.build_pretext(UNet(base=base), PretrainConfig(**m.pretrain_overrides("paper")))
        assert model.dims == expected
        linear = [layer for layer in model.mlp if isinstance(layer, torch.nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in linear] == list(zip(expected[:-1], expected[1:]))
        assert model(x).shape == (2, expected[-1])


@pytest.mark.parametrize("base, dims", [(32, [64, 128, 32]), (8, [16, 32, 8])])
def test_local_projector_shape(base, dims):
    m = METHODS["local_contrastive"]
    model = m.build_pretext(UNet(base=base), PretrainConfig(**m.pretrain_overrides("paper")))
    convs = [c for c in model.projector if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
        [(dims[0], dims[1], (1, 1)), (dims[1], dims[2], (1, 1))]
    # three decoder blocks: half the input resolution
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, dims[2], 16, 16)


def test_restoration_uses_the_whole_unet():
    m = METHODS["context_restoration"]
    model = m.build_pretext(UNet(base=4), smoke_cfg(m))
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="one-channel"):
        m.build_pretext(UNet(base=4, out_channels=2), smoke_cfg(m))


def test_classifier_output_count_is_checked():
    m = METHODS["multilabel_dl"]
    cfg = PretrainConfig(params={"mlp_dims": [512, 256, 5]})
    with pytest.raises(ValueError, match="7 outputs"):
        m.build_pretext(UNet(base=4), cfg)


# -- local contrastive -------------------------------------------------------------------------

def test_local_contrastive_trains_only_the_decoder_and_projector():
    torch.manual_seed(0)
    m = METHODS["local_contrastive"]
    cfg = smoke_cfg(m)
    unet = UNet(base=4)
    model = m.build_pretext(unet, cfg)
    model.train()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    proj_before = [p.clone() for p in model.projector.parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = {id(p) for part in [*unet.encoder, unet.bottleneck] for p in part.parameters()}
    assert trainable and not frozen & {id(p) for p in trainable}
    opt = torch.optim.Adam(trainable, lr=1e-2)
    batch = {"images": smooth_field(4, 64, 1), "labels": torch.zeros(4, 7, dtype=torch.uint8)}
    for step in range(2):
        loss = m.pretext_loss(model, batch, cfg, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = unet.state_dict()
    for k in before:
        part = k.split(".")[0] if k.startswith(("bottleneck", "head")) else ".".join(k.split(".")[:2])
        moved = not torch.equal(before[k], after[k])
        if part in ENCODER or part in ("decoder.3", "head"):
            assert not moved, f"{k} changed"          # frozen (weights and BN statistics) or unused
        elif k.endswith("weight") and part in ("decoder.0", "decoder.1", "decoder.2"):
            assert moved, f"{k} did not train"
    assert all(not torch.equal(a, b) for a, b in zip(proj_before, model.projector.parameters()))


# -- classification labels ----------------------------------------------------------------------

def test_binary_classification_ignores_unknown_labels():
    torch.manual_seed(0)
    m = METHODS["binary_classification"]
    cfg = smoke_cfg(m)
    model = m.build_pretext(UNet(base=4), cfg).eval()
    images = torch.rand(4, 1, 32, 32)
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0],
                           [255] * 7, [0, 1, 0, 0, 0, 1, 0]], dtype=torch.uint8)
    loss = m.pretext_loss(model, {"images": images, "labels": labels}, cfg, None)
    logits = model(images)
    expected = F.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 1, 1]))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_multilabel_ce_weights():
    m = METHODS["multilabel_ce"]
    cfg = smoke_cfg(m)
    model = m.build_pretext(UNet(base=4), cfg).train()
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0],
                           [0, 1, 1, 1, 255, 0, 0]], dtype=torch.uint8)
    w = model.observe(labels)
    # no_ich 2+/2-, any 2+/2-, iph 2+/2-, ivh 1+/3-, sah 0+/3- (unknown not counted), sdh/edh 0+
    assert w.tolist() == pytest.approx([1.0, 1.0, 1.0, 3.0, 100.0, 100.0, 100.0])
    model.eval()
    model.observe(labels)                      # evaluation batches are not counted
    assert model.label_pos.tolist() == [2, 2, 2, 1, 0, 0, 0]
    images = torch.rand(4, 1, 32, 32)
    fixed = {"images": images, "labels": labels}
    cfg.params["pos_weight"] = "1,2,3,4,5,6,7"   # what `--set` leaves in a str param
    logits = model(images)
    known = labels != 255
    y = torch.where(known, labels, 0).float()
    per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.arange(1.0, 8.0), reduction="none")
    expected = per[known].mean()
    assert torch.allclose(m.pretext_loss(model, fixed, cfg, None), expected, atol=1e-6)
    cfg.params["pos_weight"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="7 positive numbers"):
        m.pretext_loss(model, fixed, cfg, None)


# -- every pretext learns on the phantom ----------------------------------------------------------

@pytest.fixture(scope="module")
def phantom_batch():
    """8 windowed 64x64 phantom slices (ICH and not, several subtypes) with their 7 labels."""
    images, labels = [], []
    for seed, subtypes in [(1, ["iph", "sdh"]), (2, ["sah", "edh"]), (3, ["ivh"])]:
        v = generate_volume(seed, vol_id=f"P{seed}", slices=16, size=64, subtypes=subtypes)
        anyich = v.mask.reshape(len(v.hu), -1).any(1)
        sub = np.stack([v.subtype_masks[s].reshape(len(v.hu), -1).any(1) for s in LABEL_ORDER[2:]], 1)
        images.append(window(v.hu))
        labels.append(np.concatenate([~anyich[:, None], anyich[:, None], sub], 1))
    images, labels = np.concatenate(images), np.concatenate(labels).astype(np.uint8)
    pick = np.r_[0:48:6]
    batch = {"images": torch.from_numpy(images[pick]).float()[:, None], "labels": torch.from_numpy(labels[pick])}
    any_ich = batch["labels"][:, 1]
    assert 0 < int(any_ich.sum()) < len(pick) and batch["labels"][:, 2:].sum(0).gt(0).sum() >= 3
    return batch


@pytest.mark.parametrize("name", sorted(METHODS))
def test_pretext_loss_falls(name, phantom_batch):
    torch.manual_seed(0)
    m = METHODS[name]
    cfg = smoke_cfg(m)
    model = m.build_pretext(UNet(base=8), cfg)
    m.pretext_setup(model, phantom_batch["labels"].numpy(), cfg)   # multilabel_ce: the batch's weights
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(15):
        # the same seed each step: the same corruption / views, so the objective is fixed
        loss = m.pretext_loss(model, phantom_batch, cfg, torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.8 * first, f"{name}: loss {first:.4f} -> {last:.4f}"
