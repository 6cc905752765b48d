"""A method's own settings (`pretrain.params`, `finetune.params`) have bounds too (issue 26 §5): a
method declares their schema (`Method.pretrain_params_model`, `finetune_params_model`), and a value
above a bound, or a key the method does not read, is one line naming the setting on a dry run,
before anything trains. The params stay the dicts as given, so no config hash changes.

Rows of the example plugins (plugins/ichbench-*) need them installed (the README's set-up; CI
installs them) and skip without them.
"""

import importlib.metadata as md
import json

import pytest

from tests.cli import call as _call

PLUGINS = {"mae": "ichbench-mae", "vicreg": "ichbench-vicreg", "nnunet_2d": "ichbench-nnunet"}
SIXTEEN, SEVENTEEN = ",".join(["512"] * 15 + ["2"]), ",".join(["512"] * 16 + ["2"])   # layer counts

# (method, setting, a value at the bound, one above it, what the one line says)
LIMITS = [
    ("binary_classification", "pretrain.params.mlp_dims", "512,16384,2", "512,100000000,2",
     "pretrain.params.mlp_dims.1 must be <= 16384, got 100000000"),
    ("binary_classification", "pretrain.params.mlp_dims", SIXTEEN, SEVENTEEN,
     "pretrain.params.mlp_dims: list should have at most 16 items"),
    ("multilabel_ce", "pretrain.params.mlp_dims", "512,16384,7", "512,16385,7",
     "pretrain.params.mlp_dims.1 must be <= 16384, got 16385"),
    ("multilabel_ce", "pretrain.params.pos_weight", "1000,1,1,1,1,1,0.5", "1,1,1,1,1,1,1001",
     "pretrain.params.pos_weight.6 must be <= 1000, got '1001'"),
    ("multilabel_dl", "pretrain.params.mlp_dims", "16384,16384,7", "16385,16384,7",
     "pretrain.params.mlp_dims.0 must be <= 16384, got 16385"),
    ("context_restoration", "pretrain.params.n_swaps", "1000", "1000000000",
     "pretrain.params.n_swaps must be <= 1000, got 1000000000"),
    ("context_restoration", "pretrain.params.patch", "1024", "1025", "pretrain.params.patch must be <= 1024, got 1025"),
    ("global_contrastive", "pretrain.params.tau", "10", "11", "pretrain.params.tau must be <= 10, got 11.0"),
    ("global_contrastive", "pretrain.params.proj_dims", "512,512,16384", "512,512,16385",
     "pretrain.params.proj_dims.2 must be <= 16384, got 16385"),
    ("local_contrastive", "pretrain.params.tau", "10", "100", "pretrain.params.tau must be <= 10, got 100.0"),
    ("local_contrastive", "pretrain.params.proj_dims", "64,16384,32", "64,16385,32",
     "pretrain.params.proj_dims.1 must be <= 16384, got 16385"),
    ("local_contrastive", "pretrain.params.n_regions", "1000", "1001", "pretrain.params.n_regions must be <= 1000"),
    ("local_contrastive", "pretrain.params.region", "64", "65", "pretrain.params.region must be <= 64, got 65"),
    ("mae", "pretrain.params.patch", "256", "257", "pretrain.params.patch must be <= 256, got 257"),
    ("mae", "pretrain.params.mask_ratio", "0.999", "1", "pretrain.params.mask_ratio must be < 1, got 1.0"),
    *[("vicreg", f"pretrain.params.{name}", "1000", "1e6", f"pretrain.params.{name} must be <= 1000, got 1000000.0")
      for name in ("sim_coeff", "std_coeff", "cov_coeff")],
    ("vicreg", "pretrain.params.eps", "1", "1.5", "pretrain.params.eps must be <= 1, got 1.5"),
    ("vicreg", "pretrain.params.expander_dims", "512,16384,16384", "512,8192,100000",
     "pretrain.params.expander_dims.2 must be <= 16384, got 100000"),
    ("nnunet_2d", "finetune.params.val_iterations", "10000", "10001",
     "finetune.params.val_iterations must be <= 10000, got 10001"),
    ("nnunet_2d", "finetune.params.batch_size", "4096", "4097", "finetune.params.batch_size must be <= 4096"),
    ("nnunet_2d", "finetune.params.tile_step_size", "1", "1.5", "finetune.params.tile_step_size must be <= 1"),
    ("nnunet_2d", "finetune.params.processes", "256", "100000", "finetune.params.processes must be <= 256"),
    ("nnunet_2d", "finetune.params.augmentation_workers", "256", "257",
     "finetune.params.augmentation_workers must be <= 256"),
]

# the pretraining and fine-tuning identities of each method's paper profile on Seg-CQ500, taken
# before params had schemas: cached pretrainings and leaderboard entries keep their keys
HASHES = {
    "binary_classification": ("8142a295b2cbb34168253594386b5f6a6623eae3da896387763032654f179976",
                              "b9c04bb7a1774a3dd0e8d169286190edad09f87e97bf0c3d983f9ae713b2aeb3"),
    "context_restoration": ("60a92f0353b9c48cf314d93c2eec5d93b9d53a04f46ce910326893add8d19a15",
                            "e3c9cb406952d5a83f98b882fef0293a9a3c947b190b306f723f87ce78f364c0"),
    "global_contrastive": ("d039ef30cb03400a150f3df1fa3f31a3d1dd71e8bd9aead4b0eba708bbaa4894",
                           "b1218c147ead758ee6c301a18ca123cad07bfa55ac3452698b9ecce06ea6d78e"),
    "local_contrastive": ("ca67a40f817dfe8264c0f8758dce4baeb6e67ae184d53278010d03dad59953b9",
                          "7f9198cf79bf1ef4d72b53b170b4da81c2a2e08d7f6f7c9e4f74aa5d62f1eea9"),
    "mae": ("bfa363ed7ccee60fe8ceeff253904e876cfe7dfd79d45bae589d47efa71b26eb",
            "22c26054e99f07f3013251b9f0b3467404107aaf7e02226f9d83220700ac5cbc"),
    "multilabel_ce": ("72ab51d3a854d5e65b301b91f482b21d45287a024a3b09a916b4be81d5b0d0bd",
                      "60c81c83a78d326ee1aa75e0f118ba091aa611fec82bb57e52193ca688356242"),
    "multilabel_dl": ("43c82ef9d0680484fac956f8a1d89ac2d6c14b3169ab25837f383bca1a2ea977",
                      "9f5a14fcda22b1b7bb152937426fe10474a9d37dcb21468a874310cde279ee77"),
    "nnunet_2d": ("cd27cdf40265ffa014b36484f472dd5008eb405b2b6b0df9dcd3f76f8f955691",
                  "d4a5a4184d62e12ad354e32d18a2157fa7624d735d39e5165085c2ac103a2a50"),
    "unet_ich_only": ("944435cbcf85e945d4c32b0e524e66a9e97be00f98bc169b8d45df469315663f",
                      "60a2aa441069a236255d21428f55a8c7b0b47009a1afdc6819dc5df7e4c34448"),
    "unet_ich_only_icm": ("5da17fcbe54cfbb6a7e1c732cabfba3ff260eb6cd519455abe7ead2afb9e5432",
                          "0796cb37ad98541b89457602d5988819eb97bbcbff89a712de78cabfc5b864e4"),
    "unet_mixed": ("73a29cb51ca94d23eca5e73130faf5f0187fa4957b20dcfc30514c31f1ce8108",
                   "19db3fe01e347dc6d02e47733556e0e5bdef867dcc55ec51ac760e9d2c8e66bd"),
    "unet_mixed_icm": ("d47210c3037d53ada227524bf3b61d4c0297856ada322e7ac10190bbc909684a",
                       "621b8fa79f56ed8ebdc4fc4b8f397034857dd70431b19820d4fd959bfd3be1a7"),
    "vicreg": ("c8ebff6724258fa9a4ec06169e44741682d12d91bf4b5993ff8d18dd4c768115",
               "5b371a8da0b92dfd8a2ffbd157ef5d534c6420e051749a0e373eb938531a66c6"),
}


@pytest.fixture
def methods(home, monkeypatch):
    """The registry with the built-in methods and the installed example plugins."""
    from ichbench.plugins import get_registry, reset_registry
    monkeypatch.setenv("ICHBENCH_LOAD_PLUGINS", ",".join(_installed()))
    monkeypatch.setenv("ICHBENCH_STRICT_PLUGINS", "1")
    reset_registry()
    yield get_registry().methods()
    reset_registry()


def _installed() -> list[str]:
    found = []
    for dist in PLUGINS.values():
        try:
            md.distribution(dist)
            found.append(dist)
        except md.PackageNotFoundError:
            pass
    return found


def _needs(method: str) -> None:
    if method in PLUGINS and PLUGINS[method] not in _installed():
        pytest.skip(f"{PLUGINS[method]} is not installed (pip install -e plugins/{PLUGINS[method]})")


def _dry(method: str, *sets: str) -> list[str]:
    """The dry run of the stage whose params the settings are (nnU-Net has no pretraining)."""
    stage = "finetune" if any(s.startswith("finetune.") for s in sets) else "pretrain"
    argv = [stage, "-m", method, "-d", "phantom", "--profile", "smoke", "--dry-run"]
    argv += ["--fold", "0"] if stage == "finetune" else []
    return argv + [a for s in sets for a in ("--set", s)]


def _one_error(argv, monkeypatch, capsys) -> str:
    code, out, err = _call(argv, monkeypatch, capsys)
    assert code == 2 and out == "", err
    [line] = err.splitlines()
    assert line.startswith("ichbench: error: ")
    return line


def _ids(column: int) -> list[str]:
    return [f"{row[0]}:{row[1].split('.')[-1]}={row[column][:16]}" for row in LIMITS]


@pytest.mark.parametrize("method, key, at, above, says", LIMITS, ids=_ids(3))
def test_above_the_bound_is_one_line_naming_setting_and_bound(method, key, at, above, says, methods,
                                                             monkeypatch, capsys):
    _needs(method)
    line = _one_error(_dry(method, f"{key}={above}"), monkeypatch, capsys)
    assert says in line, line


@pytest.mark.parametrize("method, key, at, above, says", LIMITS, ids=_ids(2))
def test_at_the_bound_is_accepted_and_kept_as_given(method, key, at, above, says, methods, monkeypatch, capsys):
    _needs(method)
    code, out, err = _call(_dry(method, f"{key}={at}"), monkeypatch, capsys)
    assert code in (0, None), err
    stage, _, name = key.split(".")
    value = json.loads(out)[stage]["params"][name]
    expected = json.loads(f"[{at}]")   # "512,16384,2" is a list
    # a str param (pos_weight) keeps the text `--set` gave it; the others are read as their type
    assert value == (at if isinstance(value, str) else expected if "," in at else expected[0])


@pytest.mark.parametrize("method, params, says", [
    ("context_restoration", '{"n_swaps": 20, "patchh": 5}',
     "pretrain.params.patchh is not a setting of method 'context_restoration'; its settings: n_swaps, patch"),
    ("local_contrastive", '{"tau": 0.2, "n_region": 5}',
     "pretrain.params.n_region is not a setting of method 'local_contrastive'; "
     "its settings: tau, proj_dims, n_regions, region"),
    ("vicreg", '{"sim_coef": 5}', "pretrain.params.sim_coef is not a setting of method 'vicreg'; its settings: "
                                  "sim_coeff, std_coeff, cov_coeff, eps, expander_dims"),
    ("mae", '{"ratio": 0.5}',
     "pretrain.params.ratio is not a setting of method 'mae'; its settings: patch, mask_ratio"),
])
def test_an_unknown_param_key_is_refused_naming_the_known_ones(method, params, says, methods, monkeypatch, capsys):
    """`--set pretrain.params.typo=1` was refused already (no such key in the profile); a whole
    dict given as JSON replaced the method's params, typos and all."""
    _needs(method)
    line = _one_error(_dry(method, f"pretrain.params={params}"), monkeypatch, capsys)
    assert line == f"ichbench: error: {says}"


@pytest.mark.parametrize("method, key", [("unet_mixed", "finetune.params"), ("context_restoration", "finetune.params"),
                                         ("unet_ich_only_icm", "pretrain.params"), ("nnunet_2d", "pretrain.params")])
def test_a_stage_that_reads_no_params_takes_none(method, key, methods, monkeypatch, capsys):
    """The shared fine-tuning recipe reads no params, nor does a method without a pretext: a key
    there did nothing but change the run's identity."""
    _needs(method)
    line = _one_error(_dry(method, f'{key}={{"epochs": 3}}'), monkeypatch, capsys)
    assert line == f"ichbench: error: {key}.epochs is not a setting of method {method!r}; it takes none"


def test_a_method_that_declares_no_schema_keeps_free_form_params(registry, home, monkeypatch, capsys):
    """A plugin written before schemas existed runs as it did (this passes without them too)."""
    from ichbench.api import LabelNeeds, PretextMethod, hookimpl

    class Free(PretextMethod):
        name = "free_params_test"
        label_needs = LabelNeeds(segmentation=True, unlabeled=True)
        transfers = ("encoder",)
        profiles = {"paper": {"params": {"knob": 1}}, "smoke": {"params": {"knob": 1}}}

    hooks = type("P", (), {"register_methods": hookimpl(lambda register: register(Free()))})
    registry.add_plugin(hooks, "free", distribution="test-free", version="0.0")
    code, out, err = _call(_dry("free_params_test", "pretrain.params.knob=1000000000"), monkeypatch, capsys)
    assert code in (0, None), err
    assert json.loads(out)["pretrain"]["params"] == {"knob": 1000000000}


def test_the_config_hashes_are_unchanged(methods):
    from ichbench.resolve import resolve
    for name in [n for n in HASHES if n not in PLUGINS or PLUGINS[n] in _installed()]:
        # with the two settings issue 21 changed in the paper profile set back (test_config_models)
        undo = ["finetune.negatives=per_epoch"] + (["pretrain.params.pos_weight=none"]
                                                   if name == "multilabel_ce" else [])
        cfg = resolve(name, "segcq500", "paper", undo)
        assert (cfg.hash(), cfg.finetune_hash()) == HASHES[name], name
    assert set(methods) <= set(HASHES)   # a new method gets a row


def _numbers(schema: dict, where: str):
    """(path, subschema) of every number, integer and array in `schema`, through anyOf and items."""
    if schema.get("type") in ("integer", "number", "array"):
        yield where, schema
    for sub in schema.get("anyOf", []):
        yield from _numbers(sub, where)
    if isinstance(schema.get("items"), dict):
        yield from _numbers(schema["items"], f"{where}.*")


def _declared(methods) -> dict[str, dict]:
    """Every numeric setting of every declared params schema (`ichbench methods --json` shows them)."""
    out = {}
    for name, m in methods.items():
        for stage, schema in m.describe()["params"].items():
            for prop, sub in (schema or {}).get("properties", {}).items():
                out.update(_numbers(sub, f"{name}:{stage}.params.{prop}"))
    return out


def test_every_number_of_every_declared_params_schema_has_a_maximum(methods):
    assert {n for n, m in methods.items() if m.pretrain_params_model is None or m.finetune_params_model is None} \
        == set(), "every built-in and example method declares both stages' params"
    numbers = _declared(methods)
    assert len(numbers) >= 18   # the walk reaches the built-ins' settings
    bound = {"integer": ("maximum", "exclusiveMaximum"), "number": ("maximum", "exclusiveMaximum"),
             "array": ("maxItems",)}
    unbounded = [p for p, sub in numbers.items() if not any(k in sub for k in bound[sub["type"]])]
    assert unbounded == [], f"give these params an upper bound (Field(le=...)) in their method's model: {unbounded}"


def test_the_table_covers_every_bounded_param(methods):
    """A new bounded param gets a row above, so its refusal and its bound are checked too."""
    covered = {f"{method}:{key}" for method, key, *_ in LIMITS}
    declared = {path.split(".*")[0] for path, sub in _declared(methods).items() if sub["type"] != "array"}
    assert sorted(declared - covered) == []
