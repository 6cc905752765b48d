"""A run's configuration resolved for a method and a dataset: the one place where the typed
configuration (`ichbench.config`, which knows no registry) meets the registered methods and
datasets and the workspace (which pretraining store exists).

    cfg = resolve("unet_mixed", "hssayeni", "paper", ["finetune.epochs=3"])
"""

from __future__ import annotations

from ichbench.config import (PAPER_FINETUNE, IcmConfig, RunConfig, apply_override, as_data,
                             merge_settings, profile_settings, validated)
from ichbench.datasets.base import PRETRAINING, SEGMENTATION, get_dataset
from ichbench.errors import UnknownNameError
from ichbench.methods.base import Method, get_method
from ichbench.store import store_exists, store_path


def resolve(method: str | Method, dataset: str, profile: str = "paper", overrides=(),
            pretrain_dataset: str | None = None,
            home=None) -> RunConfig:
    """Defaults → profile (per dataset) → the method's pretext settings → `--set` overrides.

    Without `pretrain_dataset` the pretext pretrains on `default_pretrain_dataset(dataset, home)`;
    `cfg.pretrain_role` then names which of that dataset's stores it uses.

    `method` is a name or a Method. A method with `init_from` gets `cfg.init`, resolved the same
    way for that method with the same overrides except its `pretrain.params.*` (those are the
    method's own), so a changed U-Net width or image size reaches both pretrainings.
    """
    m = get_method(method) if isinstance(method, str) else method
    settings = profile_settings(profile, dataset)
    icm_settings = settings.pop("icm", {})
    data = as_data(RunConfig.model_construct(
        method=m.name, dataset=dataset, profile=profile,
        pretrain_dataset=pretrain_dataset or default_pretrain_dataset(
            dataset, home, profile, needs_labels=m.label_needs.binary or m.label_needs.multilabel),
        icm=IcmConfig() if m.icm else None))
    merge_settings(data, settings, f"profile {profile!r}")
    if data["icm"] is not None:
        merge_settings(data["icm"], icm_settings, f"profile {profile!r}")
    if m.has_pretext:
        merge_settings(data["pretrain"], m.pretrain_overrides(profile), f"method {m.name!r} pretrain_overrides")
    merge_settings(data["finetune"], m.finetune_overrides(profile), f"method {m.name!r} finetune_overrides")
    for item in overrides or ():
        apply_override(data, item, m.name)
    if data["icm"] is not None and data["icm"]["dataset"] is None:
        data["icm"]["dataset"] = default_icm_dataset(dataset)
    data["pretrain_role"] = pretrain_role_of(data["pretrain_dataset"])   # after overrides: --set pretrain_dataset=
    cfg = validated(RunConfig, data)
    m.check_params(cfg)   # against the schema the method declares, if any; the dicts stay as given
    m.check_inputs(cfg)   # 2.5D inputs the method's own code cannot take: refused before anything runs
    if m.init_from:
        inherited = [o for o in overrides or () if not o.strip().startswith("pretrain.params.")]
        cfg.init = resolve(m.init_from, dataset, profile, inherited, cfg.pretrain_dataset)
    return cfg


def default_icm_dataset(dataset: str) -> str:
    """The ICM U-Nets learn from hand-labelled cavity masks: the dataset's own where it ships them
    (Seg-CQ500's brain.nii.gz, the phantom's ground truth), else Seg-CQ500's (the paper labelled
    CQ500 scans for it)."""
    try:
        if get_dataset(dataset).ships_brain_masks:
            return dataset
    except UnknownNameError:
        pass
    return "segcq500"


def default_pretrain_dataset(dataset: str, home=None, profile: str | None = None, needs_labels: bool = False) -> str:
    """A dataset with its own pretraining store (the phantom) pretrains on it; the real
    segmentation datasets pretrain on RSNA, as in the paper (§2.6). Given the workspace `home`, a
    dataset with only a segmentation role pretrains on its own segmentation store's slices when
    there is no RSNA pretraining store to use (see `own_slices_note`) — except the paper's own
    datasets in the `paper` profile, where RSNA is the protocol: a missing RSNA store is an error
    that says where to get it, not a silent change of what is being compared. A pretext that
    `needs_labels` (slice-level classification) does not default to a pretraining store without
    them (bhsd's unlabelled volumes): it pretrains on RSNA, whose slices carry them."""
    if profile == "paper" and dataset in PAPER_FINETUNE:
        return "rsna"
    try:
        ds = get_dataset(dataset)
    except UnknownNameError:
        return "rsna"
    roles = ds.roles
    if PRETRAINING in roles:
        return dataset if ds.pretraining_labelled or not needs_labels else "rsna"
    if home is not None and SEGMENTATION in roles and not store_exists(store_path(home, "rsna", PRETRAINING)):
        return dataset
    return "rsna"


def pretrain_role_of(dataset: str) -> str:
    """The store a pretext trains on when it pretrains on `dataset`: its pretraining store, else
    (a segmentation-only dataset) its segmentation store, whose slices carry images and the
    [no_ich, any] labels its masks give."""
    try:
        roles = get_dataset(dataset).roles
    except UnknownNameError:
        return PRETRAINING   # an unknown name is refused where its store is opened
    return SEGMENTATION if PRETRAINING not in roles and SEGMENTATION in roles else PRETRAINING


def own_slices_note(dataset: str) -> str:
    """The one console line for the fallback of `default_pretrain_dataset`."""
    return (f"pretraining on {dataset}'s own slices: no rsna pretraining store; "
            "ingest rsna or pass --pretrain-dataset")
