"""nnUNetTrainerIchbench: nnU-Net's own trainer with its schedule taken from the ichbench config.

Imported only by `runner`, in the subprocess whose environment names the fold's nnU-Net folders.
The class is constructed directly (never looked up by name: nnU-Net's recursive class search
imports every trainer variant it ships, some of which fail with the installed timm/torchvision).
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerIchbench(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming convention
    """nnUNetTrainer with `schedule(...)` applied before training; everything else is nnU-Net's
    (network, loss, augmentation, SGD with the poly schedule, deep supervision)."""

    def schedule(self, *, epochs: int, iterations: int, val_iterations: int, lr: float,
                 weight_decay: float, batch_size: int = 0) -> None:
        """Set the epochs, iterations per epoch, validation iterations, initial learning rate,
        weight decay and (when > 0) batch size. Must come before training initialises."""
        if self.was_initialized:
            raise RuntimeError("nnUNetTrainerIchbench.schedule: the trainer is already initialised")
        if epochs < 1 or iterations < 1 or val_iterations < 1:
            raise ValueError(f"need epochs, iterations and val_iterations >= 1, got "
                             f"{epochs}, {iterations}, {val_iterations}")
        self.num_epochs = int(epochs)
        self.num_iterations_per_epoch = int(iterations)
        self.num_val_iterations_per_epoch = int(val_iterations)
        self.initial_lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.fixed_batch_size = int(batch_size)

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if getattr(self, "fixed_batch_size", 0) > 0:
            self.batch_size = self.fixed_batch_size

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoints, except checkpoint_best: its "best" is judged on the validation
        list, here the training volumes, and the plugin predicts with checkpoint_final only."""
        if not str(filename).endswith("checkpoint_best.pth"):
            super().save_checkpoint(filename)

    def plot_network_architecture(self):
        """Skipped: it needs hiddenlayer and graphviz, and only draws a PDF."""

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Skipped: ichbench predicts and scores the fold's test volumes itself."""

    def history(self) -> list[dict]:
        """One dict per finished epoch, in ichbench's history format."""
        get = lambda key: list(self.logger.get_value(key, None) or [])  # noqa: E731
        losses, val = get("train_losses"), get("val_losses")
        lrs, ema = get("lrs"), get("ema_fg_dice")
        out = []
        for i, loss in enumerate(losses):
            rec = {"epoch": i + 1, "loss": float(loss),
                   "lr": float(lrs[i]) if i < len(lrs) else None}
            if i < len(val):
                rec["val_loss"] = float(val[i])
            if i < len(ema):
                rec["pseudo_dice_ema"] = float(ema[i])
            out.append(rec)
        return out
