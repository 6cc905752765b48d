"""nnunet_2d: nnU-Net v2 (Isensee et al., Nature Methods 2021) as an ichbench method.

nnU-Net is not a pretext: it replaces the whole fine-tuning of a fold (plugin API 2,
`finetune_fold`). For each fold it plans and preprocesses the fold's training volumes, trains
its own 2d U-Net with its own recipe, and predicts the fold's test volumes; ichbench scores the
predictions exactly as it scores the paper's methods.

Only the 2d configuration is offered. nnU-Net's 3d_fullres needs slices thin enough for 3-D
convolutions to see structure across them: the phantom and Hssayeni have 5 mm slices (about 15
times their in-plane spacing), and Seg-CQ500 mixes 41 volumes of 0.625 mm with 10 of 3-5 mm, so
a 3d_fullres plan for it is dominated by a resampling of a fifth of its volumes by up to 8 times
along z. See the README, "Why no nnunet_3d_fullres".

This module imports no torch and no nnU-Net: `ichbench methods` imports every plugin to list
it. The nnU-Net side runs in `fold_run` (in the fold's Ray worker) and `runner` (a subprocess).
"""

from __future__ import annotations

import copy

from ichbench.api import (WINDOW, Field, IchbenchError, InputSupport, LabelNeeds, Method, MethodParams,
                          UnknownNameError)

# nnU-Net's nnUNetTrainer defaults (nnunetv2 2.8): 1000 epochs of 250 training and 50 validation
# iterations, SGD (Nesterov, momentum 0.99) from lr 1e-2 with a poly schedule, weight decay 3e-5,
# the batch size of its plan. `finetune.epochs`, `steps_per_epoch`, `lr` and `weight_decay` carry
# them, so `--set finetune.epochs=250` works as for every method; the rest is in `params`.
PAPER = {"epochs": 1000, "steps_per_epoch": 250, "lr": 1e-2, "weight_decay": 3e-5,
         "params": {"val_iterations": 50,     # nnU-Net's online validation batches per epoch
                    "batch_size": 0,          # 0: the batch size nnU-Net plans
                    "mirroring": True,        # test-time mirroring when predicting (its default)
                    "tile_step_size": 0.5,    # sliding-window overlap when predicting (its default)
                    "processes": 4,           # processes for fingerprinting and preprocessing
                    # background augmentation processes while training; -1: nnU-Net's own
                    # choice (12 unless nnUNet_n_proc_DA says otherwise). A GPU needs them: in
                    # the training process alone, augmentation is the bottleneck.
                    "augmentation_workers": -1}}
# A handful of iterations so that a fold plans, trains, predicts and is scored on two CPU cores
# in about a minute: the result says nothing about nnU-Net, only that the path works.
SMOKE = {"epochs": 2, "steps_per_epoch": 4, "lr": 1e-2, "weight_decay": 3e-5,
         "params": {"val_iterations": 1, "batch_size": 8, "mirroring": False,
                    "tile_step_size": 0.5, "processes": 1, "augmentation_workers": 0}}


class NnUNetParams(MethodParams):
    """`finetune.params`, checked when a run's config is resolved (dry runs too). The defaults are
    what `fold_run` uses where a key is absent. Each bound is far above any use and stops a typo
    before nnU-Net plans, preprocesses and starts training."""
    val_iterations: int = Field(50, ge=1, le=10_000)    # nnU-Net validates 50 batches an epoch
    """nnU-Net's online validation batches per epoch"""
    batch_size: int = Field(0, ge=0, le=4096)          # ichbench's own limit on a batch
    """slices per training batch; 0: the batch size nnU-Net plans"""
    mirroring: bool = True
    """test-time mirroring when predicting"""
    tile_step_size: float = Field(0.5, gt=0, le=1)     # nnU-Net asserts it, but only when predicting
    """sliding-window step when predicting, as a share of the patch"""
    processes: int = Field(1, ge=1, le=256)            # a process each: more than a node's cores
    """processes for fingerprinting and preprocessing"""
    augmentation_workers: int = Field(-1, ge=-1, le=256)
    """background augmentation processes; -1: nnU-Net's own choice"""


class NnUNet2D(Method):
    name = "nnunet_2d"
    description = ("nnU-Net v2, 2d configuration: planned, preprocessed and trained by nnU-Net on "
                   "each fold's training volumes; no pretraining")
    paper_section = "Isensee et al. 2021 (reference row, not one of the paper's methods)"
    label_needs = LabelNeeds(segmentation=True)
    transfers = ()
    configuration = "2d"
    pretrain_params_model = MethodParams   # no pretext
    finetune_params_model = NnUNetParams
    profiles = {"paper": PAPER, "smoke": SMOKE}
    # nnU-Net's 2d configuration reads each slice alone, in HU normalised by its own CT rule:
    # neither neighbours as channels (input.context) nor ichbench's windows (input.windows) reach
    # it, so a run asking for them is refused before anything trains, not run as something else.
    inputs = InputSupport(max_context=0, max_windows=1)
    # subtypes: nnU-Net trains the class map as a label image (one softmax output per class, its
    # own Dice + cross-entropy) and predicts the label map, which ichbench scores per class
    tasks = ("binary", "subtypes")

    def check_inputs(self, cfg) -> None:
        super().check_inputs(cfg)
        if [tuple(w) for w in cfg.input.windows] != [tuple(WINDOW)]:
            raise IchbenchError(f"method {self.name!r} normalises HU by nnU-Net's own CT rule and takes no "
                                f"input.windows (got {[list(w) for w in cfg.input.windows]}); leave the default")

    def finetune_overrides(self, profile: str) -> dict:
        if profile not in self.profiles:
            raise UnknownNameError("profile", profile, self.profiles)
        return copy.deepcopy(self.profiles[profile])

    def finetune_fold(self, fold):
        from ichbench_nnunet.fold_run import run_fold
        return run_fold(fold, self.configuration)


METHODS = [NnUNet2D()]
