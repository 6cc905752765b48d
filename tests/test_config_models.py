"""The config's pydantic models: identities pinned, ranges refused in one line, the JSON Schema
in the docs equal to the code's, recorded configs rebuilt through the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ichbench.cli.main import app
from ichbench.config import IcmConfig, RunConfig, json_schema, resolve_icm
from ichbench.errors import IchbenchError
from ichbench.files import sha256_json
from ichbench.leaderboard.recorded_config import ConfigNotRebuilt, rebuild
from ichbench.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "config.schema.json"

# Copied by hand from the dataclass config (before pydantic): pretraining caches and leaderboard
# entries are keyed on these. A change here changes what every cache and entry is called.
# (method, dataset, profile): (hash(), finetune_hash("abc", "def"), sha256 of to_dict())
PINNED = {
    ("multilabel_dl", "phantom", "smoke"):
        ("9818c840036c4f5d24d14b5e3e7ab9dc8fd4df71457555baee9d526d51c0f269",
         "2f7b1644302dc482030edf84f6a8e6e3bf7a1572dba8bb5dffc94e88678b708f",
         "066d181c0e7215a5b2c2405408f71955f823fd164bc060b9261c31e4339dab6d"),
    ("multilabel_ce", "segcq500", "paper"):
        ("72ab51d3a854d5e65b301b91f482b21d45287a024a3b09a916b4be81d5b0d0bd",
         "d54d6e3c36b022569601508dabedcf3f7c0a966c41aad10cbd3fbc92bc94cf8a",
         "adfa4b4e4f9dbaf0b431bab48ef33ccf06c51b0419dc6f0dc0ffbadebba6582f"),
    ("local_contrastive", "hssayeni", "paper"):      # with init_from's config
        ("ca67a40f817dfe8264c0f8758dce4baeb6e67ae184d53278010d03dad59953b9",
         "ea6af1f95766d02922ce2162c75bedc40aa73ff212fc05ee8908a71c09f0179c",
         "60efc0df91d5fd2b8a1d19eb74b754acb5341bdbbdbc9b21da00a0ace7bd30d5"),
    ("unet_mixed_icm", "hssayeni", "paper"):         # with the ICM
        ("d47210c3037d53ada227524bf3b61d4c0297856ada322e7ac10190bbc909684a",
         "f2a4b68be7d848cb888e7427ee10387bc3a0cb317c7d2d0d1b92158515bd3aa6",
         "062452aa15d7c555f7f3187069029539fb1740639ecb589a787e6b8085a36055"),
}


# Issue 21 changed the paper profile twice: Mixed's normal slices drawn once per fold
# (finetune.negatives) and multilabel_ce's authors' class weights (pos_weight). Setting those two
# back gives the pins above, so nothing else moved; the smoke profile did not change.
BEFORE_ISSUE_21 = {"paper": ["finetune.negatives=per_epoch"], "smoke": []}
PAPER_NOW = {
    ("multilabel_ce", "segcq500", "paper"):
        ("9a0a944163deb2e29db1e248b4908e55ee376bc0b4289597bed6fbd34adf0975",
         "c080583af1aedd509820a30470692a7c05dd3be79ce886c09a76a706e1d0628a",
         "1be25a8c6e3819baf156896fdb39d725c2c96727f3bff57f8a5a3d232baf56f3"),
    ("local_contrastive", "hssayeni", "paper"):
        ("ca67a40f817dfe8264c0f8758dce4baeb6e67ae184d53278010d03dad59953b9",
         "fa41a83858fd4576837ac1c6bc64bf6b468798f4672fc66dd7c03bf56a4af5d3",
         "7c1f6064d874da48e7828bed119399ff20beb65c7cd92a680762cc3c62969efb"),
    ("unet_mixed_icm", "hssayeni", "paper"):
        ("d47210c3037d53ada227524bf3b61d4c0297856ada322e7ac10190bbc909684a",
         "329b7aa2a68e98b0faf971ecddf84b68c9ca21d9043abc614f467237bbf8e2f9",
         "d43f5efa01def2c4d8ccf26e0693a0abc3d7cad7a9a8700944c86588dd97e7e2"),
}


def _identity(cfg) -> tuple[str, str, str]:
    return cfg.hash(), cfg.finetune_hash("abc", "def"), sha256_json(cfg.to_dict())


@pytest.mark.parametrize("key", PINNED, ids="/".join)
def test_identities_are_those_of_the_dataclass_config(registry, key):
    undo = BEFORE_ISSUE_21[key[2]] + (["pretrain.params.pos_weight=none"] if key[0] == "multilabel_ce" else [])
    assert _identity(resolve(*key, undo)) == PINNED[key]
    if key[2] == "smoke":
        assert _identity(resolve(*key)) == PINNED[key]


@pytest.mark.parametrize("key", PAPER_NOW, ids="/".join)
def test_paper_identities_since_issue_21(registry, key):
    assert _identity(resolve(*key)) == PAPER_NOW[key]


def test_the_icm_model_key_is_pinned(registry):
    icm = resolve("unet_mixed_icm", "hssayeni", "paper").icm
    assert icm.model_key("f") == "0441e85541fd579698900c28a1719f1795c7e54be07927ed0d313982e92b6123"


def test_dict_settings_keep_the_values_as_given(registry):
    """An int in augment stays an int in to_dict (validated as a float, recorded as given)."""
    cfg = resolve("unet_mixed", "phantom", "smoke",
                  ['finetune.augment={"translate": 0, "rotate": 0, "scale": [1, 1], "hflip": 0}'])
    aug = cfg.to_dict()["finetune"]["augment"]
    assert aug == {"translate": 0, "rotate": 0, "scale": [1, 1], "hflip": 0}
    assert json.dumps(aug) == '{"translate": 0, "rotate": 0, "scale": [1, 1], "hflip": 0}'


@pytest.mark.parametrize("item, says", [
    ("finetune.lr=0", "finetune.lr must be > 0, got 0.0"),
    ("finetune.lr_decay=2", "finetune.lr_decay must be <= 1, got 2.0"),
    ("finetune.batch_size=1", "finetune.batch_size must be >= 2, got 1"),
    ("finetune.head_prior=1", "finetune.head_prior must be < 1, got 1.0"),
    ("finetune.labeled_fraction=0", "finetune.labeled_fraction must be > 0, got 0.0"),
    ("model.encoder_growth=third", "model.encoder_growth must be one of 'second' or 'first', got 'third'"),
    ("icm.source=atlas", "icm.source must be one of 'unet', 'classical' or 'shipped', got 'atlas'"),
    ("icm.tissue_window=600,0", "icm.tissue_window must be two HU values low < high, got [600.0, 0.0]"),
    ("icm.image_size=72", "icm.image_size must be a multiple of 16, got 72"),
    ('finetune.augment={"translate": 0, "rotate": 0, "scale": [2, 1], "hflip": 0}',
     "finetune.augment.scale must be two numbers 0 < lo <= hi, got [2.0, 1.0]"),
    ('pretrain.augment={"rotate": 3}', "pretrain.augment.translate is missing"),
    ('finetune.augment={"translate": 0, "rotate": 0, "scale": [1, 1], "hflip": 0, "shear": 1}',
     "finetune.augment.shear is not a setting"),
    ("finetune.compile=maybe", "--set finetune.compile=maybe: input should be a valid boolean"),
    ("pretrain_dataset=../x", "pretrain_dataset '../x': not a valid name"),
])
def test_a_bad_value_is_one_line_naming_the_setting(registry, item, says):
    with pytest.raises(IchbenchError) as err:
        resolve("unet_mixed_icm", "phantom", "smoke", [item])
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_method_param_is_read_as_the_type_the_method_gave_it(registry):
    cfg = resolve("multilabel_ce", "phantom", "smoke", ["pretrain.params.mlp_dims=4,5,6,7",
                                                        "pretrain.params.pos_weight=1,2,3,4,5,6,7"])
    assert cfg.pretrain.params["mlp_dims"] == [4, 5, 6, 7]
    assert cfg.pretrain.params["pos_weight"] == "1,2,3,4,5,6,7"  # a str param stays text
    with pytest.raises(IchbenchError, match=r"mlp_dims=4\.5: input should be a valid integer"):
        resolve("multilabel_ce", "phantom", "smoke", ["pretrain.params.mlp_dims=4.5"])
    with pytest.raises(IchbenchError, match=r"pretrain\.params\.mlp_dims must be a finite number \(at 1\)"):
        resolve("multilabel_ce", "phantom", "smoke", ['pretrain.params={"mlp_dims": [4, NaN], "pos_weight": "none"}'])


def test_icm_settings_alone_are_checked_under_their_section():
    assert resolve_icm("phantom", "smoke", ["icm.holdout=0.5"]).holdout == 0.5
    with pytest.raises(IchbenchError, match=r"^icm\.holdout must be <= 0\.5, got 0\.9$"):
        resolve_icm("phantom", "smoke", ["icm.holdout=0.9"])


def test_the_schema_in_the_docs_is_the_codes():
    assert json.loads(SCHEMA.read_text()) == json_schema(), \
        "docs/config.schema.json is stale: ichbench config-schema > docs/config.schema.json"


def test_the_schema_says_what_the_models_check():
    defs = json_schema()["$defs"]
    fine = defs["FinetuneConfig"]
    assert fine["additionalProperties"] is False                 # a typo'd key is refused
    assert fine["properties"]["lr"]["exclusiveMinimum"] == 0
    assert fine["properties"]["augment"] == {"$ref": "#/$defs/Augment",
                                             "description": "the §2.3.2 affine augmentation of training batches"}
    assert defs["IcmConfig"]["properties"]["source"]["enum"] == ["unet", "classical", "shipped"]
    assert {"$ref": "#/$defs/Augment"} in defs["PretrainConfig"]["properties"]["augment"]["anyOf"]
    assert "\n" not in json.dumps(defs["ModelConfig"]["properties"]["encoder_growth"]["description"])


def test_the_cli_prints_the_schema():
    out = CliRunner().invoke(app, ["config-schema"])
    assert out.exit_code == 0 and json.loads(out.output) == json_schema()


def test_the_committed_entry_rebuilds_with_nothing_filled_in():
    [path] = sorted((ROOT / "leaderboard" / "entries" / "phantom").glob("multilabel_dl--*.json"))
    recorded = json.loads(path.read_text())["config"]
    filled: list[str] = []
    cfg = rebuild(recorded, filled)
    assert filled == [] and cfg.to_dict() == recorded        # pretrain_hash recomputed and equal


def _recorded(cfg: RunConfig) -> dict:
    """A config as an entry records it (JSON: tuples are lists)."""
    return json.loads(json.dumps(cfg.to_dict()))


def test_rebuild_refuses_unknown_keys_and_bad_values_and_fills_old_ones(registry):
    rec = _recorded(resolve("local_contrastive", "phantom", "smoke"))
    assert rebuild(rec).to_dict() == rec
    with pytest.raises(ConfigNotRebuilt, match=r"^config key finetune\.shear is unknown to this ichbench"):
        rebuild({**rec, "finetune": {**rec["finetune"], "shear": 1}})
    with pytest.raises(ConfigNotRebuilt, match=r"does not validate: finetune\.lr must be > 0, got 0\.0$"):
        rebuild({**rec, "finetune": {**rec["finetune"], "lr": 0.0}})
    # written before encoder_growth existed, in the run and in its init_from: ichbench 0.1's block
    old = json.loads(json.dumps(rec))
    del old["model"]["encoder_growth"], old["init"]["model"]["encoder_growth"]
    filled: list[str] = []
    cfg = rebuild(old, filled)
    assert filled == ["model.encoder_growth=first", "init.model.encoder_growth=first"]
    assert cfg.model.encoder_growth == cfg.init.model.encoder_growth == "first"


def test_the_models_refuse_on_construction_too():
    with pytest.raises(ValueError, match="batch_size"):
        IcmConfig(batch_size_bone=1)


def test_a_check_across_settings_names_the_setting_in_init_too(registry):
    rec = _recorded(resolve("local_contrastive", "phantom", "smoke"))
    rec["init"]["finetune"]["image_size"] = 72
    with pytest.raises(ConfigNotRebuilt, match=r"does not validate: init\.finetune\.image_size 72 must be a "
                                               r"multiple of 16 \(the U-Net pools 4 times\)$"):
        rebuild(rec)
