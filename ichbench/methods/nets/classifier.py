"""The multi-label classifier (§2.6.2.2): the pooled-encoder MLP, with the class weights its
weighted BCE uses: fixed ones from the pretraining selection, or running label counts ("auto")."""

from __future__ import annotations

import torch

from ichbench import LABEL_ORDER, UNKNOWN_LABEL
from ichbench.methods.nets.heads import PooledEncoderHead

N_CLASSES = len(LABEL_ORDER)
MAX_POS_WEIGHT = 100.0   # as `ichbench.losses.class_pos_weights`' default clip


class MultilabelClassifier(PooledEncoderHead):
    def __init__(self, unet, paper_dims):
        super().__init__(unet, paper_dims, classes=True)
        # running label counts for pos_weight="auto" (float64: exact far beyond RSNA's 750k slices)
        self.register_buffer("label_pos", torch.zeros(N_CLASSES, dtype=torch.float64))
        self.register_buffer("label_neg", torch.zeros(N_CLASSES, dtype=torch.float64))
        # pos_weight="selection_frequency": set once by `use_pos_weight` before training; not in
        # the state dict (it is recomputed from the selection's labels whenever a run starts)
        self.register_buffer("fixed_pos_weight", None, persistent=False)

    def use_pos_weight(self, weights: torch.Tensor) -> None:
        """Fix the class weights (7,) for every batch, training and validation alike."""
        device = self.label_pos.device
        self.fixed_pos_weight = torch.as_tensor(weights, dtype=torch.float32).to(device)

    @torch.no_grad()
    def observe(self, labels: torch.Tensor) -> torch.Tensor:
        """Add a training batch's labels (B, 7) to the counts (evaluation batches are not
        counted); return the running n_neg/n_pos weights."""
        if self.training:
            known = labels != UNKNOWN_LABEL
            self.label_pos += ((labels == 1) & known).sum(0).to(self.label_pos)
            self.label_neg += ((labels == 0) & known).sum(0).to(self.label_neg)
        w = torch.where(self.label_pos > 0, self.label_neg / self.label_pos.clamp(min=1),
                        torch.full_like(self.label_pos, MAX_POS_WEIGHT))
        return w.clamp(max=MAX_POS_WEIGHT).float()
