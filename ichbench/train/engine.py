"""The training engine: pretext pretraining and fine-tuning, plain PyTorch.

Both share one loop (`train.loop.fit`): Adam with L2 as weight decay, the learning rate decayed by
ExponentialLR once per epoch, a checkpoint of the whole training state after every epoch (so a
killed run resumes where it stopped and ends with the same weights), and a rich progress bar.

Devices: on CUDA the forward pass runs under bf16 autocast with channels_last tensors and, when the
config asks, torch.compile. On the CPU everything is seeded and deterministic algorithms are
enforced: the same seed gives the same loss curve and weights *on the same CPU kind, thread count
and torch build* — not across machines (docs/architecture.md, "Determinism"). Results record the
thread count and vector ISA they were computed with (`device.numerics`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ichbench import __version__
from ichbench.errors import IchbenchError
from ichbench.files import write_json_atomic
from ichbench.models.unet import (UNet, expand_parts, first_conv_channels, inflate_first_conv, part_state,
                                  transfer_parts, unet_for)
from ichbench.train import checkpoint as ckpt
from ichbench.train import task
from ichbench.transforms import augment_batch
from ichbench.train.data import EpochSampler, finetune_pool, load_store, place, volume_rows, with_channels
from ichbench.train.device import (autocast_for, batch_images, device_mode, gather, images_of, model_input, numerics,
                                   prepare_model, select_device)
from ichbench.train.fold_setup import fold_result, setup_fold, write_fold_result
from ichbench.train.label_needs import check_pretraining_store
from ichbench.train.loop import fit, generators
from ichbench.train.predict import evaluate_volumes
from ichbench.train.pretrain_data import labels_withheld, pretrain_data

VALIDATION_SEED_OFFSET = 7919  # validation draws its pretext randomness from its own fixed stream


def _method(method):
    if isinstance(method, str):
        from ichbench.methods.base import get_method
        return get_method(method)
    return method


# -- pretraining ------------------------------------------------------------------------------------

def pretrained_dirname(cfg) -> str:
    """Folder name of a pretraining under `<home>/pretrained/<pretrain_dataset>/`: method and hash,
    so every fine-tuning (and local_contrastive's init) with the same settings reuses it."""
    return f"{cfg.method}-{cfg.hash()[:12]}"


def pretrain(method, store_path: Path, cfg, out_dir: Path, device=None, progress: bool = True,
             init_checkpoint: Path | None = None, on_epoch=None) -> Path:
    """Train `method`'s pretext on the store at `store_path`; returns the path of a checkpoint of the
    U-Net parts the method transfers. A finished pretraining with the same config hash on the same
    store content is returned as is; an interrupted one resumes from its last epoch."""
    from ichbench.store import open_store

    m = _method(method)
    m.check_inputs(cfg)
    if not m.has_pretext:
        raise IchbenchError(f"{m.name} has no pretext to pretrain (a baseline); fine-tune it directly")
    out_dir = Path(out_dir)
    store = open_store(store_path)
    check_pretraining_store(m, store)
    pc = cfg.pretrain
    identity = cfg.hash()
    final = out_dir / ckpt.PRETRAINED_NAME
    if _finished(final, identity, store.fingerprint):
        return final
    state_path = out_dir / ckpt.STATE_NAME
    state_identity = f"{identity}:{store.fingerprint}"
    if state_path.exists() and ckpt.load(state_path).get("identity") != state_identity:
        state_path.unlink()  # the store was re-ingested: an old partial run no longer applies
    device = select_device(device)

    init_state, init_checkpoint = _init_state(m, store_path, cfg, out_dir, init_checkpoint, device, progress)
    data = pretrain_data(store, store_path, cfg, labels_withheld(m, cfg))
    centre = cfg.input.pretrain_input().centre

    with device_mode(device):
        torch.manual_seed(pc.seed)
        unet = unet_for(cfg.model, in_channels=cfg.input.pretrain_input().channels)
        if init_state is not None:
            _check_model(init_state[0], cfg, init_checkpoint)
            transfer_parts(init_state[0]["state"], unet, init_state[1])
        pretext = m.build_pretext(unet, pc)
        # what the pretext derives once from the selection's labels (multilabel_ce's class weights)
        setup = m.pretext_setup(pretext, data.selection_labels(), pc) or {}
        if setup:
            write_json_atomic(setup, out_dir / ckpt.PRETEXT_SETUP_NAME)
        model = prepare_model(pretext, device, pc.compile and device.type == "cuda")
        arrays = place(data.arrays, device)
        gens = generators(pc.seed, device)
        sampler = data.sampler(store, cfg, gens["sampler"])
        hold_pos = data.hold_pos

        def batch_of(idx: torch.Tensor) -> dict:
            return {"images": images_of(arrays, idx, device), "labels": gather(arrays.labels, idx, device),
                    "centre": centre}

        def train_batch(item) -> dict:
            """An index batch into `arrays`, or a `StreamBatch` that carries its images."""
            if not data.streamed:
                return batch_of(item)
            return {"images": model_input(item.images, device, arrays.channels),
                    "labels": data.labels[item.rows].to(device), "centre": centre}

        def loss_fn(item) -> torch.Tensor:
            batch = train_batch(item)
            if pc.augment:   # training batches only: the validation loss stays comparable
                images, _ = augment_batch(batch["images"], None, pc.augment, gens["device"])
                batch["images"] = (images.contiguous(memory_format=torch.channels_last)
                                   if device.type == "cuda" else images)
            with autocast_for(device):
                return m.pretext_loss(model, batch, pc, gens["device"])

        t0 = time.perf_counter()
        history = fit(model=model, loss_fn=loss_fn, sampler=sampler, epochs=pc.epochs, lr=pc.lr,
                       lr_decay=pc.lr_decay, weight_decay=pc.weight_decay, state_path=state_path,
                       identity=state_identity, generators=gens, device=device, desc=f"pretrain {m.name}",
                       progress=progress, on_epoch=on_epoch,
                      validate=lambda: _held_out_loss(m, model, batch_of, hold_pos, pc, device))
    payload = {"kind": "pretrained", "method": m.name, "transfers": list(m.transfers),
               "state": {k: v.detach().cpu() for k, v in part_state(model.unet, m.transfers).items()},
               "model": cfg.model.model_dump(), "config": cfg.to_dict(), "config_hash": identity,
               "store": str(store_path), "store_fingerprint": store.fingerprint,
               "n_train_slices": int(len(data.train_rows)), "n_holdout_slices": int(len(hold_pos)),
               "data_path": "streamed" if data.streamed else "in-memory", "data_path_reason": data.why,
               "history": history, "device": str(device), "seconds": round(time.perf_counter() - t0, 3),
               "ichbench_version": __version__, **numerics(device)}
    if setup:
        payload["pretext_setup"] = setup
    return ckpt.save_atomic(payload, final)


def _finished(final: Path, identity: str, fingerprint: str) -> bool:
    """A finished pretraining of this config on this store content."""
    if not final.exists():
        return False
    done = ckpt.load_pretrained(final)
    return done.get("config_hash") == identity and done.get("store_fingerprint") == fingerprint


def _init_state(m, store_path: Path, cfg, out_dir: Path, init_checkpoint: Path | None, device, progress):
    """For a method that starts from another's pretraining (`init_from`): that checkpoint's
    state and transferred parts, pretraining it first when no checkpoint is given."""
    if not m.init_from:
        return None, init_checkpoint
    from ichbench.methods.base import get_method
    if cfg.init is None:
        raise IchbenchError(f"{m.name} starts from {m.init_from}'s pretraining, but the config has no `init`")
    init_method = get_method(m.init_from)
    if init_checkpoint is None:
        init_checkpoint = pretrain(init_method, store_path, cfg.init, out_dir.parent / pretrained_dirname(cfg.init),
                                   device=device, progress=progress)
    return (ckpt.load_pretrained(init_checkpoint), init_method.transfers), init_checkpoint


def _held_out_loss(m, model, batch_of, hold_pos: torch.Tensor, pc, device) -> float:
    """The pretext loss on the held-out slices, with a fixed generator so epochs compare."""
    if len(hold_pos) < 2:
        return float("nan")
    g = torch.Generator(device=device).manual_seed(pc.seed + VALIDATION_SEED_OFFSET)
    model.eval()
    losses, weights = [], []
    with torch.no_grad():
        for idx in hold_pos.split(pc.batch_size):
            if len(idx) < 2:
                continue
            with autocast_for(device):
                losses.append(m.pretext_loss(model, batch_of(idx), pc, g).float())
            weights.append(len(idx))
    model.train()
    w = torch.tensor(weights, dtype=torch.float32)
    return float((torch.stack(losses).cpu() * w).sum() / w.sum())


def _check_model(pre: dict, cfg, path) -> None:
    want = cfg.model.model_dump()
    # checkpoints made before `encoder_growth` existed used the block that grows on its first conv
    got = {"encoder_growth": "first", **(pre.get("model") or {})}
    if got != want:
        raise IchbenchError(f"{path}: pretrained for U-Net {got}, but this run uses {want}")


# -- fine-tuning ------------------------------------------------------------------------------------

def _load_pretrained_into(unet: UNet, method, path: Path, cfg, classes=None) -> dict:
    if not method.transfers:
        raise IchbenchError(f"{method.name} transfers no pretrained parts (a baseline); drop the checkpoint")
    pre = ckpt.load_pretrained(path)
    _check_model(pre, cfg, path)
    # Another method's checkpoint is accepted (to study transfer) for the parts this method declares.
    own = pre.get("method") == method.name
    parts = list(pre.get("transfers") or method.transfers) if own else list(method.transfers)
    parts = task.transferable(unet, parts, classes)   # subtypes: every part but the head
    state, have, want = pre["state"], first_conv_channels(pre["state"]), cfg.input.channels
    if have is not None and have != want and cfg.input.pretrain != "2d":
        raise IchbenchError(f"{path}: pretrained on {have} input channel(s), this run takes {want} (input.*); "
                            f"set input.pretrain=2d to inflate a 1-channel pretraining's first convolution")
    try:
        if cfg.input.pretrain == "2d":
            state = inflate_first_conv(state, want)
        copied = transfer_parts(state, unet, parts)
    except ValueError as exc:
        raise IchbenchError(f"{path}: {exc}") from None
    return {"path": str(path), "method": pre.get("method"), "config_hash": pre.get("config_hash"),
            "store_fingerprint": pre.get("store_fingerprint"), "parts": parts, "tensors": len(copied)}


def finetune(method, store_path: Path, split: dict, fold: int, cfg, out_dir: Path, pretrained: Path | None = None,
             device=None, progress: bool = True, on_epoch=None, cavity=None) -> dict:
    """Fine-tune a U-Net on the training volumes of `fold` and score the fold's test volumes
    (or, for a method with its own fine-tuning, have it predict them: `train.own_loop`).

    Writes `out_dir/result.json` (per-volume metrics, summary, history, the resolved config) and
    returns the same dict. The training state is checkpointed every epoch in `out_dir/state.pt`;
    calling again with the same arguments resumes (or, when finished, only re-evaluates).
    A +ICM method needs `cavity`, an `ichbench.icm.CavitySource` for its `icm.source`.
    """
    m = _method(method)
    m.check_inputs(cfg)
    if m.owns_finetuning:   # plugin API 2: the method trains, ichbench scores (train.own_loop)
        from ichbench.train.own_loop import finetune_own
        return finetune_own(m, store_path, split, fold, cfg, out_dir, pretrained,
                            select_device(device), on_epoch)
    out_dir = Path(out_dir)
    fc = cfg.finetune
    setup = setup_fold(m, store_path, split, fold, cfg, pretrained)
    if m.icm and cavity is None:
        raise IchbenchError(f"{m.name} multiplies its predictions by the intracranial cavity mask: pass its "
                            "source (`ichbench.icm.CavitySource(cfg.icm, ...)`)")
    device = select_device(device)
    store, test_ids, train = setup.store, setup.test_ids, setup.train_ids
    extra = ()
    if m.icm and cfg.icm.source == "shipped":
        extra = ("brain",)
    elif m.icm and cavity.stored_in(store):
        extra = ("icm",)
    classes = setup.classes
    arrays = load_store(store_path, fc.image_size,
                        names=("images", "labels", "volume", *task.mask_names(classes), *extra))
    with_channels(arrays, cfg.input.context, cfg.input.windows)
    store_size = setup.store_size
    train_rows = volume_rows(arrays, train)

    with device_mode(device):
        torch.manual_seed(fc.seed)
        unet = unet_for(cfg.model, in_channels=cfg.input.channels, out_channels=task.head_outputs(classes))
        transfer = (_load_pretrained_into(unet, m, Path(pretrained), cfg, classes)
                    if pretrained is not None else None)
        if fc.head_prior is not None and not (transfer and "head" in expand_parts(unet, transfer["parts"])):
            task.init_head_prior(unet, fc.head_prior, classes)
        icm_key = cavity.model_key if (m.icm and cavity is not None) else None
        identity = (cfg.finetune_hash(transfer["config_hash"] if transfer else None, icm_key)
                    + f":fold{fold}:{split.get('hash')}")
        model = prepare_model(unet, device, fc.compile and device.type == "cuda")
        pool = finetune_pool(arrays, train_rows, m.sampling, fc.nonich_ratio,  # on the host copy
                             negatives=fc.negatives, seed=fc.seed, fold=fold)
        arrays = place(arrays, device)
        gens = generators(fc.seed, device)
        sampler = EpochSampler(pool, fc.batch_size, fc.steps_per_epoch, gens["sampler"])
        aug = fc.augment
        # eq. 5's α applies to Mixed; ICH-only is plain eq. 4 (α = 1 on the rare slice that an
        # augmentation empties).
        alpha = fc.empty_weight if m.sampling == "mixed" else 1.0

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            images = batch_images(arrays, idx, device)
            masks = task.targets(arrays, idx, gather, device, classes)   # the mask, or class ids
            images, masks = augment_batch(images, masks, aug, gens["device"])
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_for(device):
                logits = model(images)
            return task.loss(logits.float(), masks, alpha, classes)

        t0 = time.perf_counter()
        history = fit(model=model, loss_fn=loss_fn, sampler=sampler, epochs=fc.epochs, lr=fc.lr,
                       lr_decay=fc.lr_decay, weight_decay=fc.weight_decay, state_path=out_dir / ckpt.STATE_NAME,
                       identity=identity, generators=gens, device=device,
                       desc=f"finetune {m.name} fold {fold}", progress=progress, on_epoch=on_epoch)
        train_seconds = time.perf_counter() - t0
        rows = evaluate_volumes(model, arrays, test_ids, device, fc.threshold, cavity if m.icm else None,
                                spacing_scale=store_size / fc.image_size, nsd_mm=cfg.eval.nsd_mm, classes=classes)
    model_path = save_model(out_dir / ckpt.MODEL_NAME, unet, m, cfg, fold, store_size, cavity if m.icm else None,
                            classes)
    result = fold_result(m, cfg, split, fold, setup, store_path, rows=rows, n_train_slices=len(train_rows),
                         history=history, identity=identity, train_seconds=train_seconds, device=device,
                         pretrained=transfer, icm=cavity.info if m.icm else None,
                         model={"path": str(model_path), "sha256": ckpt.sha256_file(model_path)})
    write_fold_result(result, out_dir / "result.json")
    return result


def save_model(path: Path, unet, method, cfg, fold: int, store_size: int, cavity=None, classes=None) -> Path:
    """The fold's trained U-Net with everything `ichbench predict` needs to apply it to a new scan
    and nothing else: weights, the resolved config (preprocessing, threshold), the store size the
    scans were resampled to before training, and for +ICM methods the cavity source (with the ICM
    U-Nets' weights when learned, so the file is self-contained); a subtypes model also names
    its classes (ids 1..C), which a binary model's file does not carry."""
    payload = {"kind": ckpt.MODEL_KIND, "method": method.name, "dataset": cfg.dataset, "profile": cfg.profile,
               "fold": fold, "config": cfg.to_dict(), "store_size": int(store_size),
               "state": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
               "icm": None, "ichbench_version": __version__}
    if classes:
        payload["classes"] = list(classes)
    if cavity is not None:
        payload["icm"] = {"source": cavity.source, "threshold": cavity.threshold,
                          "unets": cavity.unets.payload if cavity.unets is not None else None}
    return ckpt.save_atomic(payload, path)

