"""Where stores live: a local folder (`pathlib.Path`) or an object-store URL (`ObjectPath`).

The store root is `ICHBENCH_STORE_ROOT` (the CLI's `--store-root`), else `$ICHBENCH_HOME/stores`.
A local root (a folder, or `file:///folder`) gives plain `Path`s, so everything local behaves as it
always did. A URL root (`s3://bucket/prefix`) gives `ObjectPath`s: the few `Path` operations the
store code uses (`/`, `name`, `parent`, `exists`, `is_file`, `read_text`, `write_text`), done with
fsspec. Both round-trip through `str` and `parse`, which is how a location travels to Ray workers
and ingest processes: as the string the driver used, never through the worker's environment.

S3 endpoint and credentials come from the standard environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`; botocore reads them all).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ichbench.errors import IchbenchError

ENV = "ICHBENCH_STORE_ROOT"
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.IGNORECASE)   # schemes are case-insensitive (RFC 3986)
# The object stores tested end to end (tests/test_s3_store.py). fsspec knows many more, but an
# untested one failed late and badly (ftp: a TypeError and a traceback from a destructor; http:
# "no store yet"), so the rest are refused before any filesystem object is made.
SCHEMES = ("s3",)
SUPPORTED = "a folder, file:///FOLDER or s3://BUCKET/PREFIX"


@dataclass(frozen=True)
class ObjectPath:
    """A key prefix in an object store, e.g. `s3://bucket/prefix/phantom/segmentation.zarr`."""
    url: str

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def fs(self):
        import fsspec
        # no listing cache: another process (an ingest on another node) may have published since
        return fsspec.filesystem(self.protocol, use_listings_cache=False)

    def _call(self, method: str, *args, **kwargs):
        """`self.fs.<method>(*args)`; a missing object stays FileNotFoundError (callers expect it),
        anything else (an unreachable endpoint, refused credentials) is one line naming the URL."""
        try:
            return getattr(self.fs, method)(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and fsspec raise many types
            text = (str(exc).strip().splitlines() or [""])[0][:200]
            raise IchbenchError(f"{self.url}: the object store failed the request "
                                f"({type(exc).__name__}: {text})") from None

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, part: str) -> "ObjectPath":
        return ObjectPath(f"{self.url}/{part}")

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.url.rsplit("/", 1)[0])

    def resolve(self) -> "ObjectPath":
        return self

    def exists(self) -> bool:
        """True for an object, and for a prefix that holds any."""
        return self._call("exists", self.url)

    def is_file(self) -> bool:
        return self._call("isfile", self.url)

    def read_text(self) -> str:
        return self._call("cat_file", self.url).decode()

    def write_text(self, text: str) -> None:
        self._call("pipe_file", self.url, text.encode())   # one PUT: readers see all of it or nothing

    def children(self) -> list[str]:
        """Names directly under this prefix."""
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self._call("ls", self.url, detail=False)]
        except FileNotFoundError:
            return []

    def delete(self) -> None:
        try:
            self._call("rm", self.url, recursive=True)
        except FileNotFoundError:
            pass

    def copy_to(self, dst: "ObjectPath") -> None:
        """Every object under this prefix to `dst` (server-side copies where the store has them)."""
        self._call("copy", self.url + "/", dst.url + "/", recursive=True)


Location = Path | ObjectPath


def parse(text: str | Path | ObjectPath) -> Location:
    """A local path or a URL, checked once: a scheme other than `file` and `s3`, or a URL without
    a bucket, is one IchbenchError naming it."""
    if isinstance(text, (Path, ObjectPath)):
        return text
    m = _URL.match(str(text))
    if not m:
        return Path(text)
    protocol, rest = m.group(1).lower(), m.group(2)
    if protocol == "file":
        if not rest.startswith("/"):   # file://host/... names another machine's file
            raise IchbenchError(f"{text}: a file URL names an absolute folder on this machine (file:///FOLDER)")
        return Path(rest)
    if protocol not in SCHEMES:
        raise IchbenchError(f"{text}: store URLs of protocol {protocol!r} cannot be opened "
                            f"(a store root is {SUPPORTED})")
    rest = rest.strip("/")
    if not rest:
        raise IchbenchError(f"{text}: no bucket in the store URL (expected {protocol}://BUCKET/PREFIX)")
    import fsspec
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise IchbenchError(f"{text}: store URLs of protocol {protocol!r} cannot be opened: "
                            f"{str(exc).splitlines()[0]} (pip install 'ichbench[s3]')") from None
    return ObjectPath(f"{protocol}://{rest}")


def is_remote(loc: Location) -> bool:
    return isinstance(loc, ObjectPath)


def store_root(home: Path) -> Location:
    """`ICHBENCH_STORE_ROOT` when set (the CLI exports `--store-root` there), else `home/stores`."""
    explicit = os.environ.get(ENV)
    return parse(explicit) if explicit else Path(home) / "stores"


def zarr_store(loc: Location, mode: str):
    """What `zarr.open_group(..., mode=mode)` takes for the group at `loc`: a local path as it
    always was, an `FsspecStore` for a URL."""
    if isinstance(loc, ObjectPath):
        from zarr.storage import FsspecStore
        return FsspecStore.from_url(loc.url, read_only=mode == "r")
    return str(loc)
