"""The pretexts' building blocks in ichbench/methods/nets: context restoration's patch swaps
(§2.6.1.1) and local contrastive's corresponding regions and per-image InfoNCE (§2.6.1.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ichbench.losses import info_nce
from ichbench.methods.nets.local import region_info_nce, region_pairs
from ichbench.methods.nets.restoration import swap_patches
from ichbench.transforms import affine_theta, compose_theta, random_resized_crop_theta, sample_affine_params, warp


# -- context restoration corruption -------------------------------------------------------------

def test_swap_patches_swaps_exactly_n_disjoint_pairs():
    n, p, size = 20, 5, 64
    # every pixel distinct, so each moved pixel reveals where it came from
    x = torch.arange(3 * size * size, dtype=torch.float64).view(3, 1, size, size)
    y = swap_patches(x, n, p, torch.Generator().manual_seed(7))
    for b in range(3):
        src = (y[b, 0] - x[b, 0, 0, 0]).long()
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        dr, dc = src // size - rows, src % size - cols          # displacement of each pixel
        changed = (dr != 0) | (dc != 0)
        assert int(changed.sum()) == 2 * n * p * p
        assert torch.equal(y[b].flatten().sort().values, x[b].flatten().sort().values)  # a permutation
        # the lattice origin of this image: changed patches start on it
        r0, c0 = int(rows[changed].min()) % p, int(cols[changed].min()) % p
        patches = {}
        for top in range(r0, size - p + 1, p):
            for left in range(c0, size - p + 1, p):
                cell = (slice(top, top + p), slice(left, left + p))
                if changed[cell].any():
                    assert changed[cell].all()                    # whole patches move ...
                    d = (int(dr[cell][0, 0]), int(dc[cell][0, 0]))
                    assert (dr[cell] == d[0]).all() and (dc[cell] == d[1]).all()   # ... rigidly
                    patches[(top, left)] = d
        assert len(patches) == 2 * n
        for (top, left), (a, c) in patches.items():              # and in swapped pairs
            assert patches[(top + a, left + c)] == (-a, -c)


def test_swap_patches_is_reproducible_under_a_seed():
    x = torch.rand(4, 1, 64, 64)
    a = swap_patches(x, 20, 5, torch.Generator().manual_seed(1))
    b = swap_patches(x, 20, 5, torch.Generator().manual_seed(1))
    c = swap_patches(x, 20, 5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])       # each image draws its own patches


def test_swap_patches_refuses_too_many_patches():
    with pytest.raises(ValueError, match="do not fit"):
        swap_patches(torch.rand(1, 1, 32, 32), 20, 5, torch.Generator())


# -- local contrastive -------------------------------------------------------------------------

def smooth_field(b: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, size // 8, size // 8, generator=g)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)


def test_regions_follow_the_geometric_transforms():
    b, size = 4, 64
    x = smooth_field(b, size, 0)
    g = torch.Generator().manual_seed(3)
    thetas = []
    for _ in range(2):
        params = sample_affine_params(b, translate=0.15, rotate_deg=45, scale=(0.8, 1.2), hflip_p=0.0, generator=g)
        crop = random_resized_crop_theta(b, size, size, scale=(0.5, 1.0), generator=g)
        thetas.append(compose_theta(affine_theta(params, size, size), crop))
    v1, _ = warp(x, None, thetas[0])
    v2, _ = warp(x, None, thetas[1])
    r1, r2, valid = region_pairs(v1, v2, thetas[0], thetas[1], 20, 3, torch.Generator().manual_seed(0))
    assert r1.shape == (b, 20, 9) and valid.shape == (b, 20)
    assert valid.float().mean() > 0.5
    matched = (r1 - r2).abs().mean(-1)[valid]
    shuffled = (r1 - r2.roll(1, dims=1)).abs().mean(-1)[valid & valid.roll(1, dims=1)]
    assert matched.mean() < 0.2 * shuffled.mean()
    # with identical views the regions coincide exactly
    s1, s2, ok = region_pairs(v1, v1, thetas[0], thetas[0], 20, 3, torch.Generator().manual_seed(0))
    assert ok.all() and torch.allclose(s1, s2, atol=1e-5)


def test_region_info_nce_is_info_nce_per_image():
    g = torch.Generator().manual_seed(0)
    r1, r2 = torch.randn(3, 6, 10, generator=g), torch.randn(3, 6, 10, generator=g)
    valid = torch.ones(3, 6, dtype=torch.bool)
    expected = torch.stack([info_nce(r1[i], r2[i], tau=0.1) for i in range(3)]).mean()
    assert torch.allclose(region_info_nce(r1, r2, valid, 0.1), expected, atol=1e-5)
    # regions not visible in both views drop out entirely
    valid[0, 4:] = False
    got = region_info_nce(r1[:1], r2[:1], valid[:1], 0.1)
    assert torch.allclose(got, info_nce(r1[0, :4], r2[0, :4], tau=0.1), atol=1e-5)
