"""The slice store: one zarr v3 group per (dataset, role), written once, read by many."""

from ichbench.store.reader import SliceStore, open_store, store_path
from ichbench.store.writer import StoreWriter

__all__ = ["SliceStore", "StoreWriter", "open_store", "store_path"]
