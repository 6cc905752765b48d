"""Writing a file so that readers see the old one or the new one, never half of it, and the one
canonical JSON digest every identity (config hash, split hash, cache keys) is computed with."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: Path, write: Callable[[BinaryIO], None], fsync: bool = True) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, fsync it, then rename it over `path`.
    A crash or an exception leaves the previous file (or none) and no temporary behind. Without the
    fsync (`fsync=False`, for files checked before they are used) a crash of the machine may leave
    `path` incomplete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        # mkstemp makes 0600 files; results and entries are shared data files
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def canonical_json(obj) -> bytes:
    """Sorted keys, no whitespace: equal data always gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_json(obj) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def write_json_atomic(obj, path: Path) -> Path:
    """`obj` as indented JSON, written as `write_atomic` writes."""
    return write_text_atomic(path, json.dumps(obj, indent=2))
