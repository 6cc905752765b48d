"""pydantic's ValidationError as the one line a user reads: `finetune.lr must be > 0, got 0.0`."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ichbench.errors import IchbenchError

M = TypeVar("M", bound=BaseModel)

BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
KEY_OF_BOUND = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def shown(text: str, quote: bool = True, limit: int = 100) -> str:
    """A value as an error message shows it: a 5,000-digit number is not echoed whole."""
    text = text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text):,} characters)"
    return repr(text) if quote else text


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def problem(error: dict, prefix: str = "") -> str:
    """One of pydantic's errors as a phrase about the setting at `prefix` + its location."""
    loc = ".".join(str(p) for p in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = "" if isinstance(value, (dict, list)) else f", got {shown(repr(value), quote=False)}"
    if kind == "value_error":
        # ours: a phrase after the setting's name, or (a check across settings) a sentence that
        # starts with the name of the setting it is about
        text = str(ctx.get("error", error["msg"]))
        return f"{prefix}{loc} {text}" if loc else f"{prefix}{text}"
    loc = prefix + loc
    if kind in BOUNDS:
        bound = ctx[KEY_OF_BOUND[kind]]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound   # > 0, not > 0.0
        return f"{loc} must be {BOUNDS[kind]} {bound}{got}"
    if kind == "finite_number":
        return f"{loc} must be a finite number"
    if kind == "literal_error":
        return f"{loc} must be one of {ctx['expected']}{got}"
    if kind == "missing":
        return f"{loc} is missing"
    if kind == "extra_forbidden":
        return f"{loc} is not a setting"
    return f"{loc}: {_lower(error['msg'])}{got}"


def one_line(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(problem(e, prefix) for e in exc.errors())


def parse_problem(exc: ValueError) -> str:
    """Why a `--set` value could not be read as its setting's type."""
    if not isinstance(exc, ValidationError):
        return shown(str(exc), quote=False)
    error = exc.errors()[0]
    where = f" (item {'.'.join(str(p) for p in error['loc'])})" if error["loc"] else ""
    if error["type"] == "finite_number":
        return f"expected a finite number, got {shown(str(error['input']))}{where}"
    return f"{_lower(error['msg'])}{where}"


def validated(cls: type[M], data: dict, prefix: str = "") -> M:
    """`cls` from a nested dict; IchbenchError in one line naming each bad setting (under
    `prefix`, e.g. "icm.")."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise IchbenchError(one_line(exc, prefix)) from None
