"""A method plugin: rotation prediction (Gidaris et al. 2018), a small but real pretext, and its test.

`string.Template`s: `$name` placeholders, and no other `$` in the generated code.
"""

from ichbench.plugins.templates.common import REGISTRATION_TEST


METHOD_README = '''\
# $dist

$what for ichbench, registered as `$registered`.

It starts as **rotation prediction** (Gidaris et al. 2018): every slice is rotated by 0, 90, 180
or 270 degrees and the U-Net encoder, through a small MLP on its pooled bottleneck, learns which.
The encoder is then handed to the segmentation U-Net. Replace the pretext with your idea:
`src/$module/method.py` declares it (no torch there, so `ichbench methods` stays fast) and
`src/$module/pretext.py` holds the torch code it imports when a pretraining starts. Keep
`label_needs` and `transfers` truthful, since the benchmark checks the first and the leaderboard
reports both.

```bash
pip install -e .                      # into the environment that has ichbench
pytest                                # the generated tests pass as they are
ichbench methods                      # lists $registered, from $dist
ichbench run --method $registered --dataset phantom --profile smoke
ichbench leaderboard submit --method $registered --dataset phantom
```

Profiles: `paper` (what you would publish) and `smoke` (tiny, for tests and CI); change them in
`$classname.profiles`. Settings in `params` can be overridden per run, e.g.
`--set pretrain.params.head_dims=512,128,4`; `${classname}Params` declares them with their
bounds, and a run (a dry run too) refuses a value past a bound, or an unknown key, in one line.
'''

METHOD_PY = '''\
"""$registered: rotation prediction (Gidaris et al. 2018) as an ichbench pretext.

Each slice is rotated by k x 90 degrees, k drawn uniformly from {0, 1, 2, 3}; the U-Net encoder,
a global average pool of its bottleneck and an MLP predict k under cross-entropy. Only the
encoder is transferred; the MLP is discarded.

This module imports no torch: `ichbench methods` imports every plugin to list it, so the torch
side lives in `pretext.py`, imported when a pretraining starts.
"""

from __future__ import annotations

from ichbench.api import LabelNeeds, MethodParams, PretextMethod, Widths


class ${classname}Params(MethodParams):
    """`pretrain.params`, checked when a run's config is resolved: a key not declared here, or a
    value past its bound, is refused before anything trains. Give every number you add a bound
    (`Field(ge=..., le=...)` from ichbench.api)."""
    head_dims: Widths   # 2 to 16 widths of 1 to 16384
    """the MLP on the pooled bottleneck, input first (512 at the paper's width), ending in 4 rotations"""


class $classname(PretextMethod):
    name = "$registered"
    description = "rotation prediction (0/90/180/270 degrees) from the pooled encoder; encoder transferred"
    paper_section = "Gidaris et al. 2018"
    label_needs = LabelNeeds(segmentation=True, unlabeled=True)   # images only, no labels
    transfers = ("encoder",)                                      # U-Net parts the pretraining hands over
    pretrain_params_model = ${classname}Params
    profiles = {
        # head widths as for the paper's 512-channel bottleneck; they scale with a narrower U-Net.
        # The last width is the number of classes (four rotations) and is never scaled.
        "paper": {"batch_size": 64, "params": {"head_dims": [512, 256, 4]}},
        "smoke": {"batch_size": 8, "params": {"head_dims": [512, 256, 4]}},
    }

    def build_pretext(self, unet, cfg):
        from $module.pretext import rotation_head
        return rotation_head(unet, self.params(cfg)["head_dims"])

    def pretext_loss(self, model, batch, cfg, generator):
        from $module.pretext import rotation_loss
        return rotation_loss(model, batch["images"], generator)
'''

PRETEXT_PY = '''\
"""The torch side of $registered: the head on the U-Net, the rotations and the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ichbench.api import PooledEncoderHead


def rotation_head(unet, head_dims) -> PooledEncoderHead:
    """U-Net encoder -> average pool of the bottleneck -> MLP with one output per rotation."""
    dims = [int(d) for d in head_dims]
    if dims[-1] != 4:
        raise ValueError(f"head_dims must end in 4 (one output per rotation), got {dims}")
    return PooledEncoderHead(unet, dims, classes=True)


def rotate_batch(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """images (B, C, S, S) each rotated by k[i] x 90 degrees, batched (no per-image loop)."""
    all_four = torch.stack([torch.rot90(images, r, dims=(2, 3)) for r in range(4)], dim=1)
    return all_four[torch.arange(len(images), device=images.device), k]


def rotation_loss(model, images: torch.Tensor, generator) -> torch.Tensor:
    """Cross-entropy of the predicted rotation; the rotations are drawn from `generator`."""
    where = generator.device if generator is not None else images.device
    k = torch.randint(0, 4, (len(images),), generator=generator, device=where).to(images.device)
    logits = model(rotate_batch(images, k))
    return F.cross_entropy(logits.float(), k)   # float32 under bf16 autocast
'''

METHOD_TEST = '''\
"""Generated with $dist: these pass as written; keep them passing as you change the method."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ichbench.api import (IchbenchError, PretrainConfig, UNet, example_batch, expand_parts, get_registry,
                          reset_registry, resolve)
from $module import $classname
from $module.pretext import rotate_batch


def test_declares_label_needs_and_valid_parts():
    m = $classname()
    assert m.name == "$registered" and m.has_pretext
    assert m.label_needs.unlabeled and not (m.label_needs.binary or m.label_needs.multilabel)
    assert expand_parts(UNet(base=8), m.transfers)          # raises on an unknown part name


def test_registering_imports_no_torch():
    """`ichbench methods` imports every plugin to list it: the torch side loads only to train."""
    code = "import sys, $module.plugin; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}   # what this test process imports from
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


def test_rotations():
    x = torch.arange(4.0).view(1, 1, 2, 2).repeat(2, 1, 1, 1)   # [[0, 1], [2, 3]]
    out = rotate_batch(x, torch.tensor([0, 1]))
    assert torch.equal(out[0], x[0])
    assert out[1, 0].tolist() == [[1.0, 3.0], [0.0, 2.0]]        # 90 degrees counter-clockwise


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_profiles_resolve(profile):
    cfg = resolve($classname(), "phantom", profile)
    assert cfg.pretrain.params["head_dims"][-1] == 4 and cfg.pretrain.batch_size >= 2


def test_a_param_past_its_bound_is_refused():
    with pytest.raises(IchbenchError, match="pretrain.params.head_dims.1 must be <= 16384"):
        resolve($classname(), "phantom", "smoke", ["pretrain.params.head_dims=512,100000,4"])


def test_loss_falls_on_phantom_slices():
    torch.manual_seed(0)
    m = $classname()
    cfg = PretrainConfig(image_size=64, **m.pretrain_overrides("smoke"))
    model = m.build_pretext(UNet(base=8), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = example_batch(8, size=64)
    losses = []
    for _ in range(15):
        loss = m.pretext_loss(model, batch, cfg, torch.Generator().manual_seed(0))  # fixed rotations
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


''' + REGISTRATION_TEST

METHOD_FILES = {
    "README.md": METHOD_README,
    "src/$module/method.py": METHOD_PY,
    "src/$module/pretext.py": PRETEXT_PY,
    "tests/test_$module.py": METHOD_TEST,
}
