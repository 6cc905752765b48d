"""Data augmentation, batched on the training device.

The fine-tuning augmentation of §2.3.2 — translate ±10 %, rotate ±15°, scale 0.9–1.1, horizontal
flip 50 % — is one affine map per sample. We build the B maps as one (B, 2, 3) tensor and resample
the whole batch with one sampling grid (images bilinear, masks nearest) on whatever device the
batch lives on, instead of transforming image by image in DataLoader workers.
`random_affine_per_sample_cpu` is that naive per-image version (scipy, one image at a time); it
exists only as the benchmark's reference and as a cross-check in the tests.

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

The contrastive pretexts' view transforms T_G and T_L (§2.6.1.2–3) are here too: their geometric
parts (affine + random resized crop) compose into one warp, then contrast, brightness and
Gaussian blur are applied per sample, all batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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


# --------------------------------------------------------------------------------------------
# the per-sample CPU reference (benchmark baseline)


def _scipy_matrix(tx, ty, angle, scale, flip, height, width):
    """`_pixel_inverse` for one sample in plain floats (no per-image tensor overhead in the baseline)."""
    a = math.radians(angle)
    c, s, f, k = math.cos(a), math.sin(a), (-1.0 if flip else 1.0), 1.0 / scale
    m = np.array([[c * f * k, -s * k], [s * f * k, c * k]])
    b = np.array([-tx * width, -ty * height])
    # scipy indexes (row, col) = (y, x): swap axes, and move the origin from the centre to pixel 0.
    m_rc = m[::-1, ::-1].copy()
    b_rc = b[::-1].copy()
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    return m_rc, centre - m_rc @ centre + b_rc


def affine_one_cpu(image: np.ndarray, *, tx: float, ty: float, angle: float, scale: float, flip: bool,
                   order: int = 1) -> np.ndarray:
    """Transform one (C, H, W) or (H, W) array with scipy.ndimage, channel by channel."""
    from scipy import ndimage

    img = np.asarray(image)
    planes = img[None] if img.ndim == 2 else img
    h, w = planes.shape[-2:]
    m, off = _scipy_matrix(tx, ty, angle, scale, flip, h, w)
    out = np.stack([ndimage.affine_transform(pl.astype(np.float32, copy=False), m, off, order=order,
                                             mode="grid-constant", cval=0.0) for pl in planes])
    return out[0] if img.ndim == 2 else out


def random_affine_per_sample_cpu(images: np.ndarray, masks: np.ndarray | None = None, *, translate: float = 0.1,
                                 rotate_deg: float = 15.0, scale: tuple[float, float] = (0.9, 1.1),
                                 hflip_p: float = 0.5, rng: np.random.Generator | None = None):
    """What a naive DataLoader transform does: draw and apply one transform per image on the CPU.

    images (B, C, H, W) float, masks (B, Cm, H, W) or (B, H, W) or None; images bilinear, masks
    nearest. Only the benchmark's baseline; training uses `random_affine`.
    """
    rng = rng if rng is not None else np.random.default_rng()
    images = np.asarray(images)
    out_i = np.empty(images.shape, dtype=np.float32)
    out_m = None if masks is None else np.empty_like(np.asarray(masks))
    for i in range(images.shape[0]):
        prm = dict(tx=rng.uniform(-translate, translate), ty=rng.uniform(-translate, translate),
                   angle=rng.uniform(-rotate_deg, rotate_deg), scale=rng.uniform(*scale),
                   flip=bool(rng.random() < hflip_p))
        out_i[i] = affine_one_cpu(images[i], **prm, order=1)
        if masks is not None:
            out_m[i] = affine_one_cpu(masks[i], **prm, order=0) >= 0.5
    return out_i, out_m


# --------------------------------------------------------------------------------------------
# contrastive views (§2.6.1.2 T_G, §2.6.1.3 T_L)


def random_resized_crop_theta(batch: int, height: int, width: int, *, scale: tuple[float, float] = (0.5, 1.0),
                              ratio: tuple[float, float] = (3 / 4, 4 / 3),
                              generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(B, 2, 3) thetas cropping a random box and resizing it to the full image.

    The box covers a fraction U(scale) of the area with aspect ratio log-uniform in `ratio`
    (torchvision's parameterisation), clipped to the image, at a uniform position inside it.
    """
    area = _uniform(batch, scale[0], scale[1], generator, device)
    logr = _uniform(batch, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    r = torch.exp(logr) * (height / width)  # aspect in pixels, expressed on normalised axes
    bw = torch.sqrt(area * r).clamp(max=1.0)
    bh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (_uniform(batch, -1.0, 1.0, generator, device)) * (1.0 - bw)
    cy = (_uniform(batch, -1.0, 1.0, generator, device)) * (1.0 - bh)
    zero = torch.zeros_like(bw)
    return torch.stack([torch.stack([bw, zero, cx], -1), torch.stack([zero, bh, cy], -1)], -2)


def random_resized_crop(images: torch.Tensor, masks: torch.Tensor | None = None, *,
                        scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None):
    """Random crop and resize back to H×W, batched (one grid_sample). Returns (images, masks)."""
    _as_batch(images)
    b, _, h, w = images.shape
    return warp(images, masks, random_resized_crop_theta(b, h, w, scale=scale, ratio=ratio,
                                                         generator=generator, device=images.device))


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply each sample by its factor (B,), clamped to [0, 1] (torchvision's brightness)."""
    return (images * factor.to(images)[:, None, None, None]).clamp(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each sample's deviation from its own mean by its factor (B,), clamped to [0, 1]."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * factor.to(images)[:, None, None, None] + mean).clamp(0.0, 1.0)


def _jitter(images, adjust, strength, p, generator):
    b = images.shape[0]
    f = _uniform(b, 1.0 - strength, 1.0 + strength, generator, images.device)
    on = _bernoulli(b, p, generator, images.device)[:, None, None, None]
    # Unselected samples are passed through untouched (bit for bit), not multiplied by 1.
    return torch.where(on, adjust(images, f), images)


def random_brightness(images: torch.Tensor, *, strength: float = 0.4, p: float = 0.5,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per sample, brightness × U(1 ± strength)."""
    _as_batch(images)
    return _jitter(images, adjust_brightness, strength, p, generator)


def random_contrast(images: torch.Tensor, *, strength: float = 0.4, p: float = 0.5,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per sample, contrast × U(1 ± strength)."""
    _as_batch(images)
    return _jitter(images, adjust_contrast, strength, p, generator)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one σ per sample (B,), kernel 2·radius+1, mirrored borders.

    All B×C planes go through one grouped convolution per axis. σ ≤ 0 leaves a sample unchanged.
    """
    _as_batch(images)
    b, c, h, w = images.shape
    if radius >= min(h, w):
        raise ValueError(f"blur radius {radius} too large for a {h}x{w} image")
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    sig = sigma.to(device=images.device, dtype=torch.float32)[:, None]
    k = torch.exp(-0.5 * (x[None] / sig.clamp(min=1e-6)) ** 2)
    delta = (x == 0).float()[None].expand_as(k)
    k = torch.where(sig > 0, k, delta)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(images.dtype)  # (B*C, K)
    planes = images.reshape(1, b * c, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    return planes.reshape(b, c, h, w)


def random_gaussian_blur(images: torch.Tensor, *, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per sample, blur with σ ∈ U(sigma) (SimCLR's range; kernel ±3σ_max)."""
    _as_batch(images)
    b = images.shape[0]
    s = _uniform(b, sigma[0], sigma[1], generator, images.device)
    on = _bernoulli(b, p, generator, images.device)
    return gaussian_blur(images, torch.where(on, s, torch.zeros_like(s)), radius=int(math.ceil(3 * sigma[1])))


@dataclass(frozen=True)
class ViewTransform:
    """A contrastive view transform (the paper's T_G or T_L), in the paper's order.

    Geometric: translate, rotate, scale, horizontal flip, random resized crop (one warp);
    then contrast, brightness and blur, each with probability 0.5. The paper gives the geometric
    ranges; jitter strengths, blur σ and crop area are not given, so SimCLR's values are used
    (colour strength 0.5 → ±0.4, σ ∈ [0.1, 2]) with a crop of 50–100 % of the area, since
    hemorrhages are small and a SimCLR-style 8 % crop would mostly show no brain at all.
    """
    translate: float
    rotate_deg: float
    scale: tuple[float, float] = (0.8, 1.2)
    hflip_p: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    contrast: float = 0.4
    brightness: float = 0.4
    jitter_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5


# §2.6.1.2: translation ±15 %, rotation ±90°, scaling 0.8–1.2, flip 50 %.
T_GLOBAL = ViewTransform(translate=0.15, rotate_deg=90.0)
# §2.6.1.3: as T_G with rotation ±45° and no flip (flips "strongly impair the localisation").
# The paper prints the translation range as "[-15%, 0.15%]"; we read it as ±15 % like T_G.
T_LOCAL = ViewTransform(translate=0.15, rotate_deg=45.0, hflip_p=0.0)


def contrastive_view(images: torch.Tensor, spec: ViewTransform = T_GLOBAL, *,
                     generator: torch.Generator | None = None, return_theta: bool = False):
    """One random view of each image under `spec`, batched on the images' device.

    With `return_theta`, also returns the (B, 2, 3) theta mapping output to input coordinates, so
    a local pretext can find where a region of one view lies in the other.
    """
    _as_batch(images)
    b, _, h, w = images.shape
    params = sample_affine_params(b, translate=spec.translate, rotate_deg=spec.rotate_deg, scale=spec.scale,
                                  hflip_p=spec.hflip_p, generator=generator, device=images.device)
    crop = random_resized_crop_theta(b, h, w, scale=spec.crop_scale, ratio=spec.crop_ratio,
                                     generator=generator, device=images.device)
    theta = compose_theta(affine_theta(params, h, w), crop)
    out, _ = warp(images, None, theta)
    out = random_contrast(out, strength=spec.contrast, p=spec.jitter_p, generator=generator)
    out = random_brightness(out, strength=spec.brightness, p=spec.jitter_p, generator=generator)
    out = random_gaussian_blur(out, sigma=spec.blur_sigma, p=spec.blur_p, generator=generator)
    return (out, theta) if return_theta else out
