"""Plugin system: pluggy hookspecs and the manager that loads built-in and external plugins."""

from ichbench.plugins.hookspecs import hookimpl, hookspec
from ichbench.plugins.manager import Registry, get_registry, reset_registry

__all__ = ["hookimpl", "hookspec", "Registry", "get_registry", "reset_registry"]
