"""ichbench-vicreg: VICReg (Bardes et al. 2021) as an ichbench pretext on the U-Net encoder."""

from ichbench_vicreg.loss import vicreg_loss, vicreg_terms
from ichbench_vicreg.method import VICReg, VICRegModel

__version__ = "0.1.0"
__all__ = ["VICReg", "VICRegModel", "vicreg_loss", "vicreg_terms"]
