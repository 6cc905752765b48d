"""Data augmentation, batched on the training device.

The fine-tuning augmentation of §2.3.2 — translate ±10 %, rotate ±15°, scale 0.9–1.1, horizontal
flip 50 % — is one affine map per sample. We build the B maps as one (B, 2, 3) tensor and resample
the whole batch with one sampling grid (images bilinear, masks nearest) on whatever device the
batch lives on, instead of transforming image by image in DataLoader workers.
The naive per-image version (scipy, one image at a time) lives in `ichbench/testing/reference_augment.py`:
it is only the benchmark's baseline and a cross-check in the tests.

Conventions (shared by both implementations, so they agree to float precision):
- Images are (B, C, H, W) float; any C, so a brain mask or other map stacked as a channel moves
  with the image. Masks are (B, Cm, H, W) or (B, H, W), bool/integer/float 0/1.
- Coordinates are pixel-centred (`align_corners=False`); outside the image is 0 (air after the
  [-50, 150] HU window).
- The paper's order: translate (fractions of width/height), then rotate about the centre
  (positive = counter-clockwise as displayed, row 0 on top, like `torch.rot90`), then scale about
  the centre, then flip horizontally.
- Masks are resampled with the same grid as their images, by nearest neighbour, so they stay
  binary and follow exactly the same transform as their image.

"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# parameters and matrices


def _uniform(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=dev, dtype=torch.float64) * (hi - lo) + lo).to(device)


def _bernoulli(n: int, p: float, generator, device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=dev, dtype=torch.float64) < p).to(device)


def sample_affine_params(batch: int, *, translate: float = 0.1, rotate_deg: float = 15.0,
                         scale: tuple[float, float] = (0.9, 1.1), hflip_p: float = 0.5,
                         generator: torch.Generator | None = None, device="cpu") -> dict[str, torch.Tensor]:
    """Draw one transform per sample: tx, ty ∈ U(±translate) (fraction of W, H), angle ∈
    U(±rotate_deg) degrees, scale ∈ U(scale), flip ~ Bernoulli(hflip_p). float64 (B,) tensors."""
    return {
        "tx": _uniform(batch, -translate, translate, generator, device),
        "ty": _uniform(batch, -translate, translate, generator, device),
        "angle": _uniform(batch, -rotate_deg, rotate_deg, generator, device),
        "scale": _uniform(batch, scale[0], scale[1], generator, device),
        "flip": _bernoulli(batch, hflip_p, generator, device),
    }


def _pixel_inverse(params: dict[str, torch.Tensor], height: int, width: int):
    """Inverse map in pixel-centred (x right, y down) pixels: u_in = M @ u_out + b.

    Forward: u' = Flip · s · R(θ) · (u + t). Inverse: u = R(θ)ᵀ · Flip · u' / s − t.
    R(θ) = [[cos, sin], [−sin, cos]] turns the image counter-clockwise on screen (y points down).
    """
    a = torch.deg2rad(params["angle"].double())
    c, s = torch.cos(a), torch.sin(a)
    f = torch.where(params["flip"].bool(), -1.0, 1.0).to(c)
    k = 1.0 / params["scale"].double()
    # Rᵀ = [[c, −s], [s, c]]; right-multiplying by Flip = diag(f, 1) negates the first column.
    m = torch.stack([torch.stack([c * f * k, -s * k], -1), torch.stack([s * f * k, c * k], -1)], -2)
    b = torch.stack([-params["tx"].double() * width, -params["ty"].double() * height], -1)
    return m, b


def affine_theta(params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) float64 `affine_grid` matrices for `params` on an H×W image.

    affine_grid works in normalised coordinates n = D⁻¹u with D = diag(W/2, H/2), so the pixel
    map becomes D⁻¹ M D (which keeps rotations rigid on non-square images) and offset D⁻¹ b.
    """
    m, b = _pixel_inverse(params, height, width)
    d = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64, device=m.device)
    lin = m * d[None, None, :] / d[None, :, None]
    off = b / d
    return torch.cat([lin, off[..., None]], -1)


def compose_theta(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The theta of applying warp `first` then warp `second` (both (B, 2, 3) affine_grid thetas).

    Output pixels sample the intermediate image at second(n), which samples the input at
    first(second(n)): the product first · second in homogeneous coordinates.
    """
    lin = first[..., :2] @ second[..., :2]
    off = (first[..., :2] @ second[..., 2:]).squeeze(-1) + first[..., 2]
    return torch.cat([lin, off[..., None]], -1)


# --------------------------------------------------------------------------------------------
# applying a warp


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, (B, C, H, W), align_corners=False)`, computed by broadcasting.

    Same numbers (pixel centres at (2i + 1)/n − 1). F.affine_grid lowers to a batched
    (H·W × 3) @ (3 × 2) matmul, ~3× slower on CPU; here x and y are written as two contiguous
    planes (B, 2, H, W) and handed over as a (B, H, W, 2) view, which grid_sample reads by stride.
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1); row 0 gives x (column), row 1 gives y (row)
    planes = t[:, :, 0] * xs + (t[:, :, 1] * ys[:, None] + t[:, :, 2])
    return planes.permute(0, 2, 3, 1)


def _as_batch(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")


def warp(images: torch.Tensor, masks: torch.Tensor | None, theta: torch.Tensor):
    """Resample a batch with one sampling grid: images bilinear, masks nearest.

    Nearest keeps masks exactly binary (and label values exact), and on CPU it is ~15 % faster
    than sampling masks bilinearly and thresholding at 0.5 (which costs a concatenation and an
    extra bilinear channel). Returns (images, masks) with the input dtypes; masks keep their shape
    ((B, H, W) or (B, Cm, H, W)).
    """
    _as_batch(images)
    b, c, h, w = images.shape
    if theta.shape != (b, 2, 3):
        raise ValueError(f"theta must be ({b}, 2, 3), got {tuple(theta.shape)}")
    squeeze = False
    if masks is not None:
        if masks.ndim == 3:
            masks, squeeze = masks[:, None], True
        if masks.ndim != 4 or masks.shape[0] != b or masks.shape[-2:] != (h, w):
            raise ValueError(f"masks shape {tuple(masks.shape)} does not match images {tuple(images.shape)}")
    # Sampling coordinates need float32 at least: bf16 would misplace pixels by up to ~1 px at 256².
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    grid = affine_grid(theta.to(device=images.device, dtype=work_dtype), h, w)
    out = F.grid_sample(images.to(work_dtype), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False).to(images.dtype)
    if masks is None:
        return out, None
    out_masks = F.grid_sample(masks.to(work_dtype), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False).to(masks.dtype)
    return out, (out_masks[:, 0] if squeeze else out_masks)


def random_affine(images: torch.Tensor, masks: torch.Tensor | None = None, *, translate: float = 0.1,
                  rotate_deg: float = 15.0, scale: tuple[float, float] = (0.9, 1.1), hflip_p: float = 0.5,
                  generator: torch.Generator | None = None):
    """The fine-tuning augmentation of §2.3.2, one random transform per sample, batched.

    Deterministic for a given `generator` state (its device may differ from the images').
    Returns (images, masks); masks is None when not given.
    """
    _as_batch(images)
    b, _, h, w = images.shape
    params = sample_affine_params(b, translate=translate, rotate_deg=rotate_deg, scale=scale,
                                  hflip_p=hflip_p, generator=generator, device=images.device)
    return warp(images, masks, affine_theta(params, h, w))


def augment_batch(images: torch.Tensor, masks: torch.Tensor | None, aug: dict,
                  generator: torch.Generator | None):
    """`random_affine` with a config's `augment` dict (keys translate, rotate, scale, hflip)."""
    return random_affine(images, masks, translate=float(aug["translate"]), rotate_deg=float(aug["rotate"]),
                         scale=tuple(float(v) for v in aug["scale"]), hflip_p=float(aug["hflip"]),
                         generator=generator)
