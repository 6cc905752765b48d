"""The entry point ichbench loads (`[project.entry-points.ichbench] mae = ...`)."""

from ichbench.api import hookimpl, require_api

require_api(1)  # written against plugin API 1: a mismatch is reported by name, not a crash later

from ichbench_mae.method import METHODS  # noqa: E402


@hookimpl
def register_methods(register):
    for method in METHODS:
        register(method)
