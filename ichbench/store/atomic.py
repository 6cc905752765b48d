"""Atomic publication of a store: readers see the previous complete store or the new complete
one, never a half-written one. One protocol, two implementations.

Local folders: write-then-rename. A store is built at `.NAME.tmp-PID` beside its final path.
Publishing renames any previous store to `.NAME.old`, renames the new one into place and deletes
the old one. A process killed at any point leaves either the previous store or the new one at the
final path, or — killed between the two renames — the previous one at `.NAME.old`, which
`recover` puts back.

Object stores (`ObjectPath`) have no rename, and copying a built store into place would rewrite
every shard while the previous one is being overwritten. So a remote store is versioned: each
build is a complete zarr group under its own prefix, `NAME/build-<id>/`, and the one-object
pointer `NAME/PUBLISHED` (the build's name) publishes it. A single PUT is atomic, so a reader
(`published`) follows the pointer to the previous build until the new one is complete, and a
killed ingest leaves the previous store untouched; builds the pointer does not name are deleted
after each publish. A build is complete only once the writer has recorded its fingerprint in the
group's metadata, so opening an unpublished build directly is refused by the reader. One writer
per store at a time: a publish deletes the other builds, a concurrent writer's included.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ichbench.parallel import alive
from ichbench.store.location import Location, ObjectPath

POINTER = "PUBLISHED"
BUILD_PREFIX = "build-"


def tmp_path(final: Location) -> Location:
    if isinstance(final, ObjectPath):
        return final / f"{BUILD_PREFIX}{uuid.uuid4().hex[:16]}"
    return final.parent / f".{final.name}.tmp-{os.getpid()}"


def published(final: Location) -> Location:
    """Where the group of the store at `final` lives: `final` itself, except for a remote store
    with a publication pointer, whose current build it names."""
    if not isinstance(final, ObjectPath):
        return final
    try:
        build = (final / POINTER).read_text().strip()
    except FileNotFoundError:
        return final   # a build opened directly, or nothing published yet
    return final / build


def store_of(loc: Location) -> Location:
    """The store a location belongs to: a remote build's store, else the location itself."""
    if isinstance(loc, ObjectPath) and loc.name.startswith(BUILD_PREFIX):
        return loc.parent
    return loc


def _old_path(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


def recover(final: Location) -> None:
    """Undo what a killed writer left: restore an interrupted swap, remove dead writers' temps.
    (A remote store needs neither: its pointer never names an incomplete build, and `publish`
    deletes the builds it does not name.)"""
    if isinstance(final, ObjectPath):
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    old = _old_path(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Location, final: Location) -> None:
    if isinstance(final, ObjectPath):
        (final / POINTER).write_text(tmp.name)
        for name in final.children():
            if name.startswith(BUILD_PREFIX) and name != tmp.name:
                (final / name).delete()
        return
    old = _old_path(final)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def discard(tmp: Location) -> None:
    if isinstance(tmp, ObjectPath):
        tmp.delete()
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    if src.endswith(".json"):
        shutil.copy2(src, dst)      # metadata is rewritten after cloning: never share it with the old store
    else:
        os.link(src, dst)


def clone(final: Location) -> Location:
    """A new unpublished copy of the store at `final`, to be changed and published: locally its
    shard files hard-linked (never rewritten, so sharing them is safe), remotely its objects copied
    by the server."""
    tmp = tmp_path(final)
    discard(tmp)
    if isinstance(final, ObjectPath):
        published(final).copy_to(tmp)
        return tmp
    try:
        shutil.copytree(final, tmp, copy_function=_link_or_copy)
    except OSError:                 # no hard links across devices: copy instead
        discard(tmp)
        shutil.copytree(final, tmp)
    return tmp
