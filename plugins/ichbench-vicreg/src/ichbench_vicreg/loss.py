"""The VICReg loss (Bardes, Ponce & LeCun, ICLR 2022, eqs. 1-6 and Algorithm 1).

Given the expander outputs z, z' of two views (n samples, d features):
  invariance  s(z, z') = mean squared distance between the two views
  variance    v(z) = mean over features of max(0, γ - sqrt(Var(z_j) + ε)),   γ = 1, ε = 1e-4
  covariance  c(z) = sum of the squared off-diagonal entries of Cov(z), divided by d
  loss = λ s(z, z') + μ [v(z) + v(z')] / 2 + ν [c(z) + c(z')]
The variance terms are averaged over the two branches and the covariance terms summed, as in the
authors' released code (main_vicreg.py); the paper's Algorithm 1 sums both, which only rescales μ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    n, k = m.shape
    if n != k:
        raise ValueError(f"off_diagonal: expected a square matrix, got {tuple(m.shape)}")
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the standard deviation of every feature along the batch (unbiased variance)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Squared off-diagonal covariances, summed and divided by the number of features."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / (n - 1)
    return off_diagonal(cov).pow(2).sum() / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three unweighted terms: invariance, variance (mean of both views), covariance (sum)."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"vicreg: expected two (N, D) tensors of equal shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("vicreg: the variance and covariance terms need a batch of at least 2")
    # Always in float32: under bf16 autocast the covariance matmul would lose the small
    # off-diagonal entries the loss is about, and the sqrt near zero variance is unstable.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        return {"invariance": F.mse_loss(z1, z2),
                "variance": (variance_term(z1, gamma, eps) + variance_term(z2, gamma, eps)) / 2,
                "covariance": covariance_term(z1) + covariance_term(z2)}


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """λ·invariance + μ·variance + ν·covariance with the paper's λ = μ = 25, ν = 1 by default."""
    t = vicreg_terms(z1, z2, gamma, eps)
    return sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]
