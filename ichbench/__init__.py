"""ichbench: a benchmark harness for label-efficient ICH segmentation in head CT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ichbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

LABEL_ORDER = ("no_ich", "any", "iph", "ivh", "sah", "sdh", "edh")
SUBTYPES = LABEL_ORDER[2:]
UNKNOWN_LABEL = 255   # a label not known for this slice (CQ500's volume-level reads, Seg-CQ500's subtypes)
