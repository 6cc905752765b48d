"""Local contrastive's torch side: the frozen-encoder partial U-Net with its 1x1 projector, the
region pairs followed through the two views' warps, and eq. 7 batched over images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ichbench.methods.nets.heads import conv1x1_projector, scaled_widths

DECODER_LEVELS = 3   # the paper's "three decoding blocks"; `transfers` names exactly these
FILL = -1e4          # stands for -inf in masked logits: finite, so masked rows give no NaN gradients


class LocalContrastiveModel(nn.Module):
    def __init__(self, unet, proj_dims):
        super().__init__()
        self.unet = unet
        self.frozen = nn.ModuleList([*unet.encoder, unet.bottleneck])
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        in_width = unet.widths[len(unet.widths) - 1 - DECODER_LEVELS]
        self.proj_dims = scaled_widths(proj_dims, in_width)
        self.projector = conv1x1_projector(self.proj_dims)

    def train(self, mode: bool = True):
        # A frozen encoder keeps its BatchNorm statistics too: eval mode whatever the engine asks.
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.unet.encode(images)
        return self.projector(self.unet.decode(feats, levels=DECODER_LEVELS))


def _pixel_centres(n: int, device) -> torch.Tensor:
    """Normalised coordinates (align_corners=False) of the n pixel centres along one axis."""
    return (2 * torch.arange(n, device=device, dtype=torch.float64) + 1) / n - 1


def _apply(theta: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """theta (B, 2, 3) applied to points (B, P, 2) in (x, y) order."""
    return pts @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]


def _invert(theta: torch.Tensor) -> torch.Tensor:
    inv = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([inv, -(inv @ theta[:, :, 2:])], -1)


def region_pairs(f1: torch.Tensor, f2: torch.Tensor, theta1: torch.Tensor, theta2: torch.Tensor,
                 n_regions: int, region: int, generator: torch.Generator):
    """Draw `n_regions` non-overlapping region×region cells of f1 (B, C, h, w) per image and the
    matching places of f2. Returns (r1, r2, valid): (B, N, C·region²) vectors and a (B, N) bool
    mask, False where an image had fewer than `n_regions` cells visible in both views."""
    b, c, h, w = f1.shape
    ny, nx = h // region, w // region
    if ny * nx < n_regions:
        raise ValueError(f"local contrastive: {n_regions} regions of {region}x{region} do not fit "
                         f"in a {h}x{w} feature map")
    dev = f1.device
    ys, xs = _pixel_centres(h, dev), _pixel_centres(w, dev)
    d = torch.arange(region, device=dev)
    rows = (torch.arange(ny, device=dev) * region)[:, None, None, None] + d[:, None]   # (ny,1,K,1)
    cols = (torch.arange(nx, device=dev) * region)[None, :, None, None] + d[None, :]   # (1,nx,1,K)
    rows, cols = torch.broadcast_tensors(rows, cols)                                   # (ny,nx,K,K)
    cells = torch.stack([xs[cols], ys[rows]], -1).reshape(ny * nx, region * region, 2)  # (cells, K², 2)

    pts1 = cells.reshape(1, -1, 2).expand(b, -1, -1)
    to_view2 = _apply(_invert(theta2.double()), _apply(theta1.double(), pts1))
    # inside the span of f2's pixel centres, so bilinear sampling never reads the zero padding
    lim_x, lim_y = 1 - 1 / w, 1 - 1 / h
    inside = (to_view2[..., 0].abs() <= lim_x) & (to_view2[..., 1].abs() <= lim_y)
    cell_ok = inside.view(b, ny * nx, region * region).all(-1)                          # (B, cells)

    gen_dev = generator.device if generator is not None else dev
    score = torch.rand(b, ny * nx, generator=generator, device=gen_dev).to(dev)
    pick = (score + cell_ok.to(score.dtype)).topk(n_regions, dim=1).indices            # visible cells first
    valid = cell_ok.gather(1, pick)

    def sample(f, pts):
        idx = pick[:, :, None, None].expand(-1, -1, region * region, 2)
        chosen = pts.view(b, ny * nx, region * region, 2).gather(1, idx)              # (B, N, K², 2)
        grid = chosen.reshape(b, n_regions * region * region, 1, 2).to(f.dtype)
        vals = F.grid_sample(f, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return vals.view(b, c, n_regions, region * region).permute(0, 2, 1, 3).reshape(b, n_regions, -1)

    return sample(f1, pts1), sample(f2, to_view2), valid


def region_info_nce(r1: torch.Tensor, r2: torch.Tensor, valid: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 7 for every image of the batch at once: `info_nce` over each image's 2N regions.

    r1, r2: (B, N, D), valid: (B, N). Region j of view 1 has region j of view 2 as positive and the
    other valid regions of both views of the same image as negatives. Mean over valid anchors.
    """
    b, n, _ = r1.shape
    z = F.normalize(torch.cat([r1, r2], 1).float(), dim=2)                 # (B, 2N, D)
    sim = z @ z.transpose(1, 2) / tau
    ok = torch.cat([valid, valid], 1)
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye[None] | ~ok[:, None, :], FILL)
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    per_anchor = torch.logsumexp(sim, dim=2) - sim.gather(2, positive.expand(b, -1)[..., None]).squeeze(2)
    weight = ok.float()
    return (per_anchor * weight).sum() / weight.sum().clamp(min=1.0)
