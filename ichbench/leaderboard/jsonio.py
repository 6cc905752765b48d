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
MAX_DEPTH = 32   # an entry nests 5 levels; its config a few more
TOO_DEEP = f"nested deeper than the {MAX_DEPTH} levels a leaderboard file may have"


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
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(shown, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):   # Python's guard against huge integers
            raise InputError(shown, "malformed JSON: a number of over 4,300 digits") from None
        raise InputError(shown, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InputError(shown, TOO_DEEP) from None
    if _depth(data) > MAX_DEPTH:
        # parsed, but every recursive check after this (the schema, the identifier scan) would
        # have to guard itself: refuse it here, once
        raise InputError(shown, TOO_DEEP)
    return data


def _depth(obj) -> int:
    """How deeply lists and objects nest in parsed JSON (0 for a scalar); without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:   # deeper is refused anyway: no need to walk it
            stack.extend((c, level + 1) for c in children)
    return deepest


def dumps(obj) -> str:
    """Deterministic text: the same data always gives the same bytes (files are diffed in git)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Path, obj) -> Path:
    return write_text_atomic(path, dumps(obj))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
