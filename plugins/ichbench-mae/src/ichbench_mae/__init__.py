"""ichbench-mae: masked image modelling (SimMIM-style) as an ichbench pretext for the whole U-Net."""

from ichbench_mae.masking import masked_l1, random_patch_mask
from ichbench_mae.method import MaskedImageModelling, MaskedModel, patch_pixels

__version__ = "0.1.0"
__all__ = ["MaskedImageModelling", "MaskedModel", "masked_l1", "patch_pixels", "random_patch_mask"]
