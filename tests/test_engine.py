"""Training engine on the CPU: determinism, resume after a kill, caching, sampling (label needs:
tests/test_label_needs.py).

Runs are tiny (a 4-channel U-Net at 32x32, a few steps): these tests check the engine's
bookkeeping, not learning (tests/test_finetune_smoke.py does that).
"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ichbench.config import resolve_icm
from ichbench.resolve import resolve
from ichbench.errors import IchbenchError
from ichbench.icm import CavitySource
from ichbench.methods.base import LabelNeeds, Method
from ichbench.preprocess.resize import resize_slices
from ichbench.splits import split_for_store, train_ids
from ichbench.store import open_store
from ichbench.train import checkpoint as ckpt
from ichbench.train.data import EpochSampler, finetune_pool, load_store, pretrain_selection, volume_rows
from ichbench.train.engine import finetune, pretrain
from ichbench.train.predict import predict

TINY = ["model.base_channels=4", "finetune.image_size=32", "finetune.epochs=2", "finetune.steps_per_epoch=3",
        "finetune.batch_size=8"]


@pytest.fixture(scope="module")
def split(phantom_store):
    return split_for_store(open_store(phantom_store), 3)


class Killed(Exception):
    pass


def kill_after(epoch_to_die: int):
    def hook(epoch, history):
        if epoch == epoch_to_die:
            raise Killed
    return hook


def recorder(calls: list):
    return lambda epoch, history: calls.append(epoch)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- fine-tuning --------------------------------------------------------------------------------------

def test_finetune_is_deterministic_on_cpu(phantom_store, split, tmp_path):
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY)
    r1 = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "a", device="cpu", progress=False)
    r2 = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "b", device="cpu", progress=False)
    assert [h["loss"] for h in r1["history"]] == [h["loss"] for h in r2["history"]]
    assert r1["volumes"] == r2["volumes"]
    s1, s2 = ckpt.load(tmp_path / "a" / "state.pt"), ckpt.load(tmp_path / "b" / "state.pt")
    assert same_tensors(s1["model"], s2["model"])
    # a different seed is a different run
    seed1 = resolve("unet_mixed", "phantom", "smoke", TINY + ["finetune.seed=1"])
    r3 = finetune("unet_mixed", phantom_store, split, 0, seed1,
                  tmp_path / "c", device="cpu", progress=False)
    assert [h["loss"] for h in r3["history"]] != [h["loss"] for h in r1["history"]]


def test_result_holds_config_and_per_volume_metrics(phantom_store, split, tmp_path):
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY + ["finetune.epochs=1"])
    r = finetune("unet_mixed", phantom_store, split, 1, cfg, tmp_path, device="cpu", progress=False)
    assert (tmp_path / "result.json").exists()
    assert [v["volume_id"] for v in r["volumes"]] == split["folds"][1]["test"]
    assert set(r["train_volumes"]) == set(train_ids(split, 1))
    assert r["config"]["finetune"]["epochs"] == 1 and r["config"]["model"]["base_channels"] == 4
    assert r["summary"]["all"]["n"] == len(split["folds"][1]["test"])
    # 32x32 from a 64x64 store: voxels are twice as wide, so mL stays comparable with the store's
    truth = sum(v["tp"] + v["fn"] for v in r["volumes"])
    assert truth > 0
    s = open_store(phantom_store)
    vol = next(v for v in s.volumes if v["id"] == r["volumes"][0]["volume_id"])
    z, y, x = vol["spacing"]
    row = r["volumes"][0]
    assert row["true_ml"] == pytest.approx((row["tp"] + row["fn"]) * z * (2 * y) * (2 * x) / 1000)


def test_killed_finetune_resumes_to_identical_results(phantom_store, split, tmp_path):
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY)
    full = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "full", device="cpu", progress=False)
    with pytest.raises(Killed):
        finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "cut", device="cpu", progress=False,
                 on_epoch=kill_after(1))
    assert ckpt.load(tmp_path / "cut" / "state.pt")["epoch"] == 1
    assert not (tmp_path / "cut" / "result.json").exists()
    calls = []
    resumed = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "cut", device="cpu", progress=False,
                       on_epoch=recorder(calls))
    assert calls == [2]  # only the missing epoch ran
    a, b = ckpt.load(tmp_path / "full" / "state.pt"), ckpt.load(tmp_path / "cut" / "state.pt")
    assert same_tensors(a["model"], b["model"])
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert full["volumes"] == resumed["volumes"]
    # finished: a further call only re-evaluates
    calls.clear()
    again = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "cut", device="cpu", progress=False,
                     on_epoch=recorder(calls))
    assert calls == [] and again["volumes"] == full["volumes"]
    # another config must not silently continue this run's checkpoint
    other = resolve("unet_mixed", "phantom", "smoke", TINY + ["finetune.lr=0.01"])
    with pytest.raises(IchbenchError, match="different configuration"):
        finetune("unet_mixed", phantom_store, split, 0, other, tmp_path / "cut", device="cpu", progress=False)


def test_icm_predictions_stay_inside_the_brain(phantom_store):
    arrays = load_store(phantom_store, 64)

    class AlwaysPositive(nn.Module):
        def forward(self, x):
            return torch.full_like(x, 10.0)
    rows = torch.arange(20)
    plain = predict(AlwaysPositive(), arrays, rows, torch.device("cpu"), 0.5)
    shipped = CavitySource(resolve_icm("phantom", "smoke", ["icm.source=shipped"]))
    masked = predict(AlwaysPositive(), arrays, rows, torch.device("cpu"), 0.5, cavity=shipped)
    assert plain.all()
    np.testing.assert_array_equal(masked, arrays.brain[rows].numpy().astype(bool))
    assert 0 < masked.mean() < 1


# -- data -----------------------------------------------------------------------------------------------

def test_load_store_resizes_on_load(phantom_store):
    full, half = load_store(phantom_store, 64), load_store(phantom_store, 32)
    assert half.images.shape == (len(full), 32, 32) and half.images.dtype == torch.int16
    assert set(torch.unique(half.masks).tolist()) <= {0, 1}
    # the same resampling as ingest uses (antialiased bilinear, rounded to int16 HU)
    expected = resize_slices(full.images[:4].numpy().astype(np.float32), 32)
    assert (half.images[:4].numpy().astype(int) - expected).__abs__().max() <= 1
    assert half.masks.sum() > 0
    assert torch.equal(half.labels, full.labels)


def test_mixed_and_ich_only_sampling(phantom_store, split):
    arrays = load_store(phantom_store, 64)
    train = volume_rows(arrays, train_ids(split, 0))
    has = arrays.masks.flatten(1).bool().any(1)
    ich = set(train[has[train]].tolist())
    non = set(train[~has[train]].tolist())
    assert len(non) > 2 * len(ich)  # otherwise the test could not see the ratio
    g = torch.Generator().manual_seed(0)
    epoch1 = finetune_pool(arrays, train, "mixed", 2.0)(g).tolist()
    epoch2 = finetune_pool(arrays, train, "mixed", 2.0)(g).tolist()
    for drawn in (epoch1, epoch2):
        assert len(drawn) == len(set(drawn)) == 3 * len(ich)
        assert ich <= set(drawn) and set(drawn) - ich <= non
    assert set(epoch1) != set(epoch2)  # the healthy slices are redrawn each epoch
    assert set(finetune_pool(arrays, train, "ich_only", 2.0)(g).tolist()) == ich
    # test volumes never leak into training
    test = set(volume_rows(arrays, split["folds"][0]["test"]).tolist())
    assert not test & set(epoch1)


def test_mixed_negatives_drawn_once_per_fold_or_every_epoch(phantom_store, split):
    """§2.5.3's "twice as many normal slices randomly selected": per_fold (the authors' scripts, the
    paper profile) draws them once from (seed, fold); per_epoch (smoke) redraws every epoch."""
    arrays = load_store(phantom_store, 64)
    train = volume_rows(arrays, train_ids(split, 0))
    has = arrays.masks.flatten(1).bool().any(1)
    ich, non = set(train[has[train]].tolist()), set(train[~has[train]].tolist())
    assert len(non) > 3 * len(ich)   # room for other draws

    def negatives_per_epoch(negatives, seed=0, fold=0, sampler_seed=0, epochs=3):
        pool = finetune_pool(arrays, train, "mixed", 2.0, negatives=negatives, seed=seed, fold=fold)
        sampler = EpochSampler(pool, 8, None, torch.Generator().manual_seed(sampler_seed))
        out = []
        for _ in range(epochs):
            drawn = torch.cat(sampler.epoch()).tolist()
            assert len(drawn) == len(set(drawn)) == 3 * len(ich) and ich <= set(drawn)
            out.append(frozenset(set(drawn) - ich))
        assert all(e <= non for e in out)
        return out

    once = negatives_per_epoch("per_fold")
    assert len(set(once)) == 1                                   # the same negatives every epoch
    assert negatives_per_epoch("per_fold", sampler_seed=7)[0] == once[0]   # and every run
    assert negatives_per_epoch("per_fold", fold=1)[0] != once[0]           # another fold: others
    assert negatives_per_epoch("per_fold", seed=1)[0] != once[0]           # another seed: others
    assert len(set(negatives_per_epoch("per_epoch"))) == 3       # redrawn each epoch


@pytest.mark.parametrize("negatives", ["per_fold", "per_epoch"])
def test_finetuning_draws_the_negatives_its_config_says(phantom_store, split, tmp_path, monkeypatch, negatives):
    """The engine hands `finetune.negatives`, the seed and the fold to the pool."""
    import ichbench.train.engine as engine
    pools = []

    def recording(*args, **kwargs):
        pool = finetune_pool(*args, **kwargs)
        return lambda g: pools.append(pool(g)) or pools[-1]
    monkeypatch.setattr(engine, "finetune_pool", recording)
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY + [f"finetune.negatives={negatives}", "finetune.seed=3"])
    finetune("unet_mixed", phantom_store, split, 1, cfg, tmp_path / "f", device="cpu", progress=False)
    assert len(pools) == 2                                       # one pass over the pool per epoch
    arrays = load_store(phantom_store, 32)
    fixed = finetune_pool(arrays, volume_rows(arrays, train_ids(split, 1)), "mixed", 2.0,
                          negatives="per_fold", seed=3, fold=1)(None)
    same = [set(p.tolist()) == set(fixed.tolist()) for p in pools]
    assert same == ([True, True] if negatives == "per_fold" else [False, False])


def test_epoch_sampler_batches():
    g = torch.Generator().manual_seed(0)
    pool = torch.arange(10)
    one_pass = EpochSampler(lambda _: pool, 4, None, g).epoch()
    assert [len(b) for b in one_pass] == [4, 4, 2] and sorted(torch.cat(one_pass).tolist()) == list(range(10))
    assert [len(b) for b in EpochSampler(lambda _: pool, 4, None, g, drop_last=True).epoch()] == [4, 4]
    assert [len(b) for b in EpochSampler(lambda _: pool, 3, None, g).epoch()] == [3, 3, 3]  # a batch of 1 is dropped
    assert [len(b) for b in EpochSampler(lambda _: pool, 4, 5, g).epoch()] == [4, 4, 2, 4, 4]


def test_pretrain_selection_is_balanced():
    labels = np.zeros((40, 7), np.uint8)
    labels[:, 0] = 1
    labels[:6, :2] = (0, 1)              # 6 ICH slices
    labels[30:, :] = 255                 # 10 slices with unknown labels are not used
    train, hold = pretrain_selection(labels, holdout=5000, seed=0)
    rows = np.concatenate([train, hold])
    assert len(rows) == 12 and len(set(rows)) == 12
    assert set(range(6)) <= set(rows) and not set(rows) & set(range(30, 40))
    assert len(hold) == 1                # at most a tenth of a small store
    assert len(pretrain_selection(labels, holdout=0, seed=0)[1]) == 0
    unlabeled = np.full((20, 7), 255, np.uint8)
    train, hold = pretrain_selection(unlabeled, holdout=3, seed=0)
    assert sorted(np.concatenate([train, hold])) == list(range(20)) and len(hold) == 2


# -- pretraining ----------------------------------------------------------------------------------------

class Denoise(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x):
        return self.unet(x)


class FakeDenoising(Method):
    """A minimal pretext for engine tests: restore images from added Gaussian noise."""
    name = "fake_denoising"
    label_needs = LabelNeeds(unlabeled=True)
    transfers = ("encoder",)

    def pretrain_overrides(self, profile):
        return {"params": {"noise": 0.1}}

    def build_pretext(self, unet, cfg):
        return Denoise(unet)

    def pretext_loss(self, model, batch, cfg, generator):
        x = batch["images"]
        noise = torch.randn(x.shape, generator=generator, device=x.device) * cfg.params["noise"]
        return F.mse_loss(model(x + noise), x)


PRE_TINY = ["model.base_channels=4", "pretrain.image_size=32", "pretrain.epochs=2", "pretrain.steps_per_epoch=2",
            "pretrain.batch_size=8", "pretrain.holdout=8"]


def test_pretrain_resumes_and_is_cached(phantom_store, tmp_path):
    m = FakeDenoising()
    cfg = resolve(m, "phantom", "smoke", PRE_TINY)
    full = pretrain(m, phantom_store, cfg, tmp_path / "full", device="cpu", progress=False)
    with pytest.raises(Killed):
        pretrain(m, phantom_store, cfg, tmp_path / "cut", device="cpu", progress=False, on_epoch=kill_after(1))
    calls = []
    cut = pretrain(m, phantom_store, cfg, tmp_path / "cut", device="cpu", progress=False, on_epoch=recorder(calls))
    assert calls == [2]
    a, b = ckpt.load_pretrained(full), ckpt.load_pretrained(cut)
    assert same_tensors(a["state"], b["state"])
    assert [(h["loss"], h["val_loss"]) for h in a["history"]] == [(h["loss"], h["val_loss"]) for h in b["history"]]
    assert all(np.isfinite(h["val_loss"]) for h in a["history"])
    # only the declared parts are saved: encoder levels and bottleneck, nothing of the decoder/head
    assert a["state"] and all(k.startswith(("encoder.", "bottleneck.")) for k in a["state"])
    assert a["method"] == "fake_denoising" and a["config_hash"] == cfg.hash()
    assert a["store_fingerprint"] == open_store(phantom_store).fingerprint
    # finished: returned from the cache without training
    calls.clear()
    assert pretrain(m, phantom_store, cfg, tmp_path / "full", device="cpu", progress=False,
                    on_epoch=recorder(calls)) == full
    assert calls == []


def test_streamed_pretraining_resumes_to_the_same_weights(phantom_store, tmp_path, capsys):
    m = FakeDenoising()
    cfg = resolve(m, "phantom", "smoke", PRE_TINY + ["data.stream=true", "data.shuffle_shards=2"])
    full = pretrain(m, phantom_store, cfg, tmp_path / "full", device="cpu", progress=False)
    assert f"store {phantom_store}: " in capsys.readouterr().err   # the log says it streams, and why
    with pytest.raises(Killed):
        pretrain(m, phantom_store, cfg, tmp_path / "cut", device="cpu", progress=False, on_epoch=kill_after(1))
    cut = pretrain(m, phantom_store, cfg, tmp_path / "cut", device="cpu", progress=False)
    a, b = ckpt.load_pretrained(full), ckpt.load_pretrained(cut)
    assert same_tensors(a["state"], b["state"])
    assert [(h["loss"], h["val_loss"]) for h in a["history"]] == [(h["loss"], h["val_loss"]) for h in b["history"]]
    assert a["data_path"] == "streamed" and "(data.stream=true), cached in " in a["data_path_reason"]
    # the in-memory path draws the same batches from the same seed (issue 21 §2), so on the CPU it
    # trains to the same weights; the cache key is the same
    loaded = pretrain(m, phantom_store, resolve(m, "phantom", "smoke", PRE_TINY + ["data.stream=false"]),
                      tmp_path / "loaded", device="cpu", progress=False)
    c = ckpt.load_pretrained(loaded)
    assert c["data_path"] == "in-memory" and c["config_hash"] == a["config_hash"]
    assert (c["n_train_slices"], c["n_holdout_slices"]) == (a["n_train_slices"], a["n_holdout_slices"])
    assert [(h["loss"], h["val_loss"]) for h in a["history"]] == [(h["loss"], h["val_loss"]) for h in c["history"]]
    assert same_tensors(a["state"], c["state"])


def test_multilabel_ce_trains_with_the_authors_weights_of_the_selection(phantom_stores, tmp_path, monkeypatch):
    """§2.6.2.2 / the authors' script: pos_weight = (N − n_pos) / n_pos per class, once, over the
    pretraining selection; the weights every batch uses are those, and the run records them."""
    import json
    import ichbench.losses
    from ichbench.store import store_path
    path = store_path(phantom_stores, "phantom", "pretraining")
    labels = np.asarray(open_store(path).load(["labels"])["labels"])
    # the phantom's pretraining store is balanced (as many slices with ICH as without), so its
    # selection is every slice: the weights by hand, with numpy, from the store's label array
    n_pos = (labels == 1).sum(0)
    n = (labels != 255).sum(0)
    want = np.where(n_pos > 0, (n - n_pos) / np.maximum(n_pos, 1), 1.0)
    assert (n_pos == 0).any() and (n_pos > 0).any()      # the rule for a class without positives too
    used = []
    real = ichbench.losses.weighted_bce

    def recording(logits, target, pos_weight=None):
        used.append(pos_weight)
        return real(logits, target, pos_weight)
    monkeypatch.setattr(ichbench.losses, "weighted_bce", recording)
    cfg = resolve("multilabel_ce", "phantom", "smoke", PRE_TINY + ["pretrain.holdout=4"])
    assert cfg.pretrain.params["pos_weight"] == "selection_frequency"
    out = pretrain("multilabel_ce", path, cfg, tmp_path / "pre", device="cpu", progress=False)
    assert len(used) >= 4 and all(w is not None and w.tolist() == pytest.approx(want.tolist()) for w in used)
    recorded = ckpt.load_pretrained(out)["pretext_setup"]["pos_weight"]
    assert recorded["n_slices"] == len(labels) and recorded["values"] == pytest.approx(want.tolist())
    assert recorded["n_positive"] == n_pos.tolist()
    assert json.loads((out.parent / ckpt.PRETEXT_SETUP_NAME).read_text())["pos_weight"] == recorded


def test_save_atomic_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    ckpt.save_atomic({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        ckpt.save_atomic({"epoch": 2, "x": Unpicklable()}, path)
    assert ckpt.load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_pretraining_holds_out_the_stores_own_validation_slices():
    # labels of 8 slices: ICH on 0, 1, 5; the ingest put slices 6 and 7 in `val/` volumes
    labels = np.zeros((8, 7), np.uint8)
    labels[[0, 1, 5], 1] = 1
    labels[:, 0] = 1 - labels[:, 1]
    val = np.zeros(8, bool)
    val[[6, 7]] = True
    train, hold = pretrain_selection(labels, holdout=100, seed=0, validation=val)
    assert hold.tolist() == [6, 7]
    assert set(train) >= {0, 1, 5} and not set(train) & {6, 7} and len(train) == 6  # 3 ICH + 3 non-ICH


def test_labeled_fraction_trains_on_a_stratified_subset(phantom_store, split, tmp_path):
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY + ["finetune.labeled_fraction=0.5", "finetune.epochs=1"])
    res = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path / "half", progress=False)
    full = train_ids(split, 0)
    assert set(res["train_volumes"]) < set(full) and res["n_labeled_volumes"] == len(res["train_volumes"])
    assert res["config"]["finetune"]["labeled_fraction"] == 0.5
    assert abs(len(res["train_volumes"]) - len(full) / 2) <= 1
