"""One test per hook in mi_ideas.hookspecs (tests/test_docs.py checks every hook has one)."""

from __future__ import annotations

import json

import pytest

import mi_ideas
from mi_ideas import hookimpl


class RunLogger:
    """A plugin that logs every run, as a wandb or notification plugin would."""

    def __init__(self):
        self.events = []

    @hookimpl
    def mi_ideas_run_started(self, run):
        # at this point the run directory exists with its config and a running status
        status = json.loads((run.path / "provenance.json").read_text())["status"]
        self.events.append(("started", run.idea, status, (run.path / "config.json").is_file()))

    @hookimpl
    def mi_ideas_run_finished(self, run, result):
        self.events.append(("finished", run.idea, run.provenance.status, result is not None))


def test_hook_mi_ideas_register_ideas(register_plugin, mi_ideas_host):
    from tests.toy_plugin import Echo

    class P:
        @hookimpl
        def mi_ideas_register_ideas(self, register):
            register(Echo)

    info = register_plugin(P(), name="p")
    assert mi_ideas_host.get_idea("toy-echo") is Echo
    assert info.ideas == ["toy-echo"]


def test_hook_mi_ideas_run_started(toy_host, register_plugin, tmp_path):
    logger = RunLogger()
    register_plugin(logger, name="logger")
    mi_ideas.run("toy-echo", out=tmp_path, quiet=True)
    assert logger.events[0] == ("started", "toy-echo", "running", True)


def test_hook_mi_ideas_run_finished(toy_host, register_plugin, tmp_path):
    logger = RunLogger()
    register_plugin(logger, name="logger")
    mi_ideas.run("toy-echo", out=tmp_path, quiet=True)
    with pytest.raises(mi_ideas.RunError):
        mi_ideas.run("toy-fail", out=tmp_path, quiet=True)
    finished = [e for e in logger.events if e[0] == "finished"]
    assert finished == [("finished", "toy-echo", "complete", True),
                        ("finished", "toy-fail", "failed", False)]


def test_a_raising_finished_hook_does_not_change_the_run(toy_host, register_plugin, tmp_path, capsys):
    class Raiser:
        @hookimpl
        def mi_ideas_run_finished(self, run, result):
            raise RuntimeError("observer broke")

    register_plugin(Raiser(), name="raiser")
    result = mi_ideas.run("toy-echo", out=tmp_path, quiet=True)
    assert result.provenance.status == "complete"
    assert "observer broke" in capsys.readouterr().err


def test_hook_mi_ideas_register_backends(register_plugin, mi_ideas_host):
    from mi_ideas import load_subject
    from mi_ideas.subject import Subject

    class Fake(Subject):
        backend = "fake"

    seen = []

    class P:
        @hookimpl
        def mi_ideas_register_backends(self, register):
            def loader(rest, remote):
                seen.append((rest, remote))
                return Fake(spec=f"fake:{rest}", tokenizer=None, n_layers=2, d_model=4, d_vocab=8)
            register("fake", loader, "a fake back-end")

    register_plugin(P(), name="fake-backend")
    subject = load_subject("fake:tiny:v1", remote="local")
    assert isinstance(subject, Fake) and subject.spec == "fake:tiny:v1"
    assert seen == [("tiny:v1", "local")]
    assert mi_ideas_host.backends["fake"].plugin == "fake-backend"
    assert {"zoo", "hf", "tl", "tlsae"} <= set(mi_ideas_host.backends)


def test_hook_mi_ideas_register_datasets(register_plugin, mi_ideas_host):
    from mi_ideas import load_dataset
    from mi_ideas.data import Dataset

    class P:
        @hookimpl
        def mi_ideas_register_datasets(self, register):
            register("numbers", lambda rest, seed: Dataset(
                f"numbers:{rest}", [str(seed + i) for i in range(int(rest))]), "counting")

    register_plugin(P(), name="numbers")
    ds = load_dataset("numbers:3", seed=10)
    assert ds.texts == ["10", "11", "12"]
    assert mi_ideas_host.datasets["numbers"].description == "counting"


def test_hook_mi_ideas_register_dictionaries(register_plugin, mi_ideas_host, tmp_path):
    from sae_lens import SAE

    from mi_ideas import load_dictionary
    from mi_ideas.dictionaries import site_of

    zoo_sae = load_dictionary("zoo:stories-gpt2-resid2-topk")
    seen = []

    class P:
        @hookimpl
        def mi_ideas_register_dictionaries(self, register):
            def loader(rest):
                seen.append(rest)
                return zoo_sae
            register("lab", loader, "my lab's format")

    register_plugin(P(), name="lab-dicts")
    sae = load_dictionary("lab:some/where")
    assert sae is zoo_sae and isinstance(sae, SAE) and seen == ["some/where"]
    assert site_of(sae) == "resid_pre.2"
    assert mi_ideas_host.dictionary_formats["lab"].plugin == "lab-dicts"
    assert {"saelens", "zoo", "sparsify"} <= set(mi_ideas_host.dictionary_formats)


def test_a_plugin_backend_can_take_python_objects(register_plugin, mi_ideas_host):
    from mi_ideas import load_subject
    from mi_ideas.errors import UsageError
    from mi_ideas.subject import Subject

    class MyModel:
        pass

    class Fake(Subject):
        backend = "fake"

    class P:
        @hookimpl
        def mi_ideas_register_backends(self, register):
            register("mine", lambda rest, remote: None, "objects of my own model class",
                     accepts=lambda obj: isinstance(obj, MyModel),
                     from_object=lambda obj, remote: Fake(spec="mine:obj", tokenizer=None,
                                                          n_layers=1, d_model=2, d_vocab=3))

    register_plugin(P(), name="mine")
    assert load_subject(MyModel()).spec == "mine:obj"
    with pytest.raises(UsageError, match="cannot use a builtins.object as a model"):
        load_subject(object())


def test_accepts_without_from_object_is_refused(register_plugin, mi_ideas_host):
    class P:
        @hookimpl
        def mi_ideas_register_backends(self, register):
            register("half", lambda rest, remote: None, "half a registration",
                     accepts=lambda obj: True)

    mi_ideas_host.strict = False
    info = register_plugin(P(), name="half")
    assert "hf" in mi_ideas_host.backends and "half" not in mi_ideas_host.backends
    assert info.status == "failed" and "from_object" in info.error


def test_a_prefix_registered_twice_names_both_plugins(register_plugin, mi_ideas_host):
    from mi_ideas.errors import HostError

    class P:
        @hookimpl
        def mi_ideas_register_backends(self, register):
            register("hf", lambda rest, remote: None, "shadows the built-in")

    register_plugin(P(), name="shadow")
    with pytest.raises(HostError, match="'mi-ideas-builtins' and 'shadow'"):
        mi_ideas_host.backends


def test_a_plugin_whose_backend_hook_raises_is_isolated(register_plugin, mi_ideas_host):
    class Broken:
        @hookimpl
        def mi_ideas_register_backends(self, register):
            raise RuntimeError("no GPU driver")

    mi_ideas_host.strict = False
    info = register_plugin(Broken(), name="broken-backend")
    assert "hf" in mi_ideas_host.backends  # the others still work
    assert info.status == "failed" and "no GPU driver" in info.error


def test_hook_mi_ideas_register_judges(register_plugin, mi_ideas_host):
    """Judges are indexed by name with their kind and plugin; a malformed registration fails
    only its plugin, and a name registered twice names both plugins. (That an idea uses a
    registered judge instead of its built-in is tests/test_steering_vs_prompting.py.)"""
    from mi_ideas.errors import HostError

    def constant(samples, subject):
        return [0.5 for _ in samples]

    class P:
        @hookimpl
        def mi_ideas_register_judges(self, register):
            register("half", constant, "always 0.5", "concept")

    class Bad:
        @hookimpl
        def mi_ideas_register_judges(self, register):
            register("broken", "not callable", "a string is no judge", "concept")

    register_plugin(P(), name="judges-p")
    mi_ideas_host.strict = False
    bad = register_plugin(Bad(), name="judges-bad")
    judges = mi_ideas_host.judges
    assert judges["half"].judge is constant and judges["half"].kind == "concept"
    assert judges["half"].plugin == "judges-p" and "broken" not in judges
    assert bad.status == "failed" and "not callable" in bad.error

    class Twice:
        @hookimpl
        def mi_ideas_register_judges(self, register):
            register("half", constant, "again", "concept")

    register_plugin(Twice(), name="judges-twice")
    with pytest.raises(HostError, match="'judges-p' and 'judges-twice'"):
        mi_ideas_host.judges
