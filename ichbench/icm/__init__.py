"""The intracranial cavity mask (ICM) of Spahr et al. 2023 §2.3.3: two U-Nets, one on a tissue
window and one on a bone window, trained on hand-labelled cavity masks; their masks united.

- `train_icm` learns both from a store's shipped brain masks (`ichbench icm train`),
- `IcmUNets` / `load_icm` apply a trained pair to HU slices,
- `CavitySource` gives a run the mask its `icm.source` asks for (unet, classical or shipped),
- `apply_icm` writes the learned masks into a store as the `icm` array (`ichbench icm apply`).
"""

from ichbench.icm.masker import ICM_NAME, IcmUNets, load_icm
from ichbench.icm.sources import CavitySource, check_shipped
from ichbench.icm.train import train_icm

__all__ = ["ICM_NAME", "CavitySource", "IcmUNets", "check_shipped", "load_icm", "train_icm"]
