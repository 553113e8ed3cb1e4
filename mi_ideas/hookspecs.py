"""The whole mi-ideas plugin API, in one file.

A plugin is any module or object with functions decorated by :data:`hookimpl` whose names
match the hooks below. Installed packages expose plugins through the entry-point group
``mi_ideas`` (the built-in ideas are registered the same way)::

    [project.entry-points.mi_ideas]
    my-idea = "my_package.plugin"

Every hook is documented in ``docs/hooks.md`` and tested in ``tests/test_hooks.py``;
``tests/test_docs.py`` fails when a hook here is missing from either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from mi_ideas.contract import Idea, IdeaResult
    from mi_ideas.runs import RunRecord

PROJECT = "mi_ideas"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mi_ideas_register_ideas(register: Callable[[type[Idea]], None]) -> None:
    """Register the ideas a plugin provides.

    Called once, when the host loads its plugins (the first time a command or
    :func:`mi_ideas.run` needs the list of ideas).

    :param register: call ``register(IdeaClass)`` once per idea. ``IdeaClass`` is a
        subclass of :class:`mi_ideas.contract.Idea` with ``name``, ``summary``, ``Config``
        and ``Result`` set. Registering a name another plugin already registered is an
        error that names both plugins.

    Keep the module that implements this hook cheap to import: ``mi-ideas list`` imports
    every plugin, and must not pull in torch, nnsight, transformers or sae_lens. Import
    heavy libraries inside ``Idea.run``.

    The return value is ignored.
    """


@hookspec
def mi_ideas_register_backends(register: Callable[..., None]) -> None:
    """Register model back-ends: how a ``--model`` spec with a given prefix becomes a subject.

    Called once, the first time a model spec is resolved.

    :param register: call ``register(prefix, loader, description, accepts=None,
        from_object=None)``. ``prefix`` is the part of a spec before the first ``:``
        (``"hf"`` in ``hf:gpt2``); ``loader(rest, remote)`` receives the rest of the spec and
        the remote setting (``None``, ``"local"``, ``"ndif"`` or a URL) and returns a
        :class:`mi_ideas.subject.Subject`. To also take Python model objects (``--model`` in
        Python: ``mi_ideas.run(..., model=my_model)``), pass ``accepts(obj) -> bool`` and
        ``from_object(obj, remote) -> Subject``; the first back-end whose ``accepts`` is
        true wraps the object. A prefix registered twice is an error naming both plugins.
        Built-in prefixes: ``zoo``, ``hf``, ``tl``, ``tlsae``.

    The return value is ignored.
    """


@hookspec
def mi_ideas_register_datasets(register: Callable[..., None]) -> None:
    """Register datasets: how a ``--data`` spec with a given prefix becomes a dataset.

    Called once, the first time a data spec is resolved.

    :param register: call ``register(prefix, loader, description)``. ``loader(rest, seed)``
        receives the rest of the spec (after ``prefix:``) and the run's seed and returns a
        :class:`mi_ideas.data.Dataset`. Built-in prefixes: ``zoo``, ``text``, ``hf``,
        ``template``. A prefix registered twice is an error naming both plugins.

    The return value is ignored.
    """


@hookspec
def mi_ideas_register_dictionaries(register: Callable[..., None]) -> None:
    """Register dictionary formats: how a ``--sae`` spec with a given prefix is loaded.

    Called once, the first time a dictionary spec is resolved.

    :param register: call ``register(prefix, loader, description)``. ``loader(rest)``
        receives the rest of the spec (after ``prefix:``) and returns the dictionary as a
        SAELens object (``SAE`` / ``Transcoder`` subclass) with ``cfg.d_in``, ``cfg.d_sae``
        and ``cfg.metadata.hook_name`` set, so every idea and SAELens itself can use it.
        Built-in prefixes: ``saelens``, ``zoo``, ``sparsify``; a spec with no registered
        prefix is read as a SAELens directory. A prefix registered twice is an error naming
        both plugins.

    The return value is ignored.
    """


@hookspec
def mi_ideas_register_judges(register: Callable[..., None]) -> None:
    """Register judges: named scorers of generated text that ideas can select by name.

    Called once, the first time an idea asks the host for its judges (steering-vs-prompting
    scores concept presence, fluency and relevance with them; ``--set
    judges.concept=NAME`` picks one).

    :param register: call ``register(name, judge, description, kind)``. ``kind`` says what
        the judge scores (steering-vs-prompting uses ``"concept"``, ``"fluency"`` and
        ``"relevance"``). ``judge(samples, subject)`` receives a list of samples (dicts
        with ``prompt``: the prompt the text continues, without any instruction line;
        ``shown_prompt``: the text the model was given; ``continuation``: the generated
        text; ``prompt_ids`` / ``continuation_ids``: their token ids; ``concept``: the
        concept word; ``concept_words``: the words that count as the concept) and the
        unsteered model (a :class:`mi_ideas.subject.Subject`), and returns one float per
        sample in [0, 1] (1 = best). Samples say nothing about how the text was made, so
        a judge is blind to the method. A name registered twice is an error naming both
        plugins; names of an idea's built-in judges are refused by that idea.

    Built-in judges need no network; a judge that calls an API is a plugin's choice.

    The return value is ignored.
    """


@hookspec
def mi_ideas_run_started(run: RunRecord) -> None:
    """Observe a run that is about to start.

    Called after the config is validated and the run directory is created, before the
    idea's ``run`` method is called.

    :param run: the run's :class:`mi_ideas.runs.RunRecord` (idea name, validated config,
        seed, run directory, provenance with ``status == "running"``).

    The return value is ignored. An exception raised here fails the run.
    """


@hookspec
def mi_ideas_run_finished(run: RunRecord, result: IdeaResult | None) -> None:
    """Observe a run that has ended, whatever the outcome.

    Called after the run directory has been finalised: ``run.provenance.status`` is
    ``"complete"``, ``"failed"`` (``run.provenance.error`` holds the error) or
    ``"interrupted"`` (Ctrl-C).

    :param run: the run's :class:`mi_ideas.runs.RunRecord`.
    :param result: the idea's result when the run completed, else ``None``.

    The return value is ignored. Exceptions raised here are reported as warnings and
    do not change the run's status (the run directory is already final).
    """


def hook_names() -> list[str]:
    """Names of every hook specified in this module."""
    return sorted(n for n, v in globals().items() if n.startswith("mi_ideas_") and callable(v))
