"""A pytest plugin for plugin authors (and mi-ideas's own tests).

Installed with mi-ideas through the ``pytest11`` entry point, so these fixtures are
available in any test suite of a project that has mi-ideas installed:

- ``mi_ideas_host`` — a fresh :class:`~mi_ideas.host.Host` with the installed plugins,
  made the process-wide host for one test (so ``mi_ideas.run`` and the CLI use it).
- ``register_plugin(plugin, name=None)`` — register a plugin object (module, class or
  instance with ``@hookimpl`` functions) into that host for one test.
- ``run_idea(name, seed=0, **config_values)`` — run an idea quietly into a temporary
  runs directory and return its :class:`~mi_ideas.runs.RunRecord`.
- ``install_entrypoint_plugin(name, source)`` — write a module and a ``.dist-info`` with an
  ``mi_ideas`` entry point into a temporary directory on ``sys.path``, as if a package
  were pip-installed (for testing discovery, broken plugins and strict mode).

Example::

    def test_my_idea_runs(register_plugin, run_idea):
        register_plugin(my_plugin)
        record = run_idea("my-idea", n=3)
        assert record.provenance.status == "complete"
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mi_ideas.host import Host, PluginInfo, set_host


@pytest.fixture
def mi_ideas_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """A fresh host with every installed plugin, used process-wide for this test."""
    monkeypatch.delenv("MI_IDEAS_DISABLE_PLUGINS", raising=False)
    host = Host()
    previous = set_host(host)
    try:
        yield host
    finally:
        set_host(previous)


@pytest.fixture
def register_plugin(mi_ideas_host: Host) -> Callable[..., PluginInfo]:
    """``register_plugin(plugin, name=None)``: add a plugin object to the test's host."""

    def register(plugin: Any, name: str | None = None) -> PluginInfo:
        return mi_ideas_host.register_plugin(plugin, name=name)

    return register


@pytest.fixture
def run_idea(mi_ideas_host: Host, tmp_path: Path) -> Callable[..., Any]:
    """``run_idea(name, seed=0, **values)``: run an idea into ``tmp_path / "runs"``."""
    from mi_ideas.runs import execute

    def run(name: str, seed: int = 0, **values: Any) -> Any:
        return execute(name, config=values, seed=seed, out=tmp_path / "runs",
                       host=mi_ideas_host, quiet=True, command=[])

    return run


@pytest.fixture
def install_entrypoint_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], Path]]:
    """``install_entrypoint_plugin(name, source)``: fake a pip-installed plugin package.

    Writes ``source`` as module ``<name>`` (dashes become underscores) plus a
    ``<name>-0.0.1.dist-info`` declaring the entry point ``<name> = <module>`` in the group
    ``mi_ideas``, on a temporary ``sys.path`` entry removed after the test.
    """
    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(name: str, source: str) -> Path:
        module = name.replace("-", "_")
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        dist = site / f"{module}-0.0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n", encoding="utf-8"
        )
        (dist / "entry_points.txt").write_text(
            f"[mi_ideas]\n{name} = {module}\n", encoding="utf-8"
        )
        importlib.invalidate_caches()
        sys.modules.pop(module, None)
        return site

    yield install
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()
