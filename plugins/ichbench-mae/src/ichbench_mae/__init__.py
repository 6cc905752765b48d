"""ichbench-mae: masked image modelling (SimMIM-style) as an ichbench pretext for the whole U-Net."""

from ichbench_mae.method import MaskedImageModelling, patch_pixels

__version__ = "0.1.0"
__all__ = ["MaskedImageModelling", "MaskedModel", "masked_l1", "patch_pixels", "random_patch_mask"]


def __getattr__(name: str):
    # the torch-side names load on first use: importing the package (as the plugin entry point
    # does) stays cheap
    if name == "MaskedModel":
        from ichbench_mae.model import MaskedModel
        return MaskedModel
    if name in ("masked_l1", "random_patch_mask"):
        from ichbench_mae import masking
        return getattr(masking, name)
    raise AttributeError(f"module 'ichbench_mae' has no attribute {name!r}")
