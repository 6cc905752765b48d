"""ichbench-vicreg: VICReg (Bardes et al. 2021) as an ichbench pretext on the U-Net encoder."""

from ichbench_vicreg.method import VICReg

__version__ = "0.1.0"
__all__ = ["VICReg", "VICRegModel", "vicreg_loss", "vicreg_terms"]


def __getattr__(name: str):
    # the torch-side names load on first use: importing the package (as the plugin entry point
    # does) stays cheap
    if name == "VICRegModel":
        from ichbench_vicreg.model import VICRegModel
        return VICRegModel
    if name in ("vicreg_loss", "vicreg_terms"):
        from ichbench_vicreg import loss
        return getattr(loss, name)
    raise AttributeError(f"module 'ichbench_vicreg' has no attribute {name!r}")
