"""A trained pair of ICM U-Nets, applied to HU slices: window, predict, threshold, unite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ichbench.config import ICM_DEPTH
from ichbench.errors import IchbenchError
from ichbench.models.unet import UNet
from ichbench.preprocess.window import window
from ichbench.train import checkpoint as ckpt

ICM_NAME = "icm.pt"
WINDOWS = ("tissue", "bone")
BATCH = 64


def icm_unet(base_channels: int) -> UNet:
    return UNet(base=base_channels, depth=ICM_DEPTH)


def windowed(hu: torch.Tensor, win) -> torch.Tensor:
    """(B, S, S) HU -> (B, 1, S, S) in [0, 1] for one of the ICM windows."""
    return window(hu.float(), float(win[0]), float(win[1]))[:, None]


def resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(B, C, H, W) to size x size (bilinear for images, nearest for masks)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    kw = {"align_corners": False, "antialias": x.shape[-1] > size} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kw)


class IcmUNets:
    """The tissue- and bone-window U-Nets of a finished `ichbench icm train`."""

    def __init__(self, payload: dict, device="cpu"):
        self.payload = payload
        self.key = payload["model_key"]
        self.image_size = int(payload["image_size"])
        self.windows = {w: tuple(payload["windows"][w]) for w in WINDOWS}
        self.device = torch.device(device)
        self.nets = {}
        for w in WINDOWS:
            net = icm_unet(int(payload["base_channels"]))
            net.load_state_dict(payload[w])
            self.nets[w] = net.to(self.device).eval()

    @property
    def metrics(self) -> dict:
        return dict(self.payload.get("metrics", {}))

    @torch.no_grad()
    def probabilities(self, hu) -> dict[str, torch.Tensor]:
        """(S, H, W) HU -> {window: (S, H, W) probability} at the input's size."""
        hu = torch.as_tensor(np.asarray(hu, dtype=np.float32))
        h = hu.shape[-1]
        out = {w: [] for w in WINDOWS}
        for chunk in hu.split(BATCH):
            chunk = chunk.to(self.device)
            for w, net in self.nets.items():
                x = resize(windowed(chunk, self.windows[w]), self.image_size, "bilinear")
                p = torch.sigmoid(net(x).float())
                out[w].append(resize(p, h, "bilinear")[:, 0].cpu())
        return {w: torch.cat(v) if v else torch.zeros((0, h, h)) for w, v in out.items()}

    def __call__(self, hu, threshold: float = 0.5) -> np.ndarray:
        """(S, H, W) HU -> (S, H, W) bool: the union of the two windows' masks (§2.3.3)."""
        p = self.probabilities(hu)
        return ((p["tissue"] > threshold) | (p["bone"] > threshold)).numpy()


def load_icm(path: Path, device="cpu") -> IcmUNets:
    payload = ckpt.load(path)
    if payload.get("kind") != "icm" or any(w not in payload for w in WINDOWS):
        raise IchbenchError(f"{path}: not an ICM checkpoint (made by `ichbench icm train`)")
    return IcmUNets(payload, device)
