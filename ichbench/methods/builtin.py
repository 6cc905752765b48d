"""The built-in methods, registered through the same `register_methods` hook plugins use."""

from __future__ import annotations

from ichbench.methods import baselines
from ichbench.plugins import hookimpl

MODULES = (baselines,)


@hookimpl
def register_methods(register):
    for module in MODULES:
        for method in module.METHODS:
            register(method)
