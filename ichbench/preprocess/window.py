"""The paper's intensity window: HU in [-50, 150] mapped linearly to [0, 1]."""

from __future__ import annotations

WINDOW = (-50.0, 150.0)


def window(hu, low: float = WINDOW[0], high: float = WINDOW[1]):
    """Works on numpy arrays and torch tensors alike."""
    scaled = (hu - low) / (high - low)
    return scaled.clip(0.0, 1.0)
