"""`ichbench run --test-on` for a subtypes run (finetune.task=subtypes, issue 23), without training:
which external stores a subtypes run can be scored on, and the fold ensemble of label maps (the
argmax of the folds' mean softmax, `ichbench predict`'s rule) scored per class on a real store by
real fold model files. The CLI run end to end is in test_run_subtypes (slow)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ichbench import SUBTYPES
from ichbench.errors import IchbenchError
from ichbench.orchestrate import external

NAMES = list(SUBTYPES)   # iph, ivh, sah, sdh, edh: the phantom's class ids 1..5


def _cfg(task="subtypes"):
    return SimpleNamespace(dataset="phantom", finetune=SimpleNamespace(task=task))


def _store(classes, path="/s"):
    return SimpleNamespace(class_names=classes, path=path)


def test_a_subtypes_run_is_scored_only_where_the_store_holds_its_classes():
    run = _store(NAMES, "/home/stores/phantom")
    external.check_classes("d2", _cfg(), run, _store(NAMES))                  # the same classes: scored
    external.check_classes("d2", _cfg("binary"), run, _store(None))           # binary runs score any store
    with pytest.raises(IchbenchError, match=r"^--test-on d2: the run segments the classes iph,ivh,sah,sdh,edh "
                                            r"\(finetune.task=subtypes\), but /b has no class map"):
        external.check_classes("d2", _cfg(), run, _store(None, "/b"))
    other = ["edh", "iph", "ivh", "sah", "sdh"]                                # BHSD's order: other ids
    with pytest.raises(IchbenchError) as err:
        external.check_classes("d2", _cfg(), run, _store(other, "/o"))
    said = str(err.value)
    assert "iph,ivh,sah,sdh,edh (phantom" in said and "/o holds edh,iph,ivh,sah,sdh" in said and "\n" not in said


def _constant_model(path, cfg, softmax):
    """A fold model.pt whose softmax is `softmax` at every voxel (head weights 0, bias log p)."""
    from ichbench.models.unet import unet_for
    from ichbench.train.engine import save_model
    net = unet_for(cfg.model, in_channels=1, out_channels=len(softmax))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.log(torch.tensor(softmax)))
    return save_model(path, net, SimpleNamespace(name="unet_mixed"), cfg, 0, 64, classes=NAMES)


@pytest.fixture(scope="module")
def scored(phantom_store, tmp_path_factory):
    """Two fold models of the session phantom's store: fold 0 votes iph, fold 1 ivh, and their mean
    softmax sah, which neither fold's argmax gives (so a vote or one fold's map cannot pass)."""
    from ichbench.resolve import resolve
    from ichbench.train.external import score_test_set
    # a small U-Net at 32 x 32 (the store is read at the training size): ~1 s of scoring
    cfg = resolve("unet_mixed", "phantom", "smoke", ["finetune.task=subtypes", "model.base_channels=4",
                                                      "model.depth=2", "finetune.image_size=32"])
    tmp = tmp_path_factory.mktemp("external_subtypes")
    #            bg    iph   ivh   sah   sdh    edh
    fold0 = [0.05, 0.45, 0.05, 0.40, 0.025, 0.025]
    fold1 = [0.05, 0.05, 0.45, 0.40, 0.025, 0.025]
    models = {0: _constant_model(tmp / "m0.pt", cfg, fold0), 1: _constant_model(tmp / "m1.pt", cfg, fold1)}
    return cfg, score_test_set(models, phantom_store, cfg, device="cpu")


def _predicted(row) -> list[str]:
    return [name for name, m in row["classes"].items() if m["pred_ml"] > 0]


def test_the_ensemble_is_the_argmax_of_the_folds_mean_softmax(scored):
    _, out = scored
    assert [_predicted(r) for r in out["folds"][0]] == [["iph"]] * len(out["ensemble"])
    assert [_predicted(r) for r in out["folds"][1]] == [["ivh"]] * len(out["ensemble"])
    assert [_predicted(r) for r in out["ensemble"]] == [["sah"]] * len(out["ensemble"])
    # rows as cross-validation's: the union's metrics at the top level (here every voxel), classes below
    row = out["ensemble"][0]
    assert row["pred_ml"] == pytest.approx(row["classes"]["sah"]["pred_ml"]) and "pred_labels_sha256" in row
    assert list(row["classes"]) == NAMES


def test_external_summaries_metrics_and_runs_view_carry_the_classes(scored):
    cfg, out = scored
    summ = external.summaries(cfg, out)
    assert list(summ["ensemble"]["classes"]) == NAMES and list(summ["folds"]["classes"]) == NAMES
    logged = external.metrics("phantom_shifted", summ)
    sah = summ["ensemble"]["classes"]["sah"]["present"]["dice"]["mean"]
    assert logged["test.phantom_shifted.ensemble.dice_class_sah_present_mean"] == pytest.approx(sah)
    assert "test.phantom_shifted.folds.dice_macro_all_mean" in logged
    view = external.from_metrics(logged)["phantom_shifted"]
    assert view["ensemble"]["classes"]["sah"]["dice_present"] == pytest.approx(sah)
    assert set(view["folds"]["classes"]) == {*NAMES, "macro"}
    assert not math.isnan(view["ensemble"]["dice_all"])


def test_the_results_table_shows_the_external_per_class_table(scored):
    from ichbench.orchestrate.report import result_table
    from tests.test_console_output import outcome, render
    cfg, out = scored
    o = outcome("unet_mixed")
    o.plan.folds = [0, 1]
    o.external = {"phantom_shifted": external.summaries(cfg, out)}
    dice_all = o.external["phantom_shifted"]["ensemble"]["classes"]["sah"]["all"]["dice"]["mean"]
    for width in (80, 200):
        lines = render(result_table([o]), width)
        text = "\n".join(lines)
        assert "unet_mixed on phantom_shifted (external test set, fold ensemble), per" in text
        assert max(map(len, lines)) <= width and "…" not in text
        [sah] = [line for line in lines if "│ sah " in line]   # only the external table: the run's is binary
        assert sah.split("│")[3].strip().startswith(f"{dice_all * 100:.1f}±")
