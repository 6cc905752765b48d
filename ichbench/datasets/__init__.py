"""Dataset plugins: each turns a raw layout into the canonical slice store."""

from ichbench.datasets.base import Dataset, IngestOptions, IngestReport, Volume, get_dataset

__all__ = ["Dataset", "IngestOptions", "IngestReport", "Volume", "get_dataset"]
