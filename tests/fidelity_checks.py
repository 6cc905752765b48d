"""The `check:NAME` rows of docs/fidelity.md: each runs the code path that carries a value of the
paper's protocol (tests/test_fidelity.py compares what it returns with the ledger's value), so a
behaviour outside the config (the ε the scoring really uses, what is frozen, the RSNA selection the
ingest really makes) cannot drift from the ledger unseen."""

from __future__ import annotations

import ast
import inspect
import json
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import ichbench
from ichbench.models.unet import unet_for
from ichbench.resolve import resolve

REPO = Path(__file__).resolve().parents[1]
PAPER_METHODS = ["unet_ich_only", "unet_ich_only_icm", "unet_mixed", "unet_mixed_icm", "context_restoration",
                 "global_contrastive", "local_contrastive", "binary_classification", "multilabel_ce", "multilabel_dl"]
GROUPS = {
    "all": PAPER_METHODS,
    "baselines": PAPER_METHODS[:4],
    "pretexts": PAPER_METHODS[4:],
    "+ICM": ["unet_ich_only_icm", "unet_mixed_icm"],
    "non-contrastive": ["context_restoration", "binary_classification", "multilabel_ce", "multilabel_dl"],
}
DATASETS = {"both": ["hssayeni", "segcq500"], "hssayeni": ["hssayeni"], "segcq500": ["segcq500"], "-": [None]}


CHECKS: dict[str, Callable[[], object]] = {}
PACKAGE = Path(ichbench.__file__).resolve().parent
# functions taking an ε, with the position of `eps` among their positional arguments (None: keyword only)
EPS_FUNCTIONS = {"volume_metrics": 2, "ratios": 3, "per_volume_row": 5, "case_metrics": 4,
                 "soft_dice_per_sample": 2, "dice_loss": None, "multilabel_dice_loss": None}
EPS_NAMES = {"eps", "EPS", "METRIC_EPS", "DICE_LOSS_EPS"}   # forwarding a parameter, or the constants


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def _one_false_positive() -> tuple[np.ndarray, np.ndarray]:
    """(pred, truth) of a healthy volume: no hemorrhage, one voxel predicted."""
    truth = np.zeros((2, 4, 4), bool)
    pred = truth.copy()
    pred[0, 1, 1] = True
    return pred, truth


def _three(m: dict) -> list[float]:
    return [round(float(m[k]), 6) for k in ("dice", "precision", "recall")]


@check
def metric_eps():
    """Dice, precision, recall of a healthy volume with one false-positive voxel on every path that
    scores: ε/(1+ε), ε/(1+ε), ε/ε. A path with ε = 0 raises ZeroDivisionError (recall 0/0)."""
    import nibabel as nib

    from ichbench.cli.scoring import score_case
    from ichbench.evaluate.metrics import ratios
    from ichbench.leaderboard.entries import scored_rows
    from ichbench.train.data import SliceArrays
    from ichbench.train.predict import scored_row
    pred, truth = _one_false_positive()
    arrays = SliceArrays(images=torch.zeros(2, 4, 4, dtype=torch.int16), labels=torch.zeros(2, 7, dtype=torch.uint8),
                         volume=torch.zeros(2, dtype=torch.int64), masks=torch.from_numpy(truth.astype(np.uint8)),
                         brain=None, volumes=[{"id": "v", "spacing": [1.0, 1.0, 1.0], "has_ich": False}],
                         fingerprint="-", path=Path("-"), rows=torch.arange(2))
    run = scored_row(arrays, "v", pred)                      # every fold's test volumes
    with tempfile.TemporaryDirectory() as d:                # `ichbench score`, from NIfTI files
        files = {}
        for name, a in (("pred", pred), ("truth", truth)):
            files[name] = Path(d) / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(a.transpose(2, 1, 0).astype(np.uint8), np.eye(4)), files[name])
        score = score_case("c", files["pred"], files["truth"], 1.0)
    entry = {"volume_id": "v", "fold": 0, "tp": 0, "fp": 1, "fn": 0, "pred_ml": 0.001, "true_ml": 0.0,
             "subtypes": None, "has_ich": False}
    board = scored_rows([entry])[0]                          # leaderboard entries, re-scored from counts
    return {"run": _three(run), "score": _three(score), "leaderboard": _three(board),
            "counts": _three(ratios(0, 1, 0))}              # reproductions compare entries by their counts


@check
def loss_eps():
    """Eq. 4 on an empty target whose prediction has Σp² = 1 (one pixel at p = 1): 1 − ε/(1+ε)."""
    from ichbench.losses import dice_loss, multilabel_dice_loss
    logits = torch.full((1, 1, 4, 4), -100.0)
    logits[0, 0, 1, 1] = 100.0
    labels = torch.full((1, 7), -100.0)
    labels[0, 0] = 100.0
    return {"dice_loss": round(dice_loss(logits, torch.zeros_like(logits)).item(), 6),
            "multilabel_dice_loss": round(multilabel_dice_loss(labels, torch.zeros(1, 7, dtype=torch.uint8)).item(), 6)}


@check
def eps_call_sites():
    """`path:line` of every place in ichbench that sets an ε of its own: a call passing anything but
    a forwarded `eps` or the named constants to a function taking ε, or an `eps` parameter whose
    default is not a named constant."""
    def own(node) -> bool:
        return node is not None and not (isinstance(node, ast.Name) and node.id in EPS_NAMES)

    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            bad = False
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name in EPS_FUNCTIONS:
                    given = [k.value for k in node.keywords if k.arg == "eps"]
                    pos = EPS_FUNCTIONS[name]
                    if pos is not None and len(node.args) > pos:
                        given.append(node.args[pos])
                    bad = any(own(g) for g in given)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                positional = a.posonlyargs + a.args
                pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
                pairs += list(zip(a.kwonlyargs, a.kw_defaults))
                bad = any(arg.arg == "eps" and own(default) for arg, default in pairs)
            if bad:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return out


@check
def rsna_selection():
    """The pretraining selection `ichbench data ingest rsna` makes with its defaults
    (`IngestOptions.selection`, `.holdout`) from a label column with RSNA's counts."""
    from ichbench.cli.data import ingest
    from ichbench.datasets.base import IngestOptions
    from ichbench.datasets.rsna import select_slices
    opts = IngestOptions(selection=inspect.signature(ingest).parameters["selection"].default.default)
    any_ich = np.zeros(752_803, bool)
    any_ich[np.arange(107_933) * 6] = True
    selected, is_val = select_slices(any_ich, opts.selection, opts.holdout, opts.seed)
    ich = int(any_ich[selected].sum())
    return {"ICH": ich, "without ICH": len(selected) - ich, "held out": int(is_val.sum()),
            "trained on": int((~is_val).sum())}


def _one_step(model, loss) -> None:
    """One epoch of one batch through the engine's loop (`train.loop.fit`, its optimiser included)."""
    from ichbench.train.data import EpochSampler
    from ichbench.train.loop import fit, generators
    cpu = torch.device("cpu")
    gens = generators(0, cpu)
    with tempfile.TemporaryDirectory() as d:
        fit(model=model, loss_fn=lambda idx: loss(idx, gens["device"]),
            sampler=EpochSampler(lambda g: torch.arange(2), 2, 1, gens["sampler"]), epochs=1, lr=1e-3,
            lr_decay=0.96, weight_decay=1e-6, state_path=Path(d) / "state.pt", identity="-", generators=gens,
            device=cpu, desc="-", progress=False)


def _narrow(method: str):
    """The method's paper config with an 8-channel U-Net: the same parts, names and code paths at
    1/16 of the parameters, so a training step costs a fraction of a second."""
    cfg = resolve(method, "segcq500", "paper")
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_channels": 8})})


def _moved(before: dict, after: dict, prefixes) -> bool:
    """Whether any tensor (parameters and BatchNorm statistics) under `prefixes` changed."""
    return any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(tuple(prefixes)))


@check
def local_contrastive_step():
    """Which U-Net parts one step of local contrastive's pretext moves (weights and BatchNorm
    statistics), the pretext model built as the engine builds it."""
    from ichbench.methods.base import get_method
    m = get_method("local_contrastive")
    cfg = _narrow(m.name)
    torch.manual_seed(0)
    model = m.build_pretext(unet_for(cfg.model), cfg.pretrain)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    images = torch.rand(2, 1, 64, 64)
    _one_step(model, lambda idx, g: m.pretext_loss(model, {"images": images[idx]}, cfg.pretrain, g))
    after = model.unet.state_dict()
    return {"encoder": _moved(before, after, ("encoder.", "bottleneck.")),
            **{f"decoder.{i}": _moved(before, after, (f"decoder.{i}.",)) for i in range(4)}}


@check
def finetune_frozen():
    """For each pretext: the U-Net parameters the fine-tuning optimiser leaves out (`train.loop.fit`
    takes those with `requires_grad`) once the pretrained parts were loaded as `ichbench run` loads
    them; none, "without freezing them". local_contrastive froze its encoder while pretraining."""
    from ichbench.methods.base import get_method
    from ichbench.models.unet import part_state
    from ichbench.train import checkpoint as ckpt
    from ichbench.train.engine import _load_pretrained_into
    out = {}
    for name in GROUPS["pretexts"]:
        m = get_method(name)
        cfg = _narrow(name)
        pretext = m.build_pretext(unet_for(cfg.model), cfg.pretrain)
        with tempfile.TemporaryDirectory() as d:
            path = ckpt.save_atomic({"kind": "pretrained", "method": name, "transfers": list(m.transfers),
                                     "state": part_state(pretext.unet, m.transfers),
                                     "model": cfg.model.model_dump()}, Path(d) / ckpt.PRETRAINED_NAME)
            unet = unet_for(cfg.model)
            _load_pretrained_into(unet, m, path, cfg)
        out[name] = [k for k, p in unet.named_parameters() if not p.requires_grad]
    return out


@check
def icm_union():
    """The ICM mask of a pixel that one window's U-Net finds and the other not, as `ichbench icm apply`
    (`IcmUNets.__call__`) writes it: the union of both windows (§2.3.3)."""
    from ichbench.icm.masker import IcmUNets
    icm = IcmUNets.__new__(IcmUNets)
    # pixels: (tissue, bone) probabilities (0.9, 0.1), (0.1, 0.9), (0.9, 0.9), (0.1, 0.1)
    icm.probabilities = lambda hu: {"tissue": torch.tensor([[[0.9, 0.1, 0.9, 0.1]]]),
                                    "bone": torch.tensor([[[0.1, 0.9, 0.9, 0.1]]])}
    got = icm(np.zeros((1, 1, 4)), 0.5)[0, 0].tolist()
    return dict(zip(("tissue only", "bone only", "both", "neither"), got))


@check
def mask_downsampling():
    """Pixels a stored 256² mask keeps of a 512² mask's one-pixel-wide line in an even column, in
    an odd column, and of a two-pixel-wide line (`resize_mask`, what ingest stores and scoring uses)."""
    from ichbench.preprocess.resize import resize_mask
    out = []
    for cols in ((100,), (101,), (100, 101)):
        m = np.zeros((1, 512, 512), bool)
        m[0, :, list(cols)] = True
        out.append(int(resize_mask(m, 256).sum()))
    return out


@check
def restoration_patches():
    """Pixels one context-restoration corruption changes in a 256² image of distinct values, with
    the paper profile's N = 20 swaps of 20 × 20: 2·N·20² = 16,000 when no two patches overlap."""
    from ichbench.methods.base import get_method
    m = get_method("context_restoration")
    cfg = resolve(m.name, "segcq500", "paper")
    images = torch.arange(256 * 256, dtype=torch.float32).view(1, 1, 256, 256)
    out = m.corrupt(images, cfg.pretrain, torch.Generator().manual_seed(0))
    return int((out != images).sum())


@check
def view_transform_order():
    """T_G's and T_L's steps in the order `contrastive_view` applies them (its calls, in source order:
    the crop is composed into the one warp with the affine steps)."""
    from ichbench.transforms import views
    steps = {"warp": "warp (translate, rotate, scale, flip, crop)", "random_contrast": "contrast",
             "random_brightness": "brightness", "random_gaussian_blur": "blur"}
    tree = ast.parse(textwrap.dedent(inspect.getsource(views.contrastive_view)))
    calls = sorted((n.lineno, n.func.id) for n in ast.walk(tree)
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in steps)
    return [steps[name] for _, name in calls]


@check
def autocast():
    """The dtype the forward pass runs in, per device type (`train.device.autocast_for`)."""
    from ichbench.train.device import autocast_for
    out = {}
    for kind in ("cpu", "cuda"):
        with warnings.catch_warnings():   # "CUDA is not available": the context is only inspected
            warnings.simplefilter("ignore")
            ctx = autocast_for(torch.device(kind))
        out[kind] = str(ctx.fast_dtype).removeprefix("torch.") if isinstance(ctx, torch.autocast) else "float32"
    return out


@check
def finetune_loss():
    """The fine-tuning loss as the engine calls it: the keywords it passes to `dice_loss` (only
    eq. 5's α), and whether `dice_loss` at α = 1 is eq. 4 averaged over slices, with no class weight."""
    from ichbench.losses import dice_loss
    from ichbench.losses.dice import DICE_LOSS_EPS
    from ichbench.train import engine, task
    # the engine calls it through the task's loss (`train.task.loss`; binary: `dice_loss`)
    src = inspect.getsource(engine.finetune) + inspect.getsource(task.loss)
    keywords = sorted({k.arg for n in ast.walk(ast.parse(textwrap.dedent(src))) if isinstance(n, ast.Call)
                       and getattr(n.func, "id", None) == "dice_loss" for k in n.keywords})
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 1, 8, 8, generator=g), (torch.rand(3, 1, 8, 8, generator=g) > 0.7).float()
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    eq4 = 1 - (2 * (p * t).sum(1) + DICE_LOSS_EPS) / ((p * p).sum(1) + (t * t).sum(1) + DICE_LOSS_EPS)
    return {"keywords": keywords, "eq. 4": bool(torch.allclose(dice_loss(logits, target), eq4.mean()))}


@check
def canonical_counts():
    """Volumes and volumes with ICH that leaderboard entries are checked against (canonical.json)."""
    data = json.loads((REPO / "leaderboard" / "canonical.json").read_text())
    return {d: [data["datasets"][d]["n_volumes"], data["datasets"][d]["n_ich_volumes"]]
            for d in ("hssayeni", "segcq500")}


@check
def batch_mixing():
    """A streamed pretraining epoch's batches (`ShardStream`'s plan) on rows stored volume by volume
    (128 volumes of 32 slices), against the in-memory sampler's (`EpochSampler` over the positions
    of the same rows) and against the same-volume pairs of a uniform draw of 60:
    sum_v C(n_v, 2) C(60, 2) / C(N, 2). tests/test_batch_mixing.py runs every data path."""
    from math import comb

    from ichbench.train.data import EpochSampler
    from ichbench.train.stream import ShardStream
    volume = np.repeat(np.arange(128), 32)
    rows = np.arange(len(volume))
    streamed = ShardStream(None, rows, 16, 60, None, torch.Generator().manual_seed(0), 16,
                           drop_last=True).epoch().batches
    loaded = EpochSampler(lambda g: torch.arange(len(rows)), 60, None, torch.Generator().manual_seed(0),
                          drop_last=True).epoch()
    pairs = np.mean([(np.bincount(volume[b]) * (np.bincount(volume[b]) - 1) // 2).sum() for b in streamed])
    uniform = 128 * comb(32, 2) * comb(60, 2) / comb(len(rows), 2)
    return {"streamed = in memory": all(np.array_equal(a, b.numpy()) for a, b in zip(streamed, loaded, strict=True)),
            "same-volume pairs within 1.5x of uniform": bool(uniform / 1.5 <= pairs <= 1.5 * uniform)}


@check
def multilabel_ce_weights():
    """multilabel_ce's paper config on a selection of 8 slices (no-ICH 4, ICH 4, iph 2, ivh 1,
    sah 4, sdh 0, edh 8): the seven weights it fixes before training, (N − n_pos) / n_pos with 1
    for a class without positives, and whether its loss is `BCEWithLogitsLoss(pos_weight=them)`."""
    import torch.nn.functional as F

    from ichbench.methods.base import get_method
    m = get_method("multilabel_ce")
    cfg = resolve(m, "segcq500", "paper").pretrain
    model = m.build_pretext(unet_for(resolve(m, "segcq500", "smoke").model), cfg).train()
    labels = np.zeros((8, 7), np.uint8)
    labels[:4, 0] = labels[4:, 1] = 1
    labels[4:6, 2] = labels[4, 3] = labels[4:, 4] = labels[:, 6] = 1
    weights = m.pretext_setup(model, labels, cfg)["pos_weight"]["values"]
    images = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = {"images": images, "labels": torch.from_numpy(labels[2:6])}
    expected = F.binary_cross_entropy_with_logits(model(images), batch["labels"].float(),
                                                  pos_weight=torch.tensor(weights))
    return {"weights": weights, "loss": bool(torch.allclose(m.pretext_loss(model, batch, cfg, None), expected))}


@check
def negatives_draw():
    """Mixed's normal slices under the paper profile's `finetune` (a fold of 5 slices with ICH and
    35 without): the same set in every epoch and when the pool is built again (another run), a
    different set for another fold or seed (`ichbench.train.data.finetune_pool`)."""
    from ichbench.train.data import EpochSampler, SliceArrays, finetune_pool
    fc = resolve("unet_mixed", "segcq500", "paper").finetune
    masks = torch.zeros(40, 4, 4, dtype=torch.uint8)
    masks[:5, 1, 1] = 1
    arrays = SliceArrays(images=torch.zeros(40, 4, 4, dtype=torch.int16), labels=torch.zeros(40, 7, dtype=torch.uint8),
                         volume=torch.zeros(40, dtype=torch.int64), masks=masks, brain=None, volumes=[],
                         fingerprint="-", path=Path("-"), rows=torch.arange(40))

    def drawn(seed, fold, sampler_seed=0, epochs=1):
        pool = finetune_pool(arrays, torch.arange(40), "mixed", fc.nonich_ratio, negatives=fc.negatives,
                             seed=seed, fold=fold)
        sampler = EpochSampler(pool, 4, None, torch.Generator().manual_seed(sampler_seed))
        return [frozenset(torch.cat(sampler.epoch()).tolist()) - set(range(5)) for _ in range(epochs)]
    first = drawn(fc.seed, 0, epochs=3)
    return {"same every epoch": len(set(first)) == 1, "same when built again": drawn(fc.seed, 0, 9)[0] == first[0],
            "another fold": drawn(fc.seed, 1)[0] != first[0], "another seed": drawn(fc.seed + 1, 0)[0] != first[0]}
