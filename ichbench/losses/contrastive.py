"""The global contrastive loss (eq. 6, SimCLR's NT-Xent); the local contrastive loss (eq. 7) is
the same formula applied to region embeddings instead of image embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """InfoNCE / NT-Xent (eq. 6; eq. 7 with region embeddings): z1[i] and z2[i] are two views.

    The 2N embeddings are L2-normalised so dot products are the cosine similarity of eq. 6. Each
    of the 2N anchors has its other view as positive and the remaining 2N-2 embeddings as
    negatives; the denominator runs over all k ≠ i (positive included), as in eq. 6 and SimCLR.
    The paper writes a sum over anchors; we take the mean over all 2N anchors (SimCLR's
    normalisation), which only rescales the loss and keeps it independent of the batch size.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"info_nce: expected two (N, D) tensors of equal shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 1:
        raise ValueError("info_nce: need at least one pair")
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    sim = z @ z.t() / tau
    # k = i is excluded from the denominator of eq. 6.
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)
