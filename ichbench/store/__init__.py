"""The slice store: one zarr v3 group per (dataset, role), written once, read by many.

Importing this package is cheap (no zarr): `store_path` is plain path arithmetic and the reader
and writer load zarr only when a store is opened, so commands that list things stay fast.
Stores live under the store root (`location.store_root`): `$ICHBENCH_HOME/stores` by default, or
an object-store URL.
"""

from __future__ import annotations

from pathlib import Path

from ichbench.store.location import Location, ObjectPath, parse, store_root


def store_path(home: Path, dataset: str, role: str) -> Location:
    from ichbench.names import inside
    root = store_root(home)
    if isinstance(root, ObjectPath):
        inside(Path("/"), dataset, f"{role}.zarr")   # the same one-plain-name check as a local root's
        return root / dataset / f"{role}.zarr"
    return inside(root, dataset, f"{role}.zarr")


def open_store(path: Location | str):
    """The `SliceStore` at `path` (a local path or a store URL; IchbenchError when there is none)."""
    from ichbench.store.reader import SliceStore
    return SliceStore(parse(path))


def store_exists(path: Location) -> bool:
    """Whether a complete store has been published at `path` (a local store's metadata, a
    remote store's publication pointer)."""
    from ichbench.store.atomic import published
    return (published(path) / "zarr.json").exists()


def __getattr__(name: str):
    if name == "SliceStore":
        from ichbench.store.reader import SliceStore
        return SliceStore
    if name == "StoreWriter":
        from ichbench.store.writer import StoreWriter
        return StoreWriter
    raise AttributeError(f"module 'ichbench.store' has no attribute {name!r}")


__all__ = ["SliceStore", "StoreWriter", "open_store", "store_exists", "store_path"]
