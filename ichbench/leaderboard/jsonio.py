"""Reading leaderboard files as plain data, with a size limit and a strict JSON parser.

Entries come from strangers: they are only ever parsed, never imported. The parser refuses the
things Python's `json` quietly accepts — NaN/Infinity (not JSON, and they make any comparison
pass or fail silently) and duplicate keys (a second "mean" would hide the first from a reviewer).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ichbench.errors import InputError
from ichbench.files import write_text_atomic

MAX_BYTES = 5 * 1024 * 1024


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path, max_bytes: int = MAX_BYTES, shown: str | None = None):
    """Parse one JSON file; any problem is an InputError naming the file in one line."""
    path = Path(path)
    shown = shown or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(shown, f"cannot read ({exc.strerror})") from None
    if size > max_bytes:
        raise InputError(shown, f"file is {size:,} bytes, over the {max_bytes:,}-byte limit for leaderboard files")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(shown, f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(shown, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise InputError(shown, f"malformed JSON: {exc}") from None


def dumps(obj) -> str:
    """Deterministic text: the same data always gives the same bytes (files are diffed in git)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Path, obj) -> Path:
    return write_text_atomic(path, dumps(obj))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
