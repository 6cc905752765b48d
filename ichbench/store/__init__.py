"""The slice store: one zarr v3 group per (dataset, role), written once, read by many.

Importing this package is cheap (no zarr): `store_path` is plain path arithmetic and the reader
and writer load zarr only when a store is opened, so commands that list things stay fast.
"""

from __future__ import annotations

from pathlib import Path


def store_path(home: Path, dataset: str, role: str) -> Path:
    from ichbench.names import inside
    return inside(home, "stores", dataset, f"{role}.zarr")


def open_store(path: Path):
    """The `SliceStore` at `path` (IchbenchError when there is none)."""
    from ichbench.store.reader import SliceStore
    return SliceStore(path)


def __getattr__(name: str):
    if name == "SliceStore":
        from ichbench.store.reader import SliceStore
        return SliceStore
    if name == "StoreWriter":
        from ichbench.store.writer import StoreWriter
        return StoreWriter
    raise AttributeError(f"module 'ichbench.store' has no attribute {name!r}")


__all__ = ["SliceStore", "StoreWriter", "open_store", "store_path"]
