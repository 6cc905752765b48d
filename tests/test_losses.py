"""Losses against hand-computed values (paper eqs. 4–6)."""

import math

import pytest
import torch

from ichbench.losses import (class_pos_weights, dice_loss, info_nce, multilabel_dice_loss,
                                   weighted_bce)


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


# Slice 1: p = [[0.8, 0.2], [0.5, 0.5]], t = [[1, 0], [1, 0]]
#   Σ p·t = 0.8 + 0.5 = 1.3;  Σ p² = 0.64 + 0.04 + 0.25 + 0.25 = 1.18;  Σ t² = 2
#   L = 1 − (2·1.3 + 1) / (1.18 + 2 + 1) = 1 − 3.6 / 4.18 = 0.58 / 4.18
# Slice 2 (empty target): p = 0.5 everywhere, t = 0
#   Σ p² = 1;  L = 1 − 1 / (1 + 1) = 0.5
P1, T1 = [[0.8, 0.2], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]]
P2, T2 = [[0.5, 0.5], [0.5, 0.5]], [[0.0, 0.0], [0.0, 0.0]]
L1, L2 = 0.58 / 4.18, 0.5


def batch():
    return logit([[P1], [P2]]).float(), torch.tensor([[T1], [T2]])


def test_dice_loss_single_slice_by_hand():
    loss = dice_loss(logit([[P1]]).float(), torch.tensor([[T1]]))
    assert loss.item() == pytest.approx(L1, abs=1e-6)


def test_dice_loss_empty_slice_by_hand():
    loss = dice_loss(logit([[P2]]).float(), torch.tensor([[T2]]))
    assert loss.item() == pytest.approx(L2, abs=1e-6)


def test_dice_loss_is_per_slice_mean_not_pooled():
    # Pooled over the batch it would be 1 − (2.6 + 1)/(2.18 + 2 + 1) = 0.3050…; per slice it is (L1 + L2)/2.
    loss = dice_loss(*batch())
    assert loss.item() == pytest.approx((L1 + L2) / 2, abs=1e-6)


def test_alpha_weights_only_empty_slices_eq5():
    # Eq. 5 with α = 0.2: (L1 + 0.2·L2) / B, B = 2.
    loss = dice_loss(*batch(), empty_weight=0.2)
    assert loss.item() == pytest.approx((L1 + 0.2 * L2) / 2, abs=1e-6)
    # α = 0 drops the empty slice but still divides by the batch size.
    assert dice_loss(*batch(), empty_weight=0.0).item() == pytest.approx(L1 / 2, abs=1e-6)


def test_dice_loss_3d_and_4d_inputs_agree_and_shapes_checked():
    lg, t = batch()
    assert dice_loss(lg[:, 0], t[:, 0]).item() == pytest.approx(dice_loss(lg, t).item(), abs=1e-7)
    with pytest.raises(ValueError, match=r"\(2, 1, 2, 2\).*\(2, 2, 2\)"):
        dice_loss(lg, t[:, 0])


def test_dice_loss_perfect_and_gradient_direction():
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    perfect = (t * 2 - 1) * 30
    assert dice_loss(perfect, t).item() == pytest.approx(0.0, abs=1e-6)
    lg = torch.zeros_like(t, requires_grad=True)
    dice_loss(lg, t).backward()
    # Raising a positive pixel's logit and lowering a negative one's must both reduce the loss.
    assert lg.grad[0, 0, 0] < 0 and lg.grad[0, 0, 1] > 0


# 7 outputs, logits 0 → p = 0.5; t = [1, 1, 0, 0, 0, 0, 0]
#   Σ p·t = 1;  Σ p² = 7 · 0.25 = 1.75;  Σ t² = 2;  L = 1 − 3 / 4.75
def test_multilabel_dice_by_hand():
    lg = torch.zeros(1, 7)
    t = torch.tensor([[1, 1, 0, 0, 0, 0, 0]], dtype=torch.uint8)
    assert multilabel_dice_loss(lg, t).item() == pytest.approx(1 - 3 / 4.75, abs=1e-6)


def test_multilabel_dice_ignores_unknown_and_averages_slices():
    # Second slice knows only [no_ich, any] = [0, 1]: Σ p·t = 0.5, Σ p² = 0.5, Σ t² = 1 → 1 − 2/2.5 = 0.2
    lg = torch.zeros(2, 7)
    t = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 1, 255, 255, 255, 255, 255]], dtype=torch.uint8)
    assert multilabel_dice_loss(lg, t).item() == pytest.approx(((1 - 3 / 4.75) + 0.2) / 2, abs=1e-6)


def test_weighted_bce_by_hand():
    # logits 0: an entry costs log 2, a positive one w_c · log 2.
    # t = [[1, 0], [0, 0]], w = [3, 1] → (3 + 1 + 1 + 1) log 2 / 4
    lg = torch.zeros(2, 2)
    t = torch.tensor([[1, 0], [0, 0]], dtype=torch.uint8)
    assert weighted_bce(lg, t, torch.tensor([3.0, 1.0])).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert weighted_bce(lg, t).item() == pytest.approx(math.log(2), abs=1e-6)
    # unknown entries are left out of the mean: only (1, 1) is known besides row 0 → (3 + 1 + 1) log 2 / 3
    t2 = torch.tensor([[1, 0], [0, 255]], dtype=torch.uint8)
    assert weighted_bce(lg, t2, torch.tensor([3.0, 1.0])).item() == pytest.approx(5 / 3 * math.log(2), abs=1e-6)


def test_class_pos_weights_inverse_frequency():
    labels = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 255, 0]], dtype=torch.uint8)
    w = class_pos_weights(labels, max_weight=50.0)
    # class 0: 1 positive, 3 negatives → 3; class 1: 1 positive, 2 known negatives → 2; class 2: none → cap
    assert w.tolist() == pytest.approx([3.0, 2.0, 50.0])


def test_info_nce_two_pairs_by_hand():
    # z1 = z2 = [e1, e2], τ = 0.1: each anchor sees its positive at cos 1 and two negatives at cos 0:
    #   −log(e^10 / (e^10 + 2)) = log(1 + 2e^−10) for all four anchors.
    e = torch.eye(2)
    assert info_nce(e, e, tau=0.1).item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-7)
    # Swapped: z1 = [e1, e2], z2 = [e2, e1], τ = 1: positive at cos 0, negatives at cos 0 and cos 1:
    #   −log(1 / (1 + 1 + e)) = log(2 + e); lengths do not matter (cosine similarity).
    assert info_nce(e * 3, e.flip(0) * 0.5, tau=1.0).item() == pytest.approx(math.log(2 + math.e), abs=1e-6)


def test_info_nce_matches_eq6_loop_and_ranks_alignment():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(10):
        j = (i + 5) % 10
        den = sum(math.exp(float(z[i] @ z[k]) / 0.1) for k in range(10) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / 0.1) / den)
    assert info_nce(z1, z2, 0.1).item() == pytest.approx(total / 10, rel=1e-5)
    # identical positives with orthogonal negatives beat random embeddings
    eye = torch.eye(4)
    assert info_nce(eye, eye, 0.1) < info_nce(z1[:4], z2[:4], 0.1)
    with pytest.raises(ValueError):
        info_nce(z1, z2[:3])
