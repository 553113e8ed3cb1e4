"""The plugin host: discovery through entry points, isolation, disabling, strictness."""

from __future__ import annotations

import pytest

from mi_ideas.errors import HostError, PluginLoadError, UnknownIdeaError
from mi_ideas.host import Host

GOOD = """
from pydantic import Field
from mi_ideas import Idea, IdeaConfig, IdeaResult, hookimpl

class C(IdeaConfig):
    k: int = Field(1, description="k")

class Good(Idea):
    name = "good-idea"
    summary = "A good idea."
    Config = C
    def run(self, ctx, config):
        return IdeaResult(metrics={"k": config.k})

@hookimpl
def mi_ideas_register_ideas(register):
    register(Good)
"""


def test_builtin_ideas_come_through_the_entry_point_group():
    host = Host()
    info = host.plugin_of("cis-toy-model")
    assert info is not None and info.status == "loaded"
    assert info.distribution == "mi-ideas"  # registered by the package's own entry point
    assert info.ideas == ["cis-toy-model"]


def test_third_party_entry_point_is_found(install_entrypoint_plugin):
    install_entrypoint_plugin("good-plugin", GOOD)
    host = Host(strict=True)
    assert host.get_idea("good-idea").summary == "A good idea."
    info = host.plugins["good-plugin"]
    assert (info.distribution, info.version, info.status) == ("good-plugin", "0.0.1", "loaded")


def test_plugin_that_fails_to_import_is_isolated(install_entrypoint_plugin, capsys):
    install_entrypoint_plugin("good-plugin", GOOD)
    install_entrypoint_plugin("broken-plugin", "import this_module_does_not_exist\n")
    host = Host(strict=False)
    info = host.plugins["broken-plugin"]
    assert info.status == "failed"
    assert "this_module_does_not_exist" in info.error
    assert "ModuleNotFoundError" in info.traceback
    # the rest still work
    assert "good-idea" in host.ideas and "cis-toy-model" in host.ideas
    assert "broken-plugin" in capsys.readouterr().err


def test_strict_mode_makes_a_broken_plugin_fatal(install_entrypoint_plugin, monkeypatch):
    install_entrypoint_plugin("broken-plugin", "raise RuntimeError('boom at import')\n")
    monkeypatch.setenv("MI_IDEAS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="broken-plugin.*boom at import"):
        Host()


def test_plugin_whose_register_hook_raises_is_isolated(install_entrypoint_plugin):
    install_entrypoint_plugin("raising-plugin", """
        from mi_ideas import hookimpl
        @hookimpl
        def mi_ideas_register_ideas(register):
            raise RuntimeError("cannot register")
    """)
    install_entrypoint_plugin("good-plugin", GOOD)
    host = Host(strict=False)
    assert "good-idea" in host.ideas
    assert host.plugins["raising-plugin"].status == "failed"
    assert "cannot register" in host.plugins["raising-plugin"].error


def test_misspelt_hook_fails_loudly(install_entrypoint_plugin):
    install_entrypoint_plugin("typo-plugin", """
        from mi_ideas import hookimpl
        @hookimpl
        def mi_ideas_register_idea(register):
            pass
    """)
    host = Host(strict=False)
    assert host.plugins["typo-plugin"].status == "failed"
    assert "did you mean 'mi_ideas_register_ideas'" in host.plugins["typo-plugin"].error
    with pytest.raises(PluginLoadError, match="mi_ideas_register_idea"):
        Host(strict=True)


def test_registering_a_non_idea_is_reported(register_plugin, mi_ideas_host):
    class Bad:
        @staticmethod
        @__import__("mi_ideas").hookimpl
        def mi_ideas_register_ideas(register):
            register(object)

    info = register_plugin(Bad(), name="bad")
    mi_ideas_host.strict = False
    assert "cis-toy-model" in mi_ideas_host.ideas
    assert info.status == "failed" and "not a subclass of mi_ideas.Idea" in info.error


def test_config_fields_must_be_described_and_defaulted(register_plugin, mi_ideas_host):
    from mi_ideas import Idea, IdeaConfig, hookimpl

    class Undocumented(IdeaConfig):
        k: int = 1

    class Lazy(Idea):
        name = "lazy"
        summary = "No descriptions."
        Config = Undocumented

    class P:
        @hookimpl
        def mi_ideas_register_ideas(self, register):
            register(Lazy)

    mi_ideas_host.strict = False
    info = register_plugin(P(), name="lazy-plugin")
    assert "lazy" not in mi_ideas_host.ideas
    assert "['k'] need a default and a description" in info.error


def test_two_ideas_with_one_name_name_both_plugins(install_entrypoint_plugin):
    install_entrypoint_plugin("first-plugin", GOOD)
    install_entrypoint_plugin("second-plugin", GOOD.replace("class Good", "class Good2").replace("register(Good)", "register(Good2)"))
    host = Host(strict=True)
    with pytest.raises(HostError) as err:
        host.ideas
    assert "'first-plugin'" in str(err.value) and "'second-plugin'" in str(err.value)
    assert "good-idea" in str(err.value)


def test_disable_by_environment_and_argument(install_entrypoint_plugin, monkeypatch):
    install_entrypoint_plugin("good-plugin", GOOD)
    monkeypatch.setenv("MI_IDEAS_DISABLE_PLUGINS", "good-plugin, other")
    host = Host()
    assert host.plugins["good-plugin"].status == "disabled"
    assert "good-idea" not in host.ideas
    monkeypatch.delenv("MI_IDEAS_DISABLE_PLUGINS")
    host = Host(disabled=["cis-toy-model"])
    assert host.plugins["cis-toy-model"].status == "disabled"
    assert set(host.ideas) >= {"good-idea"} and "cis-toy-model" not in host.ideas


def test_trace_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("MI_IDEAS_TRACE_PLUGINS", "1")
    Host().ideas
    err = capsys.readouterr().err
    assert "mi-ideas trace: mi_ideas_register_ideas(register) -> [cis-toy-model]" in err


def test_unknown_idea_suggests_close_names():
    with pytest.raises(UnknownIdeaError, match="Did you mean 'cis-toy-model'"):
        Host().get_idea("cis-toy")


def test_disabling_an_unknown_plugin_name_is_a_warning(monkeypatch, capsys):
    monkeypatch.setenv("MI_IDEAS_DISABLE_PLUGINS", "no-such-plugin")
    host = Host()
    err = capsys.readouterr().err
    assert "'no-such-plugin'" in err and "no installed plugin" in err and "plateaus" in err
    assert "cis-toy-model" in host.ideas  # nothing else changed
