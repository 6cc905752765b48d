"""The plugin API of ichbench, version `API_VERSION`: everything a third-party package may use.

A plugin imports from here and from nowhere else in ichbench. The names below are the same
objects the built-in methods and datasets use (this module only re-exports them), so a plugin
gets exactly the surface the built-ins are written against. Internal modules may move between
releases; these names keep their meaning for as long as `API_VERSION` does not change
(the policy is in docs/plugins.md, "Versioning").

What a **method** provides (subclass `Method`, or `PretextMethod` for a per-profile table):
`name`, `description`, `label_needs` (a `LabelNeeds`), `transfers` (U-Net part names, see
`part_names`), optionally `init_from`, `icm`, `sampling`; for a pretext `pretrain_overrides(profile)`,
`build_pretext(unet, cfg)` and `pretext_loss(model, batch, cfg, generator)` (and optionally
`pretext_setup(model, labels, cfg)`, what it derives once from the selection's labels).
A method may instead run its own fine-tuning (API 2): `finetune_overrides(profile)` and
`finetune_fold(fold)`, which gets a `Fold` (its volumes as arrays with spacing, the config, a
folder) and returns a `FoldOutput` (a mask per test volume) that ichbench scores itself.
Optionally it declares the schema of its `params` (`pretrain_params_model`,
`finetune_params_model`: a `MethodParams` with bounded `Field`s, `Widths` for a head's widths),
checked when a run's config is resolved.
What a **dataset** provides (subclass `Dataset`): `name`, `roles`, `layout`, `source_url`,
`licence`, `check_layout(source)` and `read(source, role, options, report)` yielding `Volume`s.
Both are handed to ichbench by a `@hookimpl` of `register_methods(register)` or
`register_datasets(register)` in a module named by an `[project.entry-points.ichbench]` entry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pydantic import Field

from ichbench import LABEL_ORDER, SUBTYPES, __version__
from ichbench.config import FinetuneConfig, PretrainConfig, RunConfig
from ichbench.resolve import resolve
from ichbench.datasets.base import (PRETRAINING, SEGMENTATION, UNKNOWN_LABEL, Dataset, IngestOptions,
                                    IngestReport, SlicePlan, Volume, get_dataset)
from ichbench.errors import IchbenchError, InputError, LayoutError, UnknownNameError
from ichbench.methods.base import (ANY_INPUT, InputSupport, LabelNeeds, Method, MethodParams, PretextMethod,
                                   Width, Widths, get_method)
from ichbench.methods.fold import Fold, FoldOutput, FoldVolume
from ichbench.plugins.hookspecs import hookimpl
from ichbench.plugins.manager import Registry, get_registry, reset_registry
from ichbench.preprocess.window import WINDOW, window
from ichbench.store import open_store, store_path

# Names whose modules import torch, zarr, pydicom or nibabel are loaded on first use (PEP 562), so
# a plugin that imports only what it needs to register (Method, LabelNeeds, hookimpl, ...) keeps
# `ichbench methods` fast; `from ichbench.api import UNet` works as before.
_LAZY = {
    "ichbench.datasets.dicom_io": ("DicomSlice", "read_slice", "stack_series"),
    "ichbench.datasets.nifti_io": ("load_ct", "load_label_map", "load_mask", "NiftiVolume"),
    "ichbench.evaluate.summary": ("per_volume_row", "summarize"),
    "ichbench.export.nifti": ("NIFTI_ENDING", "write_nifti_volume"),
    "ichbench.export.nnunet_raw": ("NNUNET_LABELS", "nnunet_dataset_name", "nnunet_image_path", "nnunet_label_path",
                                   "nnunet_labels", "write_nnunet_dataset_json"),
    "ichbench.methods.nets.heads": ("PooledEncoderHead", "conv1x1_projector", "mlp", "scaled_widths"),
    "ichbench.models.unet": ("ConvBlock", "UNet", "expand_parts", "part_names", "part_state", "transfer_parts"),
    "ichbench.ingest": ("IngestResult", "ingest"),
    "ichbench.store.reader": ("SliceStore",),
    "ichbench.orchestrate.plan": ("fold_task",),
    "ichbench.transforms": ("T_GLOBAL", "T_LOCAL", "ViewTransform", "contrastive_view", "gaussian_blur",
                               "random_affine", "random_brightness", "random_contrast", "random_gaussian_blur",
                               "random_resized_crop"),
    "ichbench.losses": ("dice_loss", "info_nce", "multilabel_dice_loss", "weighted_bce"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from ichbench.datasets.dicom_io import DicomSlice, read_slice, stack_series
    from ichbench.datasets.nifti_io import NiftiVolume, load_ct, load_label_map, load_mask
    from ichbench.evaluate.summary import per_volume_row, summarize
    from ichbench.export.nifti import NIFTI_ENDING, write_nifti_volume
    from ichbench.export.nnunet_raw import (NNUNET_LABELS, nnunet_dataset_name, nnunet_image_path, nnunet_label_path,
                                            nnunet_labels, write_nnunet_dataset_json)
    from ichbench.methods.nets.heads import PooledEncoderHead, conv1x1_projector, mlp, scaled_widths
    from ichbench.models.unet import ConvBlock, UNet, expand_parts, part_names, part_state, transfer_parts
    from ichbench.ingest import IngestResult, ingest
    from ichbench.store.reader import SliceStore
    from ichbench.orchestrate.plan import fold_task
    from ichbench.transforms import (T_GLOBAL, T_LOCAL, ViewTransform, contrastive_view, gaussian_blur,
                                        random_affine, random_brightness, random_contrast, random_gaussian_blur,
                                        random_resized_crop)
    from ichbench.losses import dice_loss, info_nce, multilabel_dice_loss, weighted_bce


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ichbench.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


# The API version. 2 added a method's own fine-tuning (`Method.finetune_fold`, `Fold`,
# `FoldVolume`, `FoldOutput`, `finetune_overrides`, `FinetuneConfig.params`) and the scoring
# functions; everything of 1 keeps its meaning, so plugins written for 1 still load
# (`COMPATIBLE`). See docs/plugins.md, "Versioning".
API_VERSION = 2
COMPATIBLE = (1, 2)    # the versions a plugin may require from this ichbench


def require_api(version: int) -> None:
    """Call at a plugin's import: a plugin written for an API version this ichbench does not
    provide then fails to import with one line that says why, which ichbench reports as a named
    warning and skips (or raises under ICHBENCH_STRICT_PLUGINS=1), instead of breaking later
    inside a training run. Version 1 plugins load under API 2, which only added names."""
    if int(version) not in COMPATIBLE:
        raise IchbenchError(f"this plugin needs ichbench plugin API {version}, but ichbench "
                            f"{__version__} provides API {API_VERSION} (compatible with "
                            f"{', '.join(map(str, COMPATIBLE))}); install a matching version of "
                            "the plugin or of ichbench")


def example_batch(n: int = 8, size: int = 64, seed: int = 0) -> dict:
    """A batch shaped exactly like the one the engine passes to `pretext_loss`, made from phantom
    head CTs (a plugin's own tests need no dataset): `images` (n, 1, size, size) float32 windowed
    to [0, 1], `labels` (n, 7) uint8 in LABEL_ORDER. Slices come from the middle of four phantom
    volumes, three with different hemorrhage subtypes and one without, taken in turn, so any batch
    of four or more mixes ICH and non-ICH slices."""
    import numpy as np
    import torch

    from ichbench.datasets.phantom.generator import generate_volume

    if n < 2 or size < 32:
        raise ValueError(f"example_batch needs n >= 2 and size >= 32, got n={n}, size={size}")
    images, labels = [], []
    kinds = (["iph", "sdh"], ["sah", "edh"], ["ivh"], [])
    per = -(-n // len(kinds)) + 4              # slices per volume; the 2 end slices each side are skipped
    for k, subtypes in enumerate(kinds):
        v = generate_volume(seed * len(kinds) + k + 1, vol_id=f"EX{k}", slices=per, size=size, subtypes=subtypes)
        s = len(v.hu)
        anyich = v.mask.reshape(s, -1).any(1)
        sub = np.stack([v.subtype_masks[t].reshape(s, -1).any(1) for t in SUBTYPES], 1)
        images.append(window(v.hu[2:-2]))
        labels.append(np.concatenate([~anyich[:, None], anyich[:, None], sub], 1)[2:-2])
    # interleave the volumes so any prefix of the batch sees all of them
    order = np.argsort(np.concatenate([np.arange(len(x)) * len(kinds) + j for j, x in enumerate(images)]))
    img, lab = np.concatenate(images)[order][:n], np.concatenate(labels)[order][:n]
    return {"images": torch.from_numpy(img.astype(np.float32))[:, None],
            "labels": torch.from_numpy(lab.astype(np.uint8))}


__all__ = [
    "API_VERSION", "COMPATIBLE", "require_api", "example_batch", "__version__",
    # plugin hooks, and the registry a plugin's tests can query (methods(), datasets(), owner())
    "hookimpl", "Registry", "get_registry", "reset_registry",
    # methods
    "Method", "PretextMethod", "LabelNeeds", "get_method",
    # the 2.5D inputs (input.*) a method's own code takes
    "InputSupport", "ANY_INPUT",
    # the schema of a method's params (pydantic's Field, re-exported)
    "MethodParams", "Field", "Width", "Widths",
    "PooledEncoderHead", "mlp", "conv1x1_projector", "scaled_widths",
    "PretrainConfig", "FinetuneConfig", "RunConfig", "resolve",
    # a method's own fine-tuning (API 2) and the scoring it is judged by
    "Fold", "FoldVolume", "FoldOutput", "fold_task", "per_volume_row", "summarize",
    # volumes on the store's grid as NIfTI, in nnU-Net's raw layout (`ichbench data export-folds` writes the same)
    "NIFTI_ENDING", "write_nifti_volume", "NNUNET_LABELS", "nnunet_dataset_name", "nnunet_image_path",
    "nnunet_label_path", "nnunet_labels", "write_nnunet_dataset_json",
    # the U-Net and its parts
    "UNet", "ConvBlock", "part_names", "expand_parts", "part_state", "transfer_parts",
    # losses and augmentation a pretext needs
    "dice_loss", "info_nce", "weighted_bce", "multilabel_dice_loss",
    "ViewTransform", "T_GLOBAL", "T_LOCAL", "contrastive_view", "random_affine", "random_resized_crop",
    "random_brightness", "random_contrast", "random_gaussian_blur", "gaussian_blur",
    "WINDOW", "window",
    # datasets
    "Dataset", "SlicePlan", "Volume", "IngestOptions", "IngestReport", "SEGMENTATION", "PRETRAINING", "UNKNOWN_LABEL",
    "LABEL_ORDER", "SUBTYPES", "get_dataset", "load_ct", "load_label_map", "load_mask", "NiftiVolume", "read_slice",
    "stack_series", "DicomSlice",
    "ingest", "IngestResult", "open_store", "store_path", "SliceStore",
    # errors
    "IchbenchError", "InputError", "LayoutError", "UnknownNameError",
]
