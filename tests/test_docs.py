"""Keep the plugin surface honest (datasette's pattern): every hook documented and tested."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mi_ideas import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = hookspecs.hook_names()


def test_there_are_hooks():
    assert "mi_ideas_register_ideas" in HOOKS and len(HOOKS) >= 3


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert re.search(rf"^## `?{hook}\(", text, re.M), f"docs/hooks.md has no section for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    tree = ast.parse((ROOT / "tests" / "test_hooks.py").read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert f"test_hook_{hook}" in names


def test_readme_gives_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_every_package_folder_is_installed():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("mi_ideas", "mi_ideas"), ("plugins", "mi_ideas_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed
