"""Files every scaffolded plugin has: pyproject (with the entry point), package init, hook module.

`string.Template`s: `$name` placeholders, and no other `$` in the generated code.
"""

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$what for ichbench"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["ichbench>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is what makes the package an ichbench plugin.
[project.entry-points.ichbench]
$slug = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

PLUGIN_PY = '''\
"""The module ichbench loads through the `ichbench` entry point of this package."""

from ichbench.api import hookimpl, require_api

require_api(1)  # written against ichbench plugin API 1

from $module.$impl import $classname  # noqa: E402


@hookimpl
def $hook(register):
    register($classname())
'''

INIT_PY = '''\
"""$dist: $what for ichbench."""

from $module.$impl import $classname

__version__ = "0.1.0"
__all__ = ["$classname"]
'''

# The last test of every scaffolded plugin: installed, it is found through its entry point.
REGISTRATION_TEST = '''def test_installed_package_registers_the_$kind(monkeypatch):
    try:
        md.distribution("$dist")
    except md.PackageNotFoundError:
        pytest.skip("not installed: pip install -e .")
    monkeypatch.delenv("ICHBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()
    try:
        reg = get_registry()
        assert "$registered" in reg.${kind}s()
        assert reg.owner("${kind}s", "$registered").distribution == "$dist"
    finally:
        reset_registry()
'''

COMMON = {
    "pyproject.toml": PYPROJECT,
    "src/$module/__init__.py": INIT_PY,
    "src/$module/plugin.py": PLUGIN_PY,
}
