"""2.5D inputs (issue 24): the neighbour index, the batched multi-window input, streamed batches with
their neighbours, the settings' identities, first-conv inflation, the inputs a method declares,
and augmentations that move a sample's channels together. Small arrays and stores only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ichbench.errors import IchbenchError
from ichbench.methods.base import ANY_INPUT, Method, PretextMethod, get_method
from ichbench.models.unet import UNet, inflate_first_conv
from ichbench.preprocess.window import window
from ichbench.resolve import resolve
from ichbench.train.data import SliceArrays, windowed, with_channels
from ichbench.train.device import batch_images
from ichbench.train.inputs import Channels, local_index, neighbour_index, window_channels, with_neighbours

# volumes 0 and 1 interleaved (as a slice-level source appends them), volume 2 a single slice
VOLUME = np.array([0, 1, 0, 2, 1, 0, 1, 0])


def test_neighbours_stay_in_their_volume_in_store_order_replicated_at_the_ends():
    assert neighbour_index(VOLUME, 1).tolist() == [
        [0, 0, 2], [1, 1, 4], [0, 2, 5], [3, 3, 3], [1, 4, 6], [2, 5, 7], [4, 6, 6], [5, 7, 7]]
    assert neighbour_index(VOLUME, 2).tolist() == [
        [0, 0, 0, 2, 5], [1, 1, 1, 4, 6], [0, 0, 2, 5, 7], [3, 3, 3, 3, 3],
        [1, 1, 4, 6, 6], [0, 2, 5, 7, 7], [1, 4, 6, 6, 6], [2, 5, 7, 7, 7]]
    assert neighbour_index(VOLUME, 0).tolist() == [[i] for i in range(len(VOLUME))]


def test_a_selection_loads_its_neighbours_and_indexes_them_in_the_loaded_rows():
    table = neighbour_index(VOLUME, 1)
    loaded = with_neighbours(table, [2])
    assert loaded.tolist() == [0, 2, 5]
    local = local_index(table, loaded)
    assert local[1].tolist() == [0, 1, 2]          # row 2's neighbours 0 and 5, at their positions
    assert local[0].tolist() == [0, 0, 1]          # row 0: itself at the volume's start, then row 2
    assert local[2].tolist() == [1, 2, 2]          # row 5's neighbour 7 was not loaded: itself instead
    loaded = with_neighbours(table, [3, 7])            # a single-slice volume and a volume's last row
    assert loaded.tolist() == [3, 5, 7]
    assert local_index(table, loaded).tolist() == [[0, 0, 0], [1, 1, 2], [1, 2, 2]]   # never row 3 for 2


def _arrays(n_volume=VOLUME, size=4) -> SliceArrays:
    n = len(n_volume)
    images = (torch.arange(n)[:, None, None] * 100 - 300 + torch.zeros(n, size, size)).to(torch.int16)
    return SliceArrays(images=images, labels=torch.zeros(n, 7, dtype=torch.uint8),
                       volume=torch.from_numpy(n_volume.astype(np.int64)), masks=None, brain=None,
                       volumes=[{"id": f"v{i}"} for i in range(int(n_volume.max()) + 1)],
                       fingerprint="t", path=None, rows=torch.arange(n))


def test_a_batch_is_each_slice_with_its_neighbours_in_every_window_slice_major():
    windows = [(-50.0, 150.0), (0.0, 80.0), (-800.0, 2000.0)]
    arrays = with_channels(_arrays(), 1, windows)
    idx = torch.tensor([3, 0, 5])
    x = batch_images(arrays, idx, torch.device("cpu"))
    assert x.shape == (3, 9, 4, 4) and arrays.channels.centre == 3
    nb = neighbour_index(VOLUME, 1)[idx.numpy()]
    for b in range(3):
        for s in range(3):
            hu = arrays.images[nb[b, s]].float()
            for w, (lo, hi) in enumerate(windows):
                assert torch.allclose(x[b, s * 3 + w], window(hu, lo, hi), atol=1e-6), (b, s, w)


def test_the_papers_input_keeps_todays_path_bit_for_bit():
    arrays = with_channels(_arrays(), 0, [(-50, 150)])
    assert arrays.channels is None
    idx = torch.tensor([1, 6, 2])
    assert torch.equal(batch_images(arrays, idx, torch.device("cpu")), windowed(arrays.images[idx]))
    # and the batched windows agree with it on the paper's window
    hu = arrays.images[idx][:, None]
    assert torch.allclose(window_channels(hu, torch.tensor([-50.0]), torch.tensor([200.0])),
                          windowed(arrays.images[idx]), atol=1e-6)


def test_a_streamed_batch_reads_each_samples_neighbours(tmp_path):
    """An interleaved store streamed with its neighbour table gives the in-memory path's pixels."""
    from ichbench.store import open_store
    from ichbench.store.writer import StoreWriter
    from ichbench.train.data import load_store
    from ichbench.train.stream import ShardStream

    w = StoreWriter(tmp_path / "s.zarr", size=8, with_masks=False, with_brain=False)
    rng = np.random.default_rng(0)
    for v in VOLUME:   # one slice at a time: volumes 0 and 1 interleave in the store
        w.add({"id": f"v{v}", "spacing": [5, 1, 1]}, rng.integers(-500, 500, (1, 8, 8)).astype(np.int16),
              np.zeros((1, 7), np.uint8))
    w.close({"dataset": "t", "role": "pretraining"}, {"size": 8})
    store = open_store(tmp_path / "s.zarr")
    table = neighbour_index(np.asarray(store.load(["volume"])["volume"]), 1)
    assert table.tolist() == neighbour_index(VOLUME, 1).tolist()
    arrays = load_store(store.path, 8, names=("images", "labels", "volume"))
    stream = ShardStream(store, np.arange(8), 8, 4, None, torch.Generator().manual_seed(0), 2, neighbours=table)
    batches = list(stream.epoch())
    assert sum(len(b.rows) for b in batches) == 8
    for b in batches:
        assert b.images.shape == (len(b.rows), 3, 8, 8)
        assert torch.equal(b.images, arrays.images[torch.from_numpy(table)[b.rows]])


def test_input_settings_are_part_of_the_identity_only_when_set():
    base = resolve("unet_mixed", "phantom", "smoke")
    c1 = resolve("unet_mixed", "phantom", "smoke", ["input.context=1"])
    w3 = resolve("unet_mixed", "phantom", "smoke", ["input.windows=[[-50,150],[0,80],[-800,2000]]"])
    assert "input" not in base.to_dict() and c1.to_dict()["input"]["context"] == 1
    assert len({base.hash(), c1.hash(), w3.hash()}) == 3
    assert len({base.finetune_hash(), c1.finetune_hash(), w3.finetune_hash()}) == 3
    assert (c1.input.channels, w3.input.channels, w3.input.centre) == (3, 3, 0)
    # a 2D pretraining is the 2D run's own (same cache key); the fine-tuning differs
    flat = resolve("multilabel_dl", "phantom", "smoke", ["input.context=2", "input.pretrain=2d"])
    assert flat.hash() == resolve("multilabel_dl", "phantom", "smoke").hash()
    assert flat.finetune_hash() != resolve("multilabel_dl", "phantom", "smoke").finetune_hash()
    with pytest.raises(IchbenchError, match=r"^input\.windows\.1 must be two HU values low < high"):
        resolve("unet_mixed", "phantom", "smoke", ["input.windows=[[-50,150],[80,0]]"])


def test_an_inflated_first_conv_answers_equal_channels_as_the_2d_network():
    torch.manual_seed(0)
    flat, deep = UNet(in_channels=1, base=4, depth=3).eval(), UNet(in_channels=6, base=4, depth=3).eval()
    deep.load_state_dict(inflate_first_conv(flat.state_dict(), 6))
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(deep(x.expand(-1, 6, -1, -1)), flat(x), atol=1e-5)
    with pytest.raises(ValueError, match="only a 1-channel one inflates"):
        inflate_first_conv(deep.state_dict(), 9)


def test_fine_tuning_inflates_a_1_channel_pretraining_only_when_asked(tmp_path):
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import _load_pretrained_into
    from ichbench.models.unet import part_state, unet_for

    flat_cfg = resolve("multilabel_dl", "phantom", "smoke")
    path = ckpt.save_atomic({"kind": "pretrained", "method": "multilabel_dl", "transfers": ["encoder"],
                             "model": flat_cfg.model.model_dump(),
                             "state": part_state(unet_for(flat_cfg.model), ["encoder"])}, tmp_path / "p.pt")
    cfg = resolve("multilabel_dl", "phantom", "smoke", ["input.context=1", "input.pretrain=2d"])
    unet = unet_for(cfg.model, in_channels=3)
    assert _load_pretrained_into(unet, get_method("multilabel_dl"), path, cfg)["tensors"] > 0
    same = resolve("multilabel_dl", "phantom", "smoke", ["input.context=1"])
    with pytest.raises(IchbenchError, match=r"pretrained on 1 input channel\(s\), this run takes 3 .*pretrain=2d"):
        _load_pretrained_into(unet_for(cfg.model, in_channels=3), get_method("multilabel_dl"), path, same)


class _Undeclared(PretextMethod):
    name = "undeclared_pretext"
    transfers = ("encoder",)
    profiles = {"smoke": {}}


def test_a_method_that_declares_no_inputs_is_refused_2_5d_in_one_line():
    with pytest.raises(IchbenchError) as exc:
        resolve(_Undeclared(), "phantom", "smoke", ["input.context=1"])
    assert str(exc.value).startswith("method 'undeclared_pretext' takes input.context <= 0 and at most 1 window(s) "
                                     "in its pretraining, got context 1")
    assert "\n" not in str(exc.value)
    resolve(_Undeclared(), "phantom", "smoke", ["input.context=1", "input.pretrain=2d"])   # its pretext sees 2D
    for name in ("unet_mixed", "context_restoration", "global_contrastive", "local_contrastive",
                 "binary_classification", "multilabel_ce", "multilabel_dl"):
        resolve(name, "phantom", "smoke", ["input.context=2", "input.windows=[[-50,150],[0,80],[-800,2000]]"])


def test_a_baseline_without_a_declaration_takes_any_input_through_the_shared_recipe():
    class Plain(Method):
        name = "plain_baseline"
    plain = Plain()
    cfg = resolve("unet_mixed", "phantom", "smoke", ["input.context=2"])
    # it declares only the paper's input, and its own code sees nothing: the shared fine-tuning
    # recipe takes the 5 channels, so nothing is refused
    assert (plain.inputs.max_context, plain.inputs.max_windows) == (0, 1)
    assert not plain.has_pretext and not plain.owns_finetuning and cfg.input.channels == 5
    plain.check_inputs(cfg)

    class OwnLoop(Plain):   # the same declaration in a method that fine-tunes by itself is refused
        name = "own_loop"

        def finetune_fold(self, fold):
            raise NotImplementedError
    assert OwnLoop().owns_finetuning
    with pytest.raises(IchbenchError, match="in its fine-tuning, got context 2"):
        OwnLoop().check_inputs(cfg)


@pytest.mark.parametrize("augment", ["affine", "global_view", "local_view"])
def test_an_augmentation_moves_a_samples_channels_together(augment):
    from ichbench.config import PAPER_AUGMENT
    from ichbench.transforms import T_GLOBAL, T_LOCAL, augment_batch, contrastive_view

    torch.manual_seed(0)
    one = torch.rand(4, 1, 32, 32)
    x = one.expand(-1, 5, -1, -1).contiguous()
    g = torch.Generator().manual_seed(1)
    if augment == "affine":
        out, _ = augment_batch(x, None, PAPER_AUGMENT, g)
    else:
        out = contrastive_view(x, T_GLOBAL if augment == "global_view" else T_LOCAL, generator=g)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_context_restoration_restores_the_centre_slice_from_every_channel_corrupted_alike():
    m = get_method("context_restoration")
    cfg = resolve("context_restoration", "phantom", "smoke", ["input.context=1"]).pretrain
    model = m.build_pretext(UNet(in_channels=3, base=4, depth=3), cfg)
    images = torch.rand(2, 3, 64, 64)
    loss = m.pretext_loss(model, {"images": images, "centre": 1}, cfg, torch.Generator().manual_seed(0))
    corrupted = m.corrupt(images, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(loss, F.mse_loss(model(corrupted), images[:, 1:2]))
    moved = (corrupted != images).any(1)           # pixels swapped in any channel ...
    assert torch.equal(moved[:, None].expand_as(images), corrupted != images)   # ... are swapped in all


def test_channels_move_with_the_arrays():
    ch = Channels.of([(-50, 150), (0, 80)], neighbour_index(VOLUME, 1), 1)
    assert ch.count == 6 and ch.centre == 2
    assert ch.to("cpu").neighbours.tolist() == neighbour_index(VOLUME, 1).tolist()


# -- through the engine, on the session phantom (tiny U-Nets, a few steps) --------------------------

def _denoising():
    from tests.test_engine import FakeDenoising

    class Denoising25D(FakeDenoising):
        name = "fake_denoising_25d"
        inputs = ANY_INPUT

        def pretext_loss(self, model, batch, cfg, generator):
            x = batch["images"]
            noise = torch.randn(x.shape, generator=generator, device=x.device) * cfg.params["noise"]
            c = batch["centre"]
            return F.mse_loss(model(x + noise), x[:, c:c + 1])
    return Denoising25D()


def test_a_streamed_2_5d_pretraining_trains_as_the_loaded_one(phantom_store, tmp_path):
    """Same seed, same batches: the selection loaded with its neighbours and the stream reading
    them give the same weights on the CPU."""
    from tests.test_engine import PRE_TINY
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import pretrain

    m, extra = _denoising(), ["input.context=1", "input.windows=[[-50,150],[0,80]]"]
    states = []
    for stream in ("true", "false"):
        cfg = resolve(m, "phantom", "smoke", PRE_TINY + extra + [f"data.stream={stream}", "data.shuffle_shards=2"])
        got = ckpt.load_pretrained(pretrain(m, phantom_store, cfg, tmp_path / stream, device="cpu", progress=False))
        assert got["state"]["encoder.0.0.weight"].shape[1] == 6
        states.append(got)
    assert states[0]["data_path"] == "streamed" and states[1]["data_path"] == "in-memory"
    assert all(torch.equal(states[0]["state"][k], states[1]["state"][k]) for k in states[0]["state"])


def test_a_2_5d_fine_tuning_scores_its_folds_and_records_its_input(phantom_store, tmp_path):
    from tests.test_engine import TINY
    from ichbench.splits import split_for_store
    from ichbench.store import open_store
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import finetune

    split = split_for_store(open_store(phantom_store), 3)
    cfg = resolve("unet_mixed", "phantom", "smoke", TINY + ["input.context=1", "finetune.epochs=1"])
    r = finetune("unet_mixed", phantom_store, split, 0, cfg, tmp_path, device="cpu", progress=False)
    assert [v["volume_id"] for v in r["volumes"]] == split["folds"][0]["test"]
    model = ckpt.load_model(r["model"]["path"])
    assert model["config"]["input"]["context"] == 1 and model["state"]["encoder.0.0.weight"].shape[1] == 3
