"""Batched on-device augmentation: known transforms, mask alignment, determinism, contrastive views."""

import numpy as np
import pytest
import torch

from ichbench import transforms as A
from ichbench.testing import reference_augment as R

NO_AUG = dict(translate=0.0, rotate_deg=0.0, scale=(1.0, 1.0), hflip_p=0.0)


def params(b=1, **kw):
    p = dict(tx=0.0, ty=0.0, angle=0.0, scale=1.0, flip=0.0)
    p.update(kw)
    return {k: torch.full((b,), float(v), dtype=torch.float64) for k, v in p.items()}


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def square_batch(b=4, size=32):
    """Image channel 0 is the mask (a bright square), channel 1 an unrelated ramp (an extra map)."""
    masks = torch.zeros(b, 1, size, size, dtype=torch.bool)
    for i in range(b):
        r, c = 6 + 2 * i, 8 + i
        masks[i, 0, r:r + 8, c:c + 10] = True
    ramp = torch.linspace(0, 1, size).expand(b, 1, size, size)
    return torch.cat([masks.float(), ramp], 1), masks


def test_identity_parameters_return_the_input():
    x, m = square_batch()
    y, ym = A.random_affine(x, m, **NO_AUG, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    assert torch.equal(ym, m) and ym.dtype == torch.bool


def test_hflip_flips_exactly():
    x, m = square_batch()
    y, ym = A.random_affine(x, m, **dict(NO_AUG, hflip_p=1.0))
    torch.testing.assert_close(y, x.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(ym, m.flip(-1))


def test_rotation_by_90_degrees_is_rot90_counter_clockwise():
    x = rand(2, 1, 8, 8)
    y, _ = A.warp(x, None, A.affine_theta(params(2, angle=90), 8, 8))
    torch.testing.assert_close(y, torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)


def test_translation_in_fractions_of_width_and_height_non_square():
    # W = 8, tx = 0.25 → 2 px right; H = 4, ty = 0.25 → 1 px down; vacated pixels are 0.
    x = rand(1, 1, 4, 8)
    y, _ = A.warp(x, None, A.affine_theta(params(tx=0.25, ty=0.25), 4, 8))
    torch.testing.assert_close(y[..., 1:, 2:], x[..., :-1, :-2], atol=1e-5, rtol=0)
    assert y[..., 0, :].abs().max() == 0 and y[..., :, :2].abs().max() == 0


def test_paper_order_translate_then_rotate():
    # translate 2 px right, then rotate 90° ccw: the shift ends up pointing up.
    x = rand(1, 1, 8, 8)
    shifted = torch.zeros_like(x)
    shifted[..., 2:] = x[..., :-2]
    y, _ = A.warp(x, None, A.affine_theta(params(tx=0.25, angle=90), 8, 8))
    torch.testing.assert_close(y, torch.rot90(shifted, 1, (-2, -1)), atol=1e-5, rtol=0)


def test_compose_theta_equals_sequential_warps():
    x = rand(1, 2, 8, 8)
    flip, rot = A.affine_theta(params(flip=1), 8, 8), A.affine_theta(params(angle=90), 8, 8)
    once, _ = A.warp(x, None, A.compose_theta(flip, rot))
    twice, _ = A.warp(A.warp(x, None, flip)[0], None, rot)
    torch.testing.assert_close(once, twice, atol=1e-5, rtol=0)


def test_batched_matches_per_sample_scipy_reference():
    x = rand(3, 2, 12, 10)
    p = dict(tx=[0.07, -0.1, 0.0], ty=[-0.05, 0.02, 0.1], angle=[12.0, -15.0, 3.0], scale=[1.07, 0.9, 1.0],
             flip=[1.0, 0.0, 1.0])
    y, _ = A.warp(x, None, A.affine_theta({k: torch.tensor(v, dtype=torch.float64) for k, v in p.items()}, 12, 10))
    for i in range(3):
        ref = R.affine_one_cpu(x[i].numpy(), **{k: v[i] for k, v in p.items()}, order=1)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5)


def test_masks_stay_binary_and_move_with_their_image():
    x, m = square_batch(b=6)
    y, ym = A.random_affine(x, m, generator=torch.Generator().manual_seed(3))
    assert ym.dtype == torch.bool and ym.shape == m.shape
    # Channel 0 of the image is the mask as float. Bilinear ≥ 0.5 and nearest agree except where
    # the sampling point falls near a square's corner, so at most a few boundary pixels differ...
    disagree = ((y[:, :1] >= 0.5) != ym).sum((1, 2, 3))
    assert (disagree <= 4).all(), disagree
    # ...and the mask's centre of mass sits on the bright square's (within half a pixel).
    rows = torch.arange(32.0)[:, None]
    for i in range(6):
        img_c = (y[i, 0] * rows).sum() / y[i, 0].sum()
        mask_c = (ym[i, 0] * rows).sum() / ym[i, 0].sum()
        assert abs(img_c - mask_c) < 0.5
    assert not torch.equal(ym, m)  # the squares did move
    assert (ym.sum((1, 2, 3)) > 40).all()  # and survived (80 px squares, scale ≥ 0.9)
    # uint8 masks given as (B, H, W) keep their dtype and shape
    _, m8 = A.random_affine(x, m[:, 0].to(torch.uint8), generator=torch.Generator().manual_seed(3))
    assert m8.dtype == torch.uint8 and m8.shape == m[:, 0].shape and torch.equal(m8.bool(), ym[:, 0])
    assert set(m8.unique().tolist()) <= {0, 1}
    # label masks keep their values exactly (nearest never blends labels)
    labels = (m[:, 0].to(torch.uint8) * 3)
    _, l3 = A.random_affine(x, labels, generator=torch.Generator().manual_seed(3))
    assert set(l3.unique().tolist()) <= {0, 3} and torch.equal(l3 == 3, ym[:, 0])


def test_deterministic_under_a_seeded_generator():
    x, m = square_batch()
    a = A.random_affine(x, m, generator=torch.Generator().manual_seed(7))
    b = A.random_affine(x, m, generator=torch.Generator().manual_seed(7))
    c = A.random_affine(x, m, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mixed_batch_applies_each_sample_its_own_transform():
    x = rand(5, 1, 16, 16)
    p = A.sample_affine_params(5, generator=torch.Generator().manual_seed(11))
    y, _ = A.random_affine(x, generator=torch.Generator().manual_seed(11))
    assert len(set(p["angle"].tolist())) == 5
    for i in range(5):
        one, _ = A.warp(x[i:i + 1], None, A.affine_theta({k: v[i:i + 1] for k, v in p.items()}, 16, 16))
        torch.testing.assert_close(y[i:i + 1], one, atol=1e-6, rtol=0)


def test_sampled_parameters_stay_in_the_paper_ranges():
    p = A.sample_affine_params(4000, generator=torch.Generator().manual_seed(0))
    assert p["tx"].abs().max() <= 0.1 and p["ty"].abs().max() <= 0.1
    assert p["angle"].abs().max() <= 15 and p["angle"].abs().max() > 14
    assert p["scale"].min() >= 0.9 and p["scale"].max() <= 1.1
    assert 0.45 < p["flip"].double().mean() < 0.55


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="B, C, H, W"):
        A.random_affine(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="masks shape"):
        A.random_affine(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4))


def test_per_sample_cpu_reference_runs_and_keeps_masks_binary():
    x, m = square_batch(b=3)
    y, ym = R.random_affine_per_sample_cpu(x.numpy(), m.numpy(), rng=np.random.default_rng(0))
    assert y.shape == x.shape and ym.dtype == bool and ym.shape == m.shape
    y0, _ = R.random_affine_per_sample_cpu(x.numpy(), None, **NO_AUG)
    np.testing.assert_allclose(y0, x.numpy(), atol=1e-6)


def test_gaussian_blur_matches_scipy_and_zero_sigma_is_identity():
    from scipy import ndimage
    x = rand(2, 1, 16, 16)
    y = A.gaussian_blur(x, torch.tensor([1.5, 0.0]), radius=4)
    ref = ndimage.gaussian_filter(x[0, 0].numpy().astype(np.float64), 1.5, mode="mirror", truncate=4 / 1.5)
    np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=1e-5)
    torch.testing.assert_close(y[1], x[1])


def test_contrast_and_brightness_by_hand():
    x = torch.tensor([0.2, 0.4, 0.6, 0.6]).reshape(1, 1, 2, 2)  # mean 0.45
    torch.testing.assert_close(A.adjust_contrast(x, torch.tensor([0.0])), torch.full_like(x, 0.45))
    torch.testing.assert_close(A.adjust_contrast(x, torch.tensor([2.0])),
                               torch.tensor([0.0, 0.35, 0.75, 0.75]).reshape(1, 1, 2, 2))
    torch.testing.assert_close(A.adjust_brightness(x, torch.tensor([2.0])),
                               torch.tensor([0.4, 0.8, 1.0, 1.0]).reshape(1, 1, 2, 2))
    assert torch.equal(A.random_contrast(x, p=0.0), x) and torch.equal(A.random_brightness(x, p=0.0), x)


def test_full_area_crop_is_identity():
    x = rand(2, 1, 8, 8)
    y, _ = A.random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    y, _ = A.random_resized_crop(x, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(y, x)


def test_contrastive_views_are_deterministic_and_in_range():
    x = rand(4, 1, 32, 32)
    v1, th = A.contrastive_view(x, A.T_GLOBAL, generator=torch.Generator().manual_seed(5), return_theta=True)
    v2 = A.contrastive_view(x, A.T_GLOBAL, generator=torch.Generator().manual_seed(5))
    v3 = A.contrastive_view(x, A.T_LOCAL, generator=torch.Generator().manual_seed(6))
    assert torch.equal(v1, v2) and th.shape == (4, 2, 3)
    assert v1.shape == x.shape and v1.min() >= 0 and v1.max() <= 1
    assert not torch.allclose(v1, v3)
    assert A.T_LOCAL.hflip_p == 0 and A.T_GLOBAL.rotate_deg == 90 and A.T_LOCAL.rotate_deg == 45


def test_broadcast_grid_equals_torch_affine_grid():
    th = A.affine_theta(A.sample_affine_params(3, generator=torch.Generator().manual_seed(2)), 6, 9).float()
    ref = torch.nn.functional.affine_grid(th, [3, 1, 6, 9], align_corners=False)
    torch.testing.assert_close(A.affine_grid(th, 6, 9), ref, atol=1e-6, rtol=0)
