"""The hooks a plugin may implement. Each takes a `register` callback (the simonw/llm style), so a
plugin can register any number of things and the signature never has to change."""

import pluggy

PROJECT = "ichbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets(register):
    """Call register(dataset) for each `ichbench.datasets.Dataset` this plugin provides."""


@hookspec
def register_methods(register):
    """Call register(method) for each training method this plugin provides."""
