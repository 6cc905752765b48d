"""The contrastive pretexts' view transforms T_G and T_L (§2.6.1.2-3), batched on the device:
their geometric parts (affine + random resized crop) compose into one warp (`affine`), then
contrast, brightness and Gaussian blur are applied per sample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ichbench.transforms.affine import (_as_batch, _bernoulli, _uniform, affine_theta, compose_theta,
                                        sample_affine_params, warp)

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
