"""Networks. The paper's 2D U-Net with named parts, so a pretext declares what it hands over."""

from ichbench.models.unet import UNet, part_names, transfer_parts

__all__ = ["UNet", "part_names", "transfer_parts"]
