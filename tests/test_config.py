"""Config resolution: profiles per dataset, method pretext settings, typed `--set` overrides."""

import json

import pytest

from ichbench.config import parse_value
from ichbench.resolve import resolve
from ichbench.errors import IchbenchError, UnknownNameError
from ichbench.methods.base import LabelNeeds, Method
from ichbench.plugins import hookimpl


class FakeGlobal(Method):
    name = "fake_global"
    label_needs = LabelNeeds(unlabeled=True)
    transfers = ("encoder",)

    def pretrain_overrides(self, profile):
        if profile == "paper":
            return {"batch_size": 60, "params": {"tau": 0.1, "proj_dims": [512, 512, 128]}}
        return {"batch_size": 8, "params": {"tau": 0.1, "proj_dims": [16, 16, 8]}}


class FakeLocal(Method):
    name = "fake_local"
    label_needs = LabelNeeds(unlabeled=True)
    transfers = ("encoder", "decoder.0")
    init_from = "fake_global"

    def pretrain_overrides(self, profile):
        return {"batch_size": 24, "params": {"tau": 0.1, "n_regions": 20}}


class FakePlugin:
    @hookimpl
    def register_methods(self, register):
        register(FakeGlobal())
        register(FakeLocal())


@pytest.fixture
def reg(registry):
    registry.add_plugin(FakePlugin(), "fake-methods")
    return registry


def test_paper_profile_follows_the_paper_per_dataset(reg):
    h = resolve("unet_mixed", "hssayeni", "paper")
    c = resolve("unet_mixed", "segcq500", "paper")
    assert (h.finetune.epochs, h.finetune.batch_size) == (100, 16)
    assert (c.finetune.epochs, c.finetune.batch_size) == (40, 32)
    for cfg in (h, c):
        f = cfg.finetune
        assert (f.lr, f.lr_decay, f.weight_decay, f.empty_weight, f.threshold) == (1e-3, 0.96, 1e-6, 0.2, 0.5)
        assert f.augment == {"translate": 0.1, "rotate": 15.0, "scale": (0.9, 1.1), "hflip": 0.5}
        assert f.image_size == 256 and f.nonich_ratio == 2
        assert (cfg.model.base_channels, cfg.model.depth) == (32, 5)
        p = cfg.pretrain
        assert (p.epochs, p.lr, p.lr_decay, p.weight_decay, p.holdout) == (50, 1e-3, 0.96, 1e-6, 5000)
    assert h.pretrain_dataset == "rsna"


def test_smoke_profile_is_tiny(reg):
    cfg = resolve("unet_mixed", "phantom", "smoke")
    assert cfg.model.base_channels == 8
    assert cfg.finetune.image_size == cfg.pretrain.image_size == 64
    assert cfg.pretrain.steps_per_epoch is not None and cfg.pretrain.epochs <= 5


def test_method_pretext_settings_then_overrides(reg):
    cfg = resolve("fake_global", "segcq500", "paper", ["pretrain.params.tau=0.2", "pretrain.batch_size=30"])
    assert cfg.pretrain.batch_size == 30
    assert cfg.pretrain.params == {"tau": 0.2, "proj_dims": [512, 512, 128]}
    cfg = resolve("fake_global", "segcq500", "paper", ["pretrain.params.proj_dims=256,256,64"])
    assert cfg.pretrain.params["proj_dims"] == [256, 256, 64]
    assert resolve("fake_global", "segcq500", "smoke").pretrain.batch_size == 8


@pytest.mark.parametrize("item, section, key, expected", [
    ("finetune.epochs=3", "finetune", "epochs", 3),
    ("finetune.lr=0.01", "finetune", "lr", 0.01),
    ("finetune.compile=true", "finetune", "compile", True),
    ("finetune.compile=0", "finetune", "compile", False),
    ("finetune.steps_per_epoch=none", "finetune", "steps_per_epoch", None),
    ("pretrain.steps_per_epoch=5", "pretrain", "steps_per_epoch", 5),
    ("model.base_channels=16", "model", "base_channels", 16),
    ("finetune.empty_weight=1", "finetune", "empty_weight", 1.0),
])
def test_set_values_get_the_field_type(reg, item, section, key, expected):
    value = getattr(getattr(resolve("unet_mixed", "segcq500", "paper", [item]), section), key)
    assert value == expected and type(value) is type(expected)


def test_set_into_dict_fields_keeps_their_types(reg):
    cfg = resolve("unet_mixed", "segcq500", "paper", ["finetune.augment.scale=0.8,1.2",
                                                      "finetune.augment.rotate=30"])
    assert cfg.finetune.augment["scale"] == (0.8, 1.2)
    assert cfg.finetune.augment["rotate"] == 30.0 and isinstance(cfg.finetune.augment["rotate"], float)


@pytest.mark.parametrize("item, message", [
    ("finetune.epoch=3", "finetune.epochs"),                 # typo: lists the valid keys
    ("finetune.augment.shear=2", "finetune.augment.rotate"),
    ("pretrain.params.tau=0.2", "unknown config key"),       # a baseline has no params
    ("trainer.epochs=2", "unknown config key"),
    ("finetune.epochs=abc", "--set finetune.epochs=abc: input should be a valid integer"),
    ("finetune.compile=maybe", "boolean"),
    ("finetune.augment.scale=0.8", "2 comma-separated values"),
    ("finetune.epochs", "key=value"),
    ("finetune.image_size=100", "multiple of 16"),
    ("finetune.batch_size=1", "batch_size"),
])
def test_bad_overrides_are_one_line_errors(reg, item, message):
    with pytest.raises(IchbenchError) as err:
        resolve("unet_mixed", "segcq500", "paper", [item])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_profile(reg):
    with pytest.raises(UnknownNameError, match="known: paper, smoke"):
        resolve("unet_mixed", "segcq500", "tiny")


def test_hash_identifies_the_pretraining(reg):
    a = resolve("fake_global", "segcq500", "paper")
    assert a.hash() == resolve("fake_global", "segcq500", "paper").hash()
    assert a.hash() == resolve("fake_global", "segcq500", "paper", ["finetune.epochs=3"]).hash()
    assert a.hash() != resolve("fake_global", "segcq500", "paper", ["pretrain.params.tau=0.3"]).hash()
    assert a.hash() != resolve("fake_global", "segcq500", "paper", ["model.base_channels=16"]).hash()
    # The fine-tuning dataset does not matter: both pretrain on RSNA and share one pretraining.
    assert a.hash() == resolve("fake_global", "hssayeni", "paper").hash()
    d = a.to_dict()
    assert json.loads(json.dumps(d)) == d and d["pretrain_hash"] == a.hash()
    assert d["pretrain"]["params"]["proj_dims"] == [512, 512, 128]


def test_init_from_is_resolved_with_shared_overrides(reg):
    cfg = resolve("fake_local", "segcq500", "paper", ["model.base_channels=16", "pretrain.params.n_regions=8"])
    assert cfg.pretrain.params["n_regions"] == 8 and cfg.pretrain.batch_size == 24
    assert cfg.init.method == "fake_global"
    assert cfg.init.model.base_channels == 16          # the U-Net must match for the transfer
    assert cfg.init.pretrain.batch_size == 60          # its own pretext settings
    assert "n_regions" not in cfg.init.pretrain.params
    # local's pretraining depends on global's: changing global's settings changes local's hash
    other = resolve("fake_local", "segcq500", "paper", ["model.base_channels=16", "pretrain.params.n_regions=8",
                                                        "pretrain.seed=1"])
    assert other.init.hash() != cfg.init.hash() and other.hash() != cfg.hash()
    assert cfg.to_dict()["init"]["method"] == "fake_global"


def test_parse_value_types():
    assert parse_value("1,2,3", list[int]) == [1, 2, 3]
    assert parse_value("[0.5, 2]", tuple[float, float]) == (0.5, 2.0)
    assert parse_value('{"a": 1}', dict) == {"a": 1}
    assert parse_value("null", int | None) is None
    with pytest.raises(ValueError):
        parse_value("x", float)
