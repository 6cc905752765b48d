"""ichbench-nnunet: nnU-Net v2 as a reference method for ichbench (method `nnunet_2d`)."""

from ichbench_nnunet.method import NnUNet2D

__version__ = "0.1.0"
__all__ = ["NnUNet2D"]
