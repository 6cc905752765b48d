"""The paper's 2D U-Net (§2.5.1): five encoder blocks (32 channels first, doubling), four decoder
blocks with transposed convolutions and skip connections, blocks of two 3x3 conv + BN + ReLU, a
1x1 output conv. The sigmoid is applied by the losses/metrics, not here (numerically safer).

Inside an encoder block the channel count grows on the *second* convolution, as §2.5.1's example
reads (h×w×32 → h×w×32 → h×w×64) and the authors' UNet.py builds it: conv in → out/2, conv
out/2 → out. With base 32 that is 5.41 M parameters. `encoder_growth="first"` builds the block
ichbench 0.1 used (conv in → out, out → out; 7.76 M), kept only to reproduce old runs. Decoder
blocks halve over their first convolution (h×w×64 → h×w×32 → h×w×32) either way.

Parts are named so transfer is explicit:
  encoder.0 .. encoder.3   the four down-sampling levels (32, 64, 128, 256 channels at base 32)
  bottleneck               the fifth encoder block (512)
  decoder.0 .. decoder.3   decoder levels, deepest first (up-conv + block)
  head                     the 1x1 output convolution
"encoder" as a group means encoder.* plus the bottleneck.

`in_channels` is 1 for the paper's input; 2.5D inputs (`input.*`) give more, and a 1-channel
pretraining reaches such a U-Net through `inflate_first_conv`.
"""

from __future__ import annotations

import torch
from torch import nn


ENCODER_GROWTH = ("second", "first")   # where an encoder block's channels grow; "second" is §2.5.1


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BN + ReLU: cin → mid → cout (mid defaults to cout)."""

    def __init__(self, cin: int, cout: int, mid: int | None = None):
        mid = cout if mid is None else mid
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = ConvBlock(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 32, depth: int = 5,
                 encoder_growth: str = "second"):
        super().__init__()
        if encoder_growth not in ENCODER_GROWTH:
            raise ValueError(f"encoder_growth must be one of {', '.join(ENCODER_GROWTH)}, got {encoder_growth!r}")
        widths = [base * 2 ** i for i in range(depth)]
        self.widths = widths

        def down(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(cin, cout, max(1, cout // 2) if encoder_growth == "second" else cout)

        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoder.append(down(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = down(widths[-2], widths[-1])
        self.decoder = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every encoder level, shallowest first, the bottleneck last."""
        feats = []
        for block in self.encoder:
            x = block(x)
            feats.append(x)
            x = self.pool(x)
        feats.append(self.bottleneck(x))
        return feats

    def decode(self, feats: list[torch.Tensor], levels: int | None = None) -> torch.Tensor:
        """Run the first `levels` decoder levels (all by default); returns the last feature map."""
        x = feats[-1]
        skips = feats[-2::-1]
        for block, skip in list(zip(self.decoder, skips))[: levels if levels is not None else len(self.decoder)]:
            x = block(x, skip)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decode(self.encode(x)))


def unet_for(model_cfg, **kwargs) -> UNet:
    """The U-Net a run's `model` config describes (base channels, depth, encoder growth)."""
    return UNet(base=model_cfg.base_channels, depth=model_cfg.depth,
                encoder_growth=model_cfg.encoder_growth, **kwargs)


def part_names(model: UNet) -> list[str]:
    return ([f"encoder.{i}" for i in range(len(model.encoder))] + ["bottleneck"]
            + [f"decoder.{i}" for i in range(len(model.decoder))] + ["head"])


def expand_parts(model: UNet, parts) -> list[str]:
    """'encoder' -> encoder.* + bottleneck; 'decoder' -> decoder.*; 'all' -> everything."""
    out: list[str] = []
    for p in parts:
        if p == "all":
            out += part_names(model)
        elif p == "encoder":
            out += [f"encoder.{i}" for i in range(len(model.encoder))] + ["bottleneck"]
        elif p == "decoder":
            out += [f"decoder.{i}" for i in range(len(model.decoder))]
        elif p in part_names(model):
            out.append(p)
        else:
            raise ValueError(f"unknown U-Net part {p!r}; parts: {', '.join(part_names(model))}")
    return list(dict.fromkeys(out))


def part_state(model: UNet, parts) -> dict[str, torch.Tensor]:
    """state_dict entries (parameters and BN buffers) belonging to the named parts."""
    prefixes = tuple(p + "." for p in expand_parts(model, parts))
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def transfer_parts(src_state: dict[str, torch.Tensor], dst: UNet, parts) -> list[str]:
    """Copy exactly the named parts from a state dict into dst. Returns the keys copied."""
    prefixes = tuple(p + "." for p in expand_parts(dst, parts))
    own = dst.state_dict()
    copied = []
    for k, v in src_state.items():
        if k.startswith(prefixes):
            if k not in own or own[k].shape != v.shape:
                raise ValueError(f"checkpoint tensor {k} {tuple(v.shape)} does not fit the model")
            own[k].copy_(v)
            copied.append(k)
    missing = [k for k in own if k.startswith(prefixes) and k not in src_state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensors of the requested parts, e.g. {missing[0]}")
    return copied


FIRST_CONV = "encoder.0.0.weight"   # the only tensor whose shape depends on the input channels


def first_conv_channels(state: dict) -> int | None:
    """Input channels of a state dict's first convolution (None: the state lacks it)."""
    w = state.get(FIRST_CONV)
    return None if w is None else int(w.shape[1])


def inflate_first_conv(state: dict, channels: int) -> dict:
    """`state` with its first convolution, trained on one input channel, spread over `channels`:
    the filter replicated on every channel and divided by their number, as I3D inflates 2D filters
    to 3D. On an input whose channels all equal one image the inflated network gives exactly the
    1-channel network's output for that image; fine-tuning then learns to tell the channels apart."""
    have = first_conv_channels(state)
    if have is None or have == channels:
        return state
    if have != 1:
        raise ValueError(f"the first convolution takes {have} input channels; only a 1-channel one inflates "
                         f"to {channels}")
    return {**state, FIRST_CONV: state[FIRST_CONV].repeat(1, channels, 1, 1) / channels}
