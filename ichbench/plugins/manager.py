"""Loads plugins and collects what they register.

Built-ins are the entry points that ichbench's own distribution declares; they always load.
External plugins are every other distribution's entry points in the `ichbench` group, filtered by
ICHBENCH_LOAD_PLUGINS (unset: all; empty: none; else a comma list of entry-point or distribution
names). A plugin that fails to import, whose hook raises, that implements a hook that does not
exist (or with other arguments than the hookspec's), that registers a name already taken (a
built-in's never can be) or one that breaks `ichbench.names.NAME_PATTERN` is
reported by name on stderr and skipped, so one broken package never takes the CLI down.
ICHBENCH_STRICT_PLUGINS=1 turns each of these into an error instead.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ichbench.errors import IchbenchError
from ichbench.names import name_problem
from ichbench.plugins import hookspecs

OWN_DIST = "ichbench"
# Used when ichbench runs from a source tree without installed metadata; must match pyproject.
BUILTIN_MODULES = {
    "phantom": "ichbench.datasets.phantom.plugin",
    "segcq500": "ichbench.datasets.segcq500",
    "hssayeni": "ichbench.datasets.hssayeni",
    "rsna": "ichbench.datasets.rsna",
    "cq500": "ichbench.datasets.cq500",
    "instance2022": "ichbench.datasets.instance2022",
    "bhsd": "ichbench.datasets.bhsd",
    "methods": "ichbench.methods.builtin",
}
HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("register_"))


class PluginError(IchbenchError):
    """A plugin problem, raised only under ICHBENCH_STRICT_PLUGINS=1."""


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "builtin": self.builtin, "hooks": self.hooks}


def _strict() -> bool:
    return os.environ.get("ICHBENCH_STRICT_PLUGINS", "") not in ("", "0", "false")


class Registry:
    """The plugin manager plus everything the plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.problems: list[str] = []
        self._items: dict[str, dict[str, Any]] = {"datasets": {}, "methods": {}}
        self._owner: dict[tuple[str, str], str] = {}
        self._collected = False

    # -- loading -------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        if _strict():
            raise PluginError(message)
        self.problems.append(message)
        print(f"ichbench: warning: {message}", file=sys.stderr)

    def add_plugin(self, plugin: Any, name: str, *, distribution: str | None = None,
                   version: str | None = None, builtin: bool = False) -> bool:
        """Register a module or object as a plugin. Returns False (after a warning) if rejected."""
        if name in self.plugins:
            self.warn(f"plugin {name!r} is already loaded; the second one was skipped")
            return False
        impls = [a for a in dir(plugin) if getattr(getattr(plugin, a, None), "ichbench_impl", None) is not None]
        unknown = [a for a in impls if a not in HOOK_NAMES]
        if unknown:
            hints = []
            for bad in unknown:
                close = difflib.get_close_matches(bad, HOOK_NAMES, n=1)
                hints.append(f"{bad!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self.warn(f"plugin {name!r} implements unknown hook {', '.join(hints)}; plugin skipped")
            return False
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # pluggy checks the arguments against the hookspec; a mismatch must not crash the CLI
            detail = "; ".join(self._signature_problems(plugin, impls)) or " ".join(str(exc).split())
            self.warn(f"plugin {name!r} {detail}; plugin skipped")
            return False
        except ValueError:
            # the same module object under a second entry-point name
            first = next((n for n, p in self.plugins.items() if self.pm.get_plugin(n) is plugin), "?")
            self.warn(f"plugin {name!r} is the same module as plugin {first!r}, already loaded; skipped")
            return False
        self.plugins[name] = PluginInfo(name, distribution, version, builtin, sorted(impls))
        self._collected = False
        return True

    def _signature_problems(self, plugin: Any, impls: list[str]) -> list[str]:
        out = []
        for attr in impls:
            want = list(getattr(self.pm.hook, attr).spec.argnames)
            try:
                got = list(inspect.signature(getattr(plugin, attr)).parameters)
            except (TypeError, ValueError):
                continue
            got = got[1:] if got[:1] == ["self"] else got   # a function looked up on a class
            if not set(got) <= set(want):
                out.append(f"implements {attr}({', '.join(got)}), but the hook is {attr}({', '.join(want)})")
        return out

    def load_entry_points(self) -> None:
        selected = os.environ.get("ICHBENCH_LOAD_PLUGINS")
        wanted = None if selected is None else {s.strip() for s in selected.split(",") if s.strip()}
        own_seen = set()
        for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else None
            ver = ep.dist.version if ep.dist is not None else None
            builtin = dist is not None and dist.lower() == OWN_DIST
            if builtin:
                own_seen.add(ep.name)
            elif wanted is not None and ep.name not in wanted and (dist or "") not in wanted:
                continue
            if ep.name in self.plugins:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure must be survivable
                self.warn(f"plugin {ep.name!r} ({dist}) failed to import: {type(exc).__name__}: {exc}; skipped")
                continue
            self.add_plugin(module, ep.name, distribution=dist, version=ver, builtin=builtin)
        # A source checkout without installed metadata still gets its built-ins.
        from ichbench import __version__
        for name, modname in BUILTIN_MODULES.items():
            if name not in own_seen and name not in self.plugins:
                self.add_plugin(importlib.import_module(modname), name, distribution=OWN_DIST,
                                version=__version__, builtin=True)

    # -- collecting ------------------------------------------------------------------------------
    def _collect(self) -> None:
        if self._collected:
            return
        for kind in self._items:
            self._items[kind].clear()
        self._owner.clear()
        # Built-ins first, so a third party can never shadow a built-in name.
        order = sorted(self.plugins.values(), key=lambda p: (not p.builtin, p.name))
        for info in order:
            plugin = self.pm.get_plugin(info.name)
            for kind in self._items:
                fn = getattr(plugin, f"register_{kind}", None)
                if fn is None or getattr(fn, "ichbench_impl", None) is None:
                    continue
                staged: list[Any] = []
                try:
                    fn(register=staged.append)
                except Exception as exc:  # noqa: BLE001
                    self.warn(f"plugin {info.name!r} raised in register_{kind}: {type(exc).__name__}: {exc}; skipped")
                    continue
                for item in staged:
                    self._register(kind, info, item)
        self._collected = True

    def _register(self, kind: str, info: PluginInfo, item: Any) -> None:
        """One registered item, unless its name is malformed or taken (a warning naming the
        plugin; the plugin's other items still load)."""
        item_name = getattr(item, "name", None)
        what = kind[:-1]
        if not item_name:
            self.warn(f"plugin {info.name!r} registered a {what} without a name; skipped")
            return
        problem = name_problem(item_name)
        if problem:
            # names become folders and arguments: `../../x` or `my méthod` must never get there
            self.warn(f"plugin {info.name!r} registers {what} {ascii(item_name)}: {problem}; "
                      "skipped")
            return
        if item_name in self._items[kind]:
            first = self.plugins[self._owner[(kind, item_name)]]
            if first.builtin and not info.builtin:
                self.warn(f"plugin {info.name!r} registers {what} {item_name!r}, the name of a "
                          f"built-in {what}; a plugin cannot take a built-in name, "
                          "kept the built-in")
            else:
                self.warn(f"plugin {info.name!r} registers {what} {item_name!r}, already "
                          f"registered by {first.name!r}; kept {first.name!r}'s")
            return
        self._items[kind][item_name] = item
        self._owner[(kind, item_name)] = info.name

    def datasets(self) -> dict[str, Any]:
        self._collect()
        return dict(self._items["datasets"])

    def methods(self) -> dict[str, Any]:
        self._collect()
        return dict(self._items["methods"])

    def owner(self, kind: str, name: str) -> PluginInfo:
        self._collect()
        return self.plugins[self._owner[(kind, name)]]


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None
