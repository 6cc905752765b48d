"""Errors that the CLI turns into one-line messages instead of tracebacks."""

from __future__ import annotations

from pathlib import Path


class IchbenchError(Exception):
    """Base class: its str() is the whole message a user sees."""


class InputError(IchbenchError):
    """A source file is missing, unreadable or inconsistent. Names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class LayoutError(IchbenchError):
    """A dataset folder does not have the documented layout: says what was expected and found."""


class UnknownNameError(IchbenchError):
    """An unknown dataset, method or store name; lists the known ones."""

    def __init__(self, kind: str, name: str, known):
        known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")
